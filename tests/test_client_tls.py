"""The client's TLS: certificate checking, trust on first use, pins; real sockets, real TLS.

The TLS peer is conftest's FakeServer with a server-side context (a certificate made with
the openssl command), or the real server with its TLS listener.  No mocks: a refused
certificate is refused by OpenSSL, and the pins are a real file in a temporary directory.
"""

from __future__ import annotations

import json
import os
import ssl
import stat
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import (
    Cert,
    FakePeer,
    FakeServer,
    RunningServer,
    make_cert,
    server_context,
)
from test_client_session import FAST, Watcher

from chatroom import events as EV
from chatroom import pins as PN
from chatroom import session as S

Connect = Callable[..., tuple[S.ChatSession, Watcher]]


@pytest.fixture
def tls_fake(tls_cert: Cert) -> Iterator[FakeServer]:
    f = FakeServer(tls=server_context(tls_cert))
    yield f
    f.close()


@pytest.fixture
def store(tmp_path: Path) -> PN.PinStore:
    return PN.PinStore(tmp_path / "config" / "chatroom" / "pins.json")


@pytest.fixture
def start() -> Iterator[Connect]:
    """A TLS session to ``address`` (started, not waited for); closed after the test."""
    made: list[S.ChatSession] = []

    def factory(address: tuple[str, int], nick: str = "alice",
                **kw: object) -> tuple[S.ChatSession, Watcher]:
        kw.setdefault("backoff", FAST)
        kw.setdefault("tls", True)
        kw.setdefault("connect_timeout", 3.0)
        s = S.ChatSession(address[0], address[1], nick, **kw)  # type: ignore[arg-type]
        made.append(s)
        s.start()
        return s, Watcher(s)

    yield factory
    for s in made:
        s.close(timeout=2.0)
    for s in made:
        assert not s.alive, "session threads still running after close()"


def welcome_and_join(fake: FakeServer, nick: str = "alice") -> FakePeer:
    peer = fake.peer()
    peer.welcome(nick)
    peer.join(nick)
    return peer


# --- the pin store ----------------------------------------------------------------------


FP1 = ":".join(["AB"] * 32)
FP2 = ":".join(["01"] * 32)


def test_pin_file_is_private_atomic_and_survives_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "chatroom" / "pins.json"
    store = PN.PinStore(path)
    assert store.get("chat.example", 6697) is None
    store.set("Chat.Example.", 6697, FP1.lower())
    store.set("::1", 6697, FP2.replace(":", ""))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert sorted(os.listdir(path.parent)) == ["pins.json"]  # no temporary file left over
    again = PN.PinStore(path)
    assert again.get("chat.example", 6697) == FP1  # the host as filed: lower case
    assert again.get("chat.example", 6698) is None  # per port
    assert again.all() == {"chat.example:6697": FP1, "[::1]:6697": FP2}
    data = json.loads(path.read_text())
    assert data["pins"]["chat.example:6697"]["sha256"] == FP1
    assert again.remove("chat.example", 6697) and not again.remove("chat.example", 6697)
    assert PN.PinStore(path).get("chat.example", 6697) is None
    with pytest.raises(ValueError):
        again.set("h", 1, "AB:CD")  # not a SHA-256 fingerprint: never stored


