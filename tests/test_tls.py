"""The server over TLS: real handshakes on loopback, with certificates made by openssl."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import (
    ROOT,
    Cert,
    LineClient,
    RunningServer,
    free_port,
    make_cert,
    tls_client_context,
)

from chatroom import certs, handlers, login
from chatroom.transport import TLSStream, fingerprint, is_loopback

ALL_CAPS = " ".join(handlers.offered_caps(history=True))
ALL_CAPS_302 = " ".join(handlers.offered_caps(history=True, values=True))

Factory = Callable[..., RunningServer]


@pytest.fixture
def tls_srv(make_server: Factory, tls_cert: Cert) -> RunningServer:
    return make_server(tls_port=0, tls_cert=str(tls_cert.cert), tls_key=str(tls_cert.key))


def peer_fingerprint(c: LineClient) -> str:
    assert isinstance(c.sock, ssl.SSLSocket)
    der = c.sock.getpeercert(binary_form=True)
    assert der is not None
    return fingerprint(der)


def test_tls_and_plaintext_clients_share_a_room(tls_srv: RunningServer, tls_cert: Cert) -> None:
    ctx = tls_client_context(tls_cert)
    alice = tls_srv.client(tls=ctx)
    welcome = alice.register("alice")
    assert not any("not encrypted" in line for line in welcome)
    alice.join("#mix")
    bob = tls_srv.client()
    bob.register("bob")  # through the MOTD; the notice comes last
    port = tls_srv.tls_address[1] if tls_srv.tls_address else 0
    assert bob.recv_line() == (f":chat.test NOTICE bob :This connection is not encrypted. Connect "
                           f"with TLS to port {port} to keep your messages private.")
    bob.join("#mix")
    alice.expect("JOIN #mix")
    alice.send("PRIVMSG #mix :over TLS \N{LOCK}")
    assert bob.expect("PRIVMSG")[-1] == ":alice!~u@127.0.0.1 PRIVMSG #mix :over TLS \N{LOCK}"
    bob.send("PRIVMSG #mix :in clear")
    assert alice.expect("PRIVMSG")[-1] == ":bob!~u@127.0.0.1 PRIVMSG #mix :in clear"
    assert peer_fingerprint(alice) == tls_cert.fingerprint
    assert alice.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[attr-defined]


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_old_protocol_versions_are_refused(tls_srv: RunningServer, tls_cert: Cert) -> None:
    assert tls_srv.tls_address is not None
    old = tls_client_context(tls_cert)
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client even try
    with pytest.raises(ssl.SSLError):
        LineClient(tls_srv.tls_address, tls=old)
    ok = tls_client_context(tls_cert)
    ok.maximum_version = ssl.TLSVersion.TLSv1_2
    c = LineClient(tls_srv.tls_address, tls=ok)
    assert c.sock.version() == "TLSv1.2"  # type: ignore[attr-defined]
    c.register("twelve")
    c.close()
    assert tls_srv.wait_for(lambda: not tls_srv.server.reg.clients)


def test_silent_peers_delay_no_one(make_server: Factory, tls_cert: Cert) -> None:
    """Twenty TCP connections that never say hello: others get in at once all the same."""
    srv = make_server(tls_port=0, tls_cert=str(tls_cert.cert), tls_key=str(tls_cert.key),
                      tls_handshake_timeout=30.0)
    assert srv.tls_address is not None
    silent = [socket.create_connection(srv.tls_address) for _ in range(20)]
    try:
        assert srv.wait_for(lambda: len(srv.server.reg.clients) == 20)
        started = time.monotonic()
        t = srv.client("fast", "#r", tls=tls_client_context(tls_cert))
        p = srv.client("plain", "#r")
        t.expect("JOIN #r")
        p.send("PRIVMSG #r :hi")
        t.expect("PRIVMSG #r :hi")
        assert time.monotonic() - started < 2.0
    finally:
        for s in silent:
            s.close()
    assert srv.wait_for(lambda: len(srv.server.reg.clients) == 2)


def test_handshake_timeout_closes_a_silent_peer(make_server: Factory, tls_cert: Cert) -> None:
    srv = make_server(tls_port=0, tls_cert=str(tls_cert.cert), tls_key=str(tls_cert.key),
                      tls_handshake_timeout=0.5)
    assert srv.tls_address is not None
    s = socket.create_connection(srv.tls_address, timeout=5)
    started = time.monotonic()
    assert s.recv(100) == b""  # closed by the server, without a word (no session to say it in)
    assert 0.4 < time.monotonic() - started < 3.0
    s.close()
    assert srv.wait_for(lambda: not srv.server.reg.clients)


def test_plaintext_to_the_tls_port_is_closed(tls_srv: RunningServer) -> None:
    assert tls_srv.tls_address is not None
    s = socket.create_connection(tls_srv.tls_address, timeout=5)
    s.sendall(b"NICK plain\r\nUSER u 0 * :x\r\n")
    data = s.recv(4096)
    assert b"001" not in data and b"plain" not in data  # at most a TLS alert, then EOF
    while data:
        data = s.recv(4096)
    s.close()
    assert tls_srv.wait_for(lambda: not tls_srv.server.reg.clients)
    c = tls_srv.client("after")  # the server goes on
    c.send("PING :x")
    c.expect("PONG")


def test_a_tls_client_that_stops_reading_is_cut_and_no_one_else_waits(
        make_server: Factory, tls_cert: Cert) -> None:
    srv = make_server(tls_port=0, tls_cert=str(tls_cert.cert), tls_key=str(tls_cert.key),
                      sendq=64 * 1024, flood_control=False)
    ctx = tls_client_context(tls_cert)
    stuck = srv.client(tls=ctx)
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.register("stuck")
    stuck.join("#busy")
    talker = srv.client("talker", "#busy", tls=ctx)
    listener = srv.client("listener", "#busy", tls=ctx)
    talker.expect("JOIN #busy")
    got: list[int] = []
    quits: list[str] = []

    def listen() -> None:
        while len(got) < 2000 or not quits:
            line = listener.recv_line(timeout=20)
            if " PRIVMSG " in line:
                got.append(int(line.split(" :", 1)[1].split(" ")[0]))
            elif " QUIT " in line:
                quits.append(line)

    reader = threading.Thread(target=listen)
    reader.start()
    text = "x" * 400
    for k in range(2000):
        talker.send(f"PRIVMSG #busy :{k} {text}")
        if k % 100 == 99:  # a round trip now and then, so the talker keeps up too
            talker.send("PING :sync")
            talker.expect("PONG")
    reader.join(timeout=30)
    assert got == list(range(2000))  # every message, in order, over TLS
    assert quits == [":stuck!~u@127.0.0.1 QUIT :SendQ exceeded"]
    assert srv.wait_for(lambda: "stuck" not in srv.server.reg.nicks)


def test_shutdown_is_prompt_with_a_handshake_in_progress(make_server: Factory,
                                                         tls_cert: Cert) -> None:
    srv = make_server(tls_port=0, tls_cert=str(tls_cert.cert), tls_key=str(tls_cert.key),
                      tls_handshake_timeout=60.0)
    assert srv.tls_address is not None
    s = socket.create_connection(srv.tls_address)
    talker = srv.client("talker", "#r", tls=tls_client_context(tls_cert))
    assert srv.wait_for(lambda: len(srv.server.reg.clients) == 2)
    started = time.monotonic()
    srv.server.shutdown()
    srv.thread.join(timeout=10)
    assert time.monotonic() - started < 3.0
    assert talker.expect("ERROR")[-1].endswith("(Server shutting down)")
    assert s.recv(100) == b""  # the one mid-handshake is closed too
    s.close()


def test_sts_is_offered_only_when_asked_for(make_server: Factory, tls_cert: Cert) -> None:
    files = {"tls_port": 0, "tls_cert": str(tls_cert.cert), "tls_key": str(tls_cert.key)}
    plain_only = make_server(**files)
    c = plain_only.client()
    c.send("CAP LS 302")
    assert "sts" not in c.expect("CAP")[-1]
    srv = make_server(sts_duration=86400, **files)
    assert srv.tls_address is not None
    port = srv.tls_address[1]
    c = srv.client()
    c.send("CAP LS 302")
    assert c.expect("CAP")[-1] == (
        f":chat.test CAP * LS :{ALL_CAPS_302} sts=port={port}")
    c.send("CAP REQ :sts")
    assert c.expect("CAP")[-1] == ":chat.test CAP * NAK sts"
    old = srv.client()
    old.send("CAP LS")  # no values before 302, so no sts
    assert old.expect("CAP")[-1] == f":chat.test CAP * LS :{ALL_CAPS}"
    t = srv.client(tls=tls_client_context(tls_cert))
    t.send("CAP LS 302")
    assert t.expect("CAP")[-1].endswith(" sts=duration=86400")


def test_passwords_over_tls_and_never_in_clear_from_afar(
        make_server: Factory, tls_cert: Cert, monkeypatch: pytest.MonkeyPatch) -> None:
    srv = make_server(tls_port=0, tls_cert=str(tls_cert.cert), tls_key=str(tls_cert.key),
                      password="s3cret")
    t = srv.client(tls=tls_client_context(tls_cert))
    t.send("PASS s3cret")
    assert t.register("secure")[0].startswith(":chat.test 001 secure ")
    local = srv.client()
    local.send("PASS s3cret")  # plaintext, but from this machine: allowed
    assert local.register("local")[0].startswith(":chat.test 001 local ")
    # From another machine (the tests can only dial loopback, so the address check is
    # told this one is remote), a plaintext PASS is refused before it is even kept.
    monkeypatch.setattr(login, "is_loopback", lambda host: False)
    far = srv.client()
    far.send("PASS s3cret")
    assert srv.tls_address is not None
    assert far.recv_line() == (
        f":chat.test FAIL PASS INSECURE_CONNECTION :Passwords are only accepted over TLS: "
        f"connect to port {srv.tls_address[1]}")
    far.send("NICK far")
    far.send("USER u 0 * :x")
    assert far.expect("464")[-1] == ":chat.test 464 far :Password incorrect"


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.8.9.10") and is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("192.168.1.5") and not is_loopback("::ffff:10.0.0.1")
    assert not is_loopback("example.org")


def test_expiring_certificate_is_warned_about(make_server: Factory, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    soon = make_cert(tmp_path, "soon", days=5)
    caplog.set_level(logging.INFO, logger="chatroom")
    make_server(tls_port=0, tls_cert=str(soon.cert), tls_key=str(soon.key))
    text = caplog.text
    assert f"SHA-256 fingerprint {soon.fingerprint}" in text
    assert "CN=localhost" in text
    assert "expires in 4 days" in text


# --- the server as an operator runs it: files, SIGHUP, self-signed -------------------------


class Proc:
    def __init__(self, args: list[str], tmp: Path, env: dict[str, str] | None = None) -> None:
        self.log = tmp / "server.log"
        self.port, self.tls_port = free_port(), free_port()
        self.out = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "server.py"), "--port", str(self.port),
             "--tls-port", str(self.tls_port), "--name", "chat.test", *args],
            stdout=self.out, stderr=subprocess.STDOUT, cwd=tmp, env=env)

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            content = self.log.read_text(errors="replace")
            if text in content:
                return content
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the log:\n{self.log.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=10)
        self.out.close()
        return code


@pytest.fixture
def run_server(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    procs: list[Proc] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Proc:
        p = Proc(list(args), tmp_path, env)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


def tls_line_client(port: int, trust: Path) -> LineClient:
    return LineClient(("127.0.0.1", port), tls=ssl.create_default_context(cafile=str(trust)))


def test_sighup_reloads_the_certificate_and_refuses_a_broken_one(
        run_server: Callable[..., Proc], tmp_path: Path) -> None:
    old, new = make_cert(tmp_path / "a", "old"), make_cert(tmp_path / "b", "new")
    live = tmp_path / "live"
    live.mkdir()
    cert, key = live / "cert.pem", live / "key.pem"
    shutil.copy(old.cert, cert)
    shutil.copy(old.key, key)
    p = run_server("--tls-cert", str(cert), "--tls-key", str(key))
    p.wait_log(f"fingerprint {old.fingerprint}")
    p.wait_log("(TLS)")
    before = tls_line_client(p.tls_port, old.cert)
    before.register("early")
    assert peer_fingerprint(before) == old.fingerprint
    # A renewal: new files in place, then SIGHUP.
    shutil.copy(new.cert, cert)
    shutil.copy(new.key, key)
    p.proc.send_signal(signal.SIGHUP)
    p.wait_log("reloaded certificate CN=localhost, expires")
    p.wait_log(f"fingerprint {new.fingerprint}")
    after = tls_line_client(p.tls_port, new.cert)
    after.register("late")
    assert peer_fingerprint(after) == new.fingerprint
    before.send("PING :still-here")  # nobody was dropped
    before.expect("PONG chat.test still-here")
    # A broken pair (a key that does not match) is refused; the running one stays.
    shutil.copy(old.key, key)
    p.proc.send_signal(signal.SIGHUP)
    p.wait_log("TLS reload refused, keeping the certificate in use")
    again = tls_line_client(p.tls_port, new.cert)
    again.register("again")
    assert peer_fingerprint(again) == new.fingerprint
    assert "PRIVATE KEY" not in p.log.read_text()
    assert p.stop() == 0


def test_self_signed_certificate_is_made_once_and_reused(
        run_server: Callable[..., Proc], tmp_path: Path) -> None:
    data = tmp_path / "data"
    p = run_server("--tls-self-signed", "--data-dir", str(data))
    log_text = p.wait_log("SHA-256 fingerprint")
    made = sorted((data / "tls").iterdir())
    assert [f.name for f in made] == ["self-signed.crt", "self-signed.key"]
    assert (data / "tls" / "self-signed.key").stat().st_mode & 0o077 == 0
    p.wait_log("(TLS)")
    c = tls_line_client(p.tls_port, data / "tls" / "self-signed.crt")
    c.register("lan")
    first = peer_fingerprint(c)
    assert f"fingerprint {first}" in log_text
    c.close()
    assert p.stop() == 0
    again = run_server("--tls-self-signed", "--data-dir", str(data))
    again.wait_log("(TLS)")
    assert f"fingerprint {first}" in again.log.read_text()
    assert "made a self-signed certificate" not in again.log.read_text()


def test_self_signed_without_openssl_says_what_to_install(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--tls-self-signed", "--data-dir",
         str(tmp_path / "d"), "--port", str(free_port()), "--tls-port", str(free_port())],
        capture_output=True, text=True, timeout=30,
        env={**os.environ, "PATH": str(tmp_path / "empty")}, check=False)
    assert r.returncode == 1
    assert "needs the openssl command" in r.stderr
    assert "apt install openssl" in r.stderr


def test_unusable_certificate_stops_the_start_with_a_reason(tmp_path: Path,
                                                            tls_cert: Cert) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    for cert, key, words in [(junk, tls_cert.key, "not a usable certificate and key"),
                             (tmp_path / "missing.pem", tls_cert.key, "no such file")]:
        r = subprocess.run(
            [sys.executable, str(ROOT / "server.py"), "--tls-cert", str(cert), "--tls-key",
             str(key), "--port", str(free_port()), "--tls-port", str(free_port())],
            capture_output=True, text=True, timeout=30, check=False, cwd=tmp_path)
        assert r.returncode == 1, r.stderr
        assert "cannot start TLS" in r.stderr and words in r.stderr


def test_tls_only_with_port_zero(tls_cert: Cert, tmp_path: Path) -> None:
    only = subprocess.Popen(
        [sys.executable, str(ROOT / "server.py"), "--port", "0", "--tls-port",
         str(tls_port := free_port()), "--tls-cert", str(tls_cert.cert), "--tls-key",
         str(tls_cert.key)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        cwd=tmp_path)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                c = tls_line_client(tls_port, tls_cert.cert)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        c.register("tlsonly")
        c.close()
    finally:
        only.send_signal(signal.SIGTERM)
        _, err = only.communicate(timeout=10)
    assert "(plaintext)" not in err and "(TLS)" in err
    r = subprocess.run([sys.executable, str(ROOT / "server.py"), "--port", "0"],
                       capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 2 and "turns the plaintext port off" in r.stderr


def test_lines_sent_with_the_last_handshake_flight_are_answered(tls_srv: RunningServer,
                                                               tls_cert: Cert) -> None:
    """GnuTLS clients (WeeChat) send their first lines in the packet that ends the
    handshake; the server must read them from its TLS buffer, not wait for more."""
    assert tls_srv.tls_address is not None
    stream = TLSStream(tls_client_context(tls_cert), server_side=False,
                       server_hostname="localhost")
    sock = socket.create_connection(tls_srv.tls_address, timeout=5)
    data = b""
    while True:
        done, out = stream.handshake_step(data)
        if done:  # our Finished, and the first lines right behind it, in one send
            sock.sendall(out + stream.encrypt(b"NICK eager\r\nUSER u 0 * :x\r\n"))
            break
        sock.sendall(out)
        data = sock.recv(16384)
    got = b""
    deadline = time.monotonic() + 5
    while b" 001 " not in got:
        assert time.monotonic() < deadline, got
        got += stream.feed(sock.recv(16384))
    assert b":chat.test 001 eager :Welcome" in got
    sock.close()


def test_a_storm_of_signals_neither_hangs_nor_kills_the_server(
        run_server: Callable[..., Proc], tls_cert: Cert) -> None:
    """A handler runs inside whatever the main thread was doing, even inside itself: it
    must take no lock (a reload or a stop is done by the accepting loop instead)."""
    p = run_server("--tls-cert", str(tls_cert.cert), "--tls-key", str(tls_cert.key))
    p.wait_log("(TLS)")
    for _ in range(2000):
        os.kill(p.proc.pid, signal.SIGHUP)
    c = LineClient(("127.0.0.1", p.port))
    c.register("after-storm")
    t = tls_line_client(p.tls_port, tls_cert.cert)
    t.register("tls-after-storm")
    started = time.monotonic()
    for _ in range(200):
        try:
            os.kill(p.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            break
    assert p.proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    assert c.expect("ERROR")[-1].endswith("(Server shutting down)")


def test_an_encrypted_key_is_refused_in_words_not_by_a_prompt(tmp_path: Path,
                                                              tls_cert: Cert) -> None:
    """OpenSSL would ask for the passphrase on the terminal, blocking the accepting thread
    (at start, or at a SIGHUP): the server refuses the key instead."""
    locked = tmp_path / "locked.key"
    subprocess.run(["openssl", "pkey", "-in", str(tls_cert.key), "-aes256", "-passout",
                    "pass:secret", "-out", str(locked)], check=True, capture_output=True,
                   timeout=30)
    with pytest.raises(certs.CertificateError, match="encrypted with a passphrase"):
        certs.load_context(str(tls_cert.cert), str(locked))