def test_pin_store_lives_in_the_users_config_dir(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert PN.PinStore().path == tmp_path / "xdg" / "chatroom" / "pins.json"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/is/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert PN.PinStore().path == tmp_path / "home" / ".config" / "chatroom" / "pins.json"


def test_a_damaged_pin_file_fails_closed_and_is_never_overwritten(tmp_path: Path) -> None:
    """A hand-edit slip must not turn "changed" into "first use", nor lose other pins."""
    path = tmp_path / "pins.json"
    store = PN.PinStore(path)
    store.set("h", 1, FP1)
    store.set("other", 2, FP2)
    damaged = path.read_text().replace("}", "},", 1)  # a stray comma
    path.write_text(damaged)
    with pytest.raises(PN.PinFileError, match="damaged"):
        store.get("h", 1)
    with pytest.raises(PN.PinFileError):
        store.set("h", 1, FP2)
    assert path.read_text() == damaged
    path.write_text('{"version": 1, "pins": {"h:1": {"sha256": "AB"}}}')
    with pytest.raises(PN.PinFileError, match="not a SHA-256"):
        store.get("h", 1)


# --- sessions ---------------------------------------------------------------------------


def test_tls_chat_verified_by_a_given_ca_needs_no_pin(tls_fake: FakeServer, tls_cert: Cert,
                                                      store: PN.PinStore,
                                                      start: Connect) -> None:
    s, w = start(tls_fake.address, cafile=str(tls_cert.cert), pins=store)
    peer = tls_fake.peer()
    assert peer.stream is not None
    peer.welcome()
    reg = w.wait(EV.Registered)
    assert reg.tls in ("TLSv1.2", "TLSv1.3")
    peer.join()
    w.wait(EV.Joined)
    assert s.send_message("über den Wolken 🌤")
    assert peer.expect("PRIVMSG") == "PRIVMSG #chat :über den Wolken 🌤"
    peer.send(":bob!b@h PRIVMSG #chat :hello over TLS")
    assert w.wait(EV.Message).text == "hello over TLS"
    assert not store.path.exists()  # verified: nothing to pin
    s.quit()
    w.wait(EV.Closed)


def test_unverifiable_certificate_is_refused_without_a_pin_then_trusted(
        tls_fake: FakeServer, tls_cert: Cert, store: PN.PinStore, start: Connect) -> None:
    _s, w = start(tls_fake.address, pins=store)
    failed = w.wait(EV.LoginFailed)
    assert failed.kind is EV.LoginKind.UNTRUSTED_CERT
    assert failed.fingerprint == tls_cert.fingerprint
    assert (failed.host, failed.port) == tls_fake.address
    assert "could not be checked" in failed.message and "self-signed" in failed.message
    w.wait(EV.Closed)
    # One refused handshake, one look at the certificate; nothing was sent in the clear or
    # in TLS: the look's connection closed without a line.
    assert tls_fake.handshakes == 2 and len(tls_fake.failed) == 1
    look = tls_fake.peer()
    assert look._reader.join(2) is None and look.received == []
    assert not store.path.exists()  # the session never pins: the user does
    # The user says yes: the app pins it and starts a new session, which gets in.
    store.set(failed.host, failed.port, failed.fingerprint)
    _s2, w2 = start(tls_fake.address, pins=store)
    welcome_and_join(tls_fake)
    w2.wait(EV.Joined)
    assert tls_fake.handshakes == 3  # a pinned server takes one handshake


def test_a_damaged_pin_file_refuses_the_connection_in_words(
        tls_fake: FakeServer, tls_cert: Cert, store: PN.PinStore, start: Connect) -> None:
    store.set(*tls_fake.address, tls_cert.fingerprint)
    damaged = store.path.read_text()[:-3]  # cut short
    store.path.write_text(damaged)
    _s, w = start(tls_fake.address, pins=store)
    failed = w.wait(EV.LoginFailed)
    assert failed.kind is EV.LoginKind.TLS_FAILED
    assert "cannot be used" in failed.message and str(store.path) in failed.message
    assert "nothing was sent" in failed.message
    w.wait(EV.Closed)
    assert store.path.read_text() == damaged  # left for the user to mend, not replaced


def test_matching_pin_is_checked_again_on_every_reconnect(
        tls_fake: FakeServer, tls_cert: Cert, store: PN.PinStore, start: Connect,
        tmp_path: Path) -> None:
    store.set("127.0.0.1", tls_fake.address[1], tls_cert.fingerprint)
    _s, w = start(tls_fake.address, pins=store)
    peer = welcome_and_join(tls_fake)
    assert w.wait(EV.Registered).tls
    w.wait(EV.Joined)
    # Same certificate: the reconnect gets back in.
    peer.close()
    w.wait(EV.Disconnected)
    peer = welcome_and_join(tls_fake)
    assert w.wait(EV.Joined).rejoined
    # Another certificate on the same port: the reconnect is refused, for good.
    other = make_cert(tmp_path / "other", "other")
    tls_fake.tls = server_context(other)
    peer.close()
    w.wait(EV.Disconnected)
    failed = w.wait(EV.LoginFailed)
    assert failed.kind is EV.LoginKind.CERT_CHANGED
    assert (failed.pinned, failed.fingerprint) == (tls_cert.fingerprint, other.fingerprint)
    w.wait(EV.Closed)
    assert tls_fake.peer().received == []  # refused before a line was sent


def test_changed_certificate_is_refused_then_accepted_deliberately(
        tls_cert: Cert, store: PN.PinStore, start: Connect, tmp_path: Path) -> None:
    new = make_cert(tmp_path / "new", "new")
    fake = FakeServer(tls=server_context(new))
    try:
        store.set("127.0.0.1", fake.address[1], tls_cert.fingerprint)
        _s, w = start(fake.address, pins=store)
        failed = w.wait(EV.LoginFailed)
        assert failed.kind is EV.LoginKind.CERT_CHANGED
        assert failed.pinned == tls_cert.fingerprint and failed.fingerprint == new.fingerprint
        assert "has changed since you last connected" in failed.message
        assert fake.peer().received == []
        # Even a CA the session is told to trust does not override a pin.
        _s2, w2 = start(fake.address, pins=store, cafile=str(new.cert))
        assert w2.wait(EV.LoginFailed).kind is EV.LoginKind.CERT_CHANGED
        assert fake.peer().received == []
        # The user accepts the new certificate (a separate action): pinned, it gets in.
        store.set(failed.host, failed.port, failed.fingerprint)
        _s3, w3 = start(fake.address, pins=store)
        welcome_and_join(fake)
        w3.wait(EV.Joined)
        assert PN.PinStore(store.path).get("127.0.0.1", fake.address[1]) == new.fingerprint
    finally:
        fake.close()


def test_wrong_host_name_is_not_verified(tls_cert: Cert, start: Connect) -> None:
    # The certificate names localhost and 127.0.0.1, not 127.0.0.2 (still loopback).
    fake = FakeServer(tls=server_context(tls_cert), host="127.0.0.2")
    try:
        _s, w = start(fake.address, cafile=str(tls_cert.cert))
        failed = w.wait(EV.LoginFailed)
        assert failed.kind is EV.LoginKind.UNTRUSTED_CERT
        assert "127.0.0.2" in failed.message and failed.fingerprint == tls_cert.fingerprint
    finally:
        fake.close()


def test_tls_to_a_plaintext_port_fails_in_words(fake: FakeServer, start: Connect) -> None:
    _s, w = start(fake.address, connect_timeout=0.5)
    failed = w.wait(EV.LoginFailed)
    assert failed.kind is EV.LoginKind.TLS_FAILED
    assert "TLS port" in failed.message and "Use TLS" in failed.message
    peer = fake.peer()
    assert all(not line.startswith((b"NICK", b"PASS", b"USER")) for line in peer.received)


def test_plaintext_server_that_offers_tls_says_so(fake: FakeServer, start: Connect) -> None:
    _s, w = start(fake.address, tls=False)
    peer = fake.peer()
    peer.welcome()
    reg = w.wait(EV.Registered)
    assert reg.tls is None
    peer.send(":fake.server NOTICE alice :This connection is not encrypted. Connect with TLS "
              "to port 6697 to keep your messages private.")
    peer.send(":fake.server NOTICE alice :Just a notice about port 7000.")
    offer = w.wait(EV.Notice)
    assert offer.tls_port == 6697 and "not encrypted" in offer.text
    assert w.wait(EV.Notice).tls_port is None


def test_tls_reads_records_split_across_segments(tls_fake: FakeServer, tls_cert: Cert,
                                                 start: Connect) -> None:
    """A TLS record that arrives in pieces is not an end of stream (feed() gives b"")."""
    s, w = start(tls_fake.address, cafile=str(tls_cert.cert))
    peer = tls_fake.peer()
    peer.welcome()
    peer.join()
    w.wait(EV.Joined)
    assert peer.stream is not None
    with peer._wlock:
        record = peer.stream.encrypt(b":bob!b@h PRIVMSG #chat :" + b"x" * 3000 + b"\r\n")
        for i in range(0, len(record), 7):
            peer.sock.sendall(record[i:i + 7])
            if i < 70:
                time.sleep(0.01)
    assert w.wait(EV.Message).text == "x" * 3000
    assert s.state == "joined"


def test_bad_cafile_is_explained(tls_fake: FakeServer, start: Connect, tmp_path: Path) -> None:
    _s, w = start(tls_fake.address, cafile=str(tmp_path / "missing.pem"))
    failed = w.wait(EV.LoginFailed)
    assert failed.kind is EV.LoginKind.TLS_FAILED and "missing.pem" in failed.message


def test_old_tls_versions_are_not_offered(tls_cert: Cert, start: Connect) -> None:
    ctx = server_context(tls_cert)
    with warnings.catch_warnings():  # deprecated, which is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    fake = FakeServer(tls=ctx)
    try:
        _s, w = start(fake.address, cafile=str(tls_cert.cert))
        failed = w.wait(EV.LoginFailed)
        assert failed.kind is EV.LoginKind.TLS_FAILED
    finally:
        fake.close()


# --- against the real server's TLS listener ---------------------------------------------


@pytest.fixture
def tls_srv(make_server: Callable[..., RunningServer], tls_cert: Cert) -> RunningServer:
    return make_server(tls_port=0, tls_cert=str(tls_cert.cert), tls_key=str(tls_cert.key))


def test_real_server_tls_and_plaintext_clients_in_one_room(
        tls_srv: RunningServer, tls_cert: Cert, store: PN.PinStore, start: Connect) -> None:
    assert tls_srv.tls_address is not None
    alice, wa = start(tls_srv.tls_address, "alice", cafile=str(tls_cert.cert), pins=store)
    assert wa.wait(EV.Registered).tls in ("TLSv1.2", "TLSv1.3")
    wa.wait(EV.Joined)
    bob, wb = start(tls_srv.address, "bob", tls=False)
    assert wb.wait(EV.Registered).tls is None
    offer = wb.wait(EV.Notice, lambda n: n.tls_port is not None)
    assert offer.tls_port == tls_srv.tls_address[1]
    wb.wait(EV.Joined)
    wa.wait(EV.UserJoined)
    assert alice.send_message("sealed 🔒")
    assert wb.wait(EV.Message).text == "sealed 🔒"
    assert bob.send_message("in the clear")
    assert wa.wait(EV.Message).text == "in the clear"
    wa.none_of(EV.Notice)  # no "not encrypted" notice for the TLS client
    assert not store.path.exists()


def test_real_server_unverifiable_refused_then_pinned(
        tls_srv: RunningServer, tls_cert: Cert, store: PN.PinStore, start: Connect) -> None:
    assert tls_srv.tls_address is not None
    host, port = tls_srv.tls_address
    _s, w = start((host, port), pins=store)
    failed = w.wait(EV.LoginFailed)
    assert failed.kind is EV.LoginKind.UNTRUSTED_CERT
    assert failed.fingerprint == tls_cert.fingerprint
    w.wait(EV.Closed)
    assert "alice" not in tls_srv.server.reg.nicks
    store.set(host, port, failed.fingerprint)
    s2, w2 = start((host, port), pins=store)
    w2.wait(EV.Joined)
    assert s2.state == "joined"
