"""File sharing against a real server: the file host (soju.im/FILEHOST) on an ephemeral
port, its limits and refusals, what it advertises in ISUPPORT, HTTPS with the chat's
certificate, restarts and ``kill -9``, retention and quota, slow peers; and the client's
transfer module against it.  Loopback only, no mocks."""

from __future__ import annotations

import base64
import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import (
    ROOT,
    Cert,
    LineClient,
    RunningServer,
    eventually,
    free_port,
    make_cert,
    tls_client_context,
)

from chatroom import files as F
from chatroom import protocol as P
from chatroom import transfer
from chatroom.config import parse_args, parse_size

Factory = Callable[..., RunningServer]
PW = "correct horse battery staple"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64  # enough of one for its type; never decoded


# --- helpers ---------------------------------------------------------------------------------


def file_server(make_server: Factory, *accounts: str, **overrides: object) -> RunningServer:
    """A server with a file host on a free port and ``accounts`` (password :data:`PW`)."""
    overrides.setdefault("files_port", 0)
    srv = make_server(**overrides)
    assert srv.server.hub.accounts is not None
    for name in accounts or ("alice",):
        srv.server.hub.accounts.register(name, PW)
    return srv


def port_of(srv: RunningServer) -> int:
    assert srv.server.filehost is not None
    return srv.server.filehost.address[1]


def upload_url(srv: RunningServer, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{port_of(srv)}/upload"


def basic(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


class Reply:
    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()

    def header(self, name: str) -> str:
        value = self.headers.get(name)
        assert value is not None, f"no {name} in {dict(self.headers)}"
        return value


def request(srv: RunningServer, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None,
            context: ssl.SSLContext | None = None) -> Reply:
    conn: http.client.HTTPConnection
    if context is not None:
        conn = http.client.HTTPSConnection("127.0.0.1", port_of(srv), timeout=5,
                                           context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port_of(srv), timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        return Reply(conn.getresponse())
    finally:
        conn.close()


def post(srv: RunningServer, body: bytes, name: str = "notes.txt", account: str = "alice",
         password: str = PW, content_type: str | None = "text/plain",
         disposition: str | None = None, context: ssl.SSLContext | None = None) -> Reply:
    headers = {"Authorization": basic(account, password),
               "Content-Disposition": disposition or P.content_disposition("attachment", name)}
    if content_type:
        headers["Content-Type"] = content_type
    return request(srv, "POST", "/upload", body, headers, context)


def path_of(location: str) -> str:
    return urllib.parse.urlsplit(location).path


def stored(srv: RunningServer, location: str) -> F.FileRecord:
    assert srv.server.files is not None
    record = srv.server.files.get(path_of(location).split("/")[2])
    assert record is not None
    return record


def raw(srv: RunningServer, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port_of(srv)), timeout=5)
    if data:
        sock.sendall(data)
    return sock


def read_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything until the server closes (bounded by ``timeout``)."""
    sock.settimeout(timeout)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    return out


def read_head(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """One response's status line and headers."""
    sock.settimeout(timeout)
    out = b""
    while b"\r\n\r\n" not in out:
        chunk = sock.recv(1)
        assert chunk, f"closed after {out!r}"
        out += chunk
    return out


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Does the server close ``sock`` (EOF or reset) within ``seconds``?"""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def upload_head(length: int, extra: str = "", account: str = "alice",
                password: str = PW) -> bytes:
    return (f"POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: {basic(account, password)}"
            f"\r\nContent-Length: {length}\r\n{extra}\r\n").encode()


def parts_left(srv: RunningServer) -> list[str]:
    assert srv.server.files is not None
    return [p.name for p in srv.server.files.directory.iterdir()
            if p.name.startswith(F.PART_PREFIX)]


def security_headers(reply: Reply) -> None:
    assert reply.header("X-Content-Type-Options") == "nosniff"
    csp = reply.header("Content-Security-Policy")
    assert "default-src 'none'" in csp and "sandbox" in csp


# --- the protocol ----------------------------------------------------------------------------


def test_options_on_the_upload_url(make_server: Factory) -> None:
    srv = file_server(make_server)
    r = request(srv, "OPTIONS", "/upload")
    assert r.status == 204
    assert set(r.header("Allow").replace(" ", "").split(",")) == {"OPTIONS", "POST"}
    assert r.header("Accept-Post") == "*/*"
    security_headers(r)


def test_upload_then_get_head_and_ranges(make_server: Factory) -> None:
    srv = file_server(make_server)
    body = bytes(range(256)) * 40  # 10,240 bytes
    r = post(srv, body, name="report 2024 €.bin", content_type="application/octet-stream")
    assert r.status == 201, r.body
    location = r.header("Location")
    assert r.body.decode().strip() == location
    assert location.startswith(f"http://127.0.0.1:{port_of(srv)}/files/")
    file_id = path_of(location).split("/")[2]
    assert F.valid_id(file_id) and len(base64.urlsafe_b64decode(file_id + "==")) == 16
    assert urllib.parse.unquote(path_of(location).split("/")[3]) == "report 2024 €.bin"
    record = stored(srv, location)
    assert (record.owner, record.size, record.type) == ("alice", len(body),
                                                          "application/octet-stream")

    got = request(srv, "GET", path_of(location))
    assert got.status == 200 and got.body == body
    assert got.header("Content-Length") == str(len(body))
    assert got.header("Accept-Ranges") == "bytes"
    assert got.header("Content-Disposition") == (
        "attachment; filename=\"report 2024 _.bin\"; "
        "filename*=UTF-8''report%202024%20%E2%82%AC.bin")
    security_headers(got)
    assert P.disposition_filename(got.header("Content-Disposition")) == "report 2024 €.bin"

    head = request(srv, "HEAD", path_of(location))
    assert head.status == 200 and head.body == b""
    assert head.header("Content-Length") == str(len(body))

    part = request(srv, "GET", path_of(location), headers={"Range": "bytes=100-199"})
    assert part.status == 206 and part.body == body[100:200]
    assert part.header("Content-Range") == f"bytes 100-199/{len(body)}"
    tail = request(srv, "GET", path_of(location), headers={"Range": "bytes=-10"})
    assert tail.status == 206 and tail.body == body[-10:]
    rest = request(srv, "GET", path_of(location), headers={"Range": "bytes=10000-"})
    assert rest.status == 206 and rest.body == body[10000:]
    beyond = request(srv, "GET", path_of(location), headers={"Range": "bytes=99999-"})
    assert beyond.status == 416
    assert beyond.header("Content-Range") == f"bytes */{len(body)}"
    security_headers(beyond)
    stale = request(srv, "GET", path_of(location),
                    headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale.status == 200 and stale.body == body
    # The id alone finds it; a wrong or made-up id finds nothing.
    assert request(srv, "GET", f"/files/{file_id}").body == body
    assert request(srv, "GET", "/files/" + "A" * 22).status == 404
    assert request(srv, "GET", "/files/../chat.sqlite3").status == 404
    assert request(srv, "GET", "/etc/passwd").status == 404
    assert request(srv, "DELETE", path_of(location)).status == 405
    assert request(srv, "GET", "/upload").status == 405


def test_only_safe_types_are_shown_inline(make_server: Factory) -> None:
    srv = file_server(make_server)
    cases = [("pic.png", "image/png", PNG, "image/png", "inline"),
             ("pic.webp", "image/webp", b"RIFF....WEBP", "image/webp", "inline"),
             ("a.txt", "text/plain", b"hi", "text/plain; charset=utf-8", "inline"),
             ("a.txt", "text/plain; charset=UTF-8", b"hi", "text/plain; charset=utf-8",
              "inline"),
             ("l1.txt", "text/plain; charset=latin1", b"hi", "text/plain; charset=latin1",
              "attachment"),
             ("page.html", "text/html", b"<script>alert(1)</script>", "text/html",
              "attachment"),
             ("x.svg", "image/svg+xml", b"<svg onload=alert(1)>", "image/svg+xml",
              "attachment"),
             ("guess.png", None, PNG, "image/png", "inline"),  # guessed from the name
             ("junk", "not a type", b"?", "application/octet-stream", "attachment")]
    for name, declared, body, served, kind in cases:
        r = post(srv, body, name=name, content_type=declared)
        assert r.status == 201, (name, r.body)
        got = request(srv, "GET", path_of(r.header("Location")))
        assert got.header("Content-Type") == served, name
        assert got.header("Content-Disposition").split(";")[0] == kind, name
        security_headers(got)


def test_expect_100_continue_asks_for_the_body_only_after_the_checks(
        make_server: Factory) -> None:
    srv = file_server(make_server)
    sock = raw(srv, upload_head(5, "Expect: 100-continue\r\n"))
    assert read_head(sock).startswith(b"HTTP/1.1 100 Continue\r\n")
    sock.sendall(b"hello")
    reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 201 ")
    sock.close()
    # Refused at once, without a 100 first: the body is never asked for.
    bad = raw(srv, upload_head(5, "Expect: 100-continue\r\n", password="nope"))
    assert read_head(bad).startswith(b"HTTP/1.1 401 ")
    bad.close()


# --- refusals ----------------------------------------------------------------------------------


def test_no_wrong_or_guest_credentials_get_401(make_server: Factory) -> None:
    srv = file_server(make_server)
    anonymous = request(srv, "POST", "/upload", b"data")
    assert anonymous.status == 401
    assert anonymous.header("WWW-Authenticate").startswith('Basic realm="')
    assert b"guests can't upload" in anonymous.body
    security_headers(anonymous)
    wrong = post(srv, b"data", password="guess")
    assert wrong.status == 401 and b"wrong name or password" in wrong.body
    assert "WWW-Authenticate" in wrong.headers
    unknown = post(srv, b"data", account="nobody")  # a guest has no account to give
    assert unknown.status == 401
    for junk in ("Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode()):
        assert request(srv, "POST", "/upload", b"x", {"Authorization": junk}).status == 401
    assert srv.server.files is not None and srv.server.files.used("alice") == 0


def test_failed_logins_are_throttled_like_sasl(make_server: Factory) -> None:
    srv = file_server(make_server, login_free=1, login_max=3)
    assert post(srv, b"x", password="one").status == 401
    assert post(srv, b"x", password="two").status == 401
    throttled = post(srv, b"x")  # even the right password waits now
    assert throttled.status == 429
    assert 1 <= int(throttled.header("Retry-After")) <= 2
    assert b"too many failed attempts" in throttled.body
    # The same throttle as SASL: the chat login is held back too.
    hub = srv.server.hub
    assert hub.login_throttle.wait("acct:alice", time.monotonic()) > 0


def test_content_length_is_required(make_server: Factory) -> None:
    srv = file_server(make_server)
    sock = raw(srv, b"POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: "
                    + basic("alice", PW).encode() + b"\r\n\r\n")
    assert read_all(sock).startswith(b"HTTP/1.1 411 ")
    sock.close()
    chunked = raw(srv, b"POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: "
                       + basic("alice", PW).encode()
                       + b"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert read_all(chunked).startswith(b"HTTP/1.1 411 ")
    chunked.close()


def test_over_size_is_refused_before_the_body(make_server: Factory) -> None:
    srv = file_server(make_server, max_upload=1000)
    # Only the headers are sent: the answer comes without waiting for a byte of body.
    sock = raw(srv, upload_head(1001))
    head = read_head(sock)
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close" in head
    sock.close()
    assert post(srv, b"x" * 1001).status == 413
    fits = post(srv, b"x" * 1000)
    assert fits.status == 201
    assert b"(1000 bytes)" in post(srv, b"x" * 2000).body


def test_a_body_that_runs_over_is_cut_off(make_server: Factory) -> None:
    srv = file_server(make_server)
    # Five bytes declared, more sent, and a request smuggled after them.
    sock = raw(srv, upload_head(5) + b"hello, and more bytes than declared\r\n"
                    + b"GET /etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = read_all(sock)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 201 ")
    assert reply.count(b"HTTP/1.1") == 1, reply  # the connection ended after the upload
    location = next(line.split(b": ", 1)[1] for line in reply.split(b"\r\n")
                    if line.lower().startswith(b"location:")).decode()
    assert request(srv, "GET", path_of(location)).body == b"hello"


def test_hostile_filenames_never_touch_the_filesystem(make_server: Factory,
                                                        tmp_path: Path) -> None:
    srv = file_server(make_server)
    assert srv.server.files is not None
    before = set(os.listdir(srv.server.config.data_dir))
    names = {
        'attachment; filename="../../etc/passwd"': "passwd",
        "attachment; filename*=UTF-8''..%2F..%2F..%2Ftmp%2Fevil": "evil",
        'attachment; filename="C:\\\\Windows\\\\win.ini"': "win.ini",
        "attachment; filename*=UTF-8''nul%00byte%0D%0A.txt": "nulbyte.txt",
        'attachment; filename=".."': "file",
        "attachment; filename*=UTF-8''%C3%A9t%C3%A9.txt; filename=\"ete.txt\"": "été.txt",
        'attachment; filename="plain.txt"': "plain.txt",
        "attachment": "file",
    }
    for disposition, shown in names.items():
        r = post(srv, b"payload", disposition=disposition)
        assert r.status == 201, disposition
        record = stored(srv, r.header("Location"))
        assert record.name == shown, disposition
        assert "/" not in record.name and "\\" not in record.name and "\0" not in record.name
        got = request(srv, "GET", path_of(r.header("Location")))
        assert P.disposition_filename(got.header("Content-Disposition")) == shown
    # A raw NUL and a raw slash in the header itself (http.client won't send those).
    sock = raw(srv, upload_head(3, 'Content-Disposition: attachment; filename="a\0/b"\r\n')
               + b"abc")
    reply = read_all(sock)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 201 ")
    on_disk = os.listdir(srv.server.files.directory)
    assert on_disk and all(F.valid_id(n) for n in on_disk)
    assert set(os.listdir(srv.server.config.data_dir)) - before == set()
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil").exists()


# --- what the chat says -----------------------------------------------------------------------


def isupport(srv: RunningServer, address: tuple[str, int] | None = None) -> list[str]:
    """The 005 tokens a client connecting to ``address`` (the chat's) is given."""
    c = LineClient(address or srv.address)
    srv.clients.append(c)
    lines = c.register(f"reader{len(srv.clients)}")
    return [tok for line in lines if " 005 " in line for tok in line.split(" ")[3:]]


def test_isupport_advertises_the_upload_url(make_server: Factory) -> None:
    srv = file_server(make_server)
    assert f"soju.im/FILEHOST=http://127.0.0.1:{port_of(srv)}/upload" in isupport(srv)
    assert not any("FILEHOST" in t for t in isupport(make_server()))  # files_port=None
    public = file_server(make_server, public_url="https://files.example.org:8443/chat/")
    assert "soju.im/FILEHOST=https://files.example.org:8443/chat/upload" in isupport(public)
    r = post(public, b"hi")
    assert r.header("Location").startswith("https://files.example.org:8443/chat/files/")
    # The prefix of the public URL is accepted on the requests too (a proxy may keep it).
    assert request(public, "GET", path_of(r.header("Location"))).body == b"hi"


def test_isupport_names_the_address_the_client_connected_to(make_server: Factory) -> None:
    if socket.has_ipv6 is False:
        pytest.skip("no IPv6")
    srv = file_server(make_server, host="::")
    try:
        toks = isupport(srv, ("::1", srv.address[1]))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    assert f"soju.im/FILEHOST=http://[::1]:{port_of(srv)}/upload" in toks
    toks4 = isupport(srv, ("127.0.0.1", srv.address[1]))
    assert f"soju.im/FILEHOST=http://127.0.0.1:{port_of(srv)}/upload" in toks4


def test_the_options(tmp_path: Path) -> None:
    cfg, _ = parse_args(["--files-port", "0"])
    assert cfg.files_port is None
    cfg, _ = parse_args(["--max-upload", "10M", "--files-days", "7", "--files-quota", "1G",
                         "--public-url", "https://chat.example.org:1028"])
    assert (cfg.files_port, cfg.max_upload, cfg.files_days, cfg.files_quota, cfg.public_url) == (
        1028, 10 << 20, 7.0, 1 << 30, "https://chat.example.org:1028")
    assert parse_size("52428800") == 50 << 20 == parse_size("50MiB") == parse_size("50m")
    for bad in (["--public-url", "ftp://x"], ["--files-port", "1027"], ["--max-upload", "lots"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
    out = subprocess.run([sys.executable, str(ROOT / "server.py"), "--help"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    for opt in ("--files-port", "--max-upload", "--files-days", "--files-quota",
                "--public-url", "--files-timeout", "--files-connections"):
        assert opt in out


# --- HTTPS --------------------------------------------------------------------------------------


def test_https_with_the_chats_certificate_and_a_reload(make_server: Factory, tls_cert: Cert,
                                                      tmp_path: Path) -> None:
    srv = file_server(make_server, tls_port=0, tls_cert=str(tls_cert.cert),
                      tls_key=str(tls_cert.key))
    url = upload_url(srv, "https")
    assert f"soju.im/FILEHOST={url}" in isupport(srv)
    trust = tls_client_context(tls_cert)
    body = os.urandom(600_000)  # larger than one copy chunk: the TLS send loop runs
    r = post(srv, body, context=trust)
    assert r.status == 201 and r.header("Location").startswith("https://")
    assert request(srv, "GET", path_of(r.header("Location")), context=trust).body == body
    # Plain HTTP to it is not served.
    sock = raw(srv, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not read_all(sock, 3).startswith(b"HTTP/1.1 200")
    sock.close()
    # The client refuses plain http on an encrypted chat, before any connection.
    source = tmp_path / "a.txt"
    source.write_bytes(b"secret")
    with pytest.raises(transfer.TransferError, match="unencrypted"):
        transfer.upload(upload_url(srv, "http"), source, "alice", PW, chat_tls=True)
    assert transfer.upload(url, source, "alice", PW, chat_tls=True, tls_context=trust)
    # SIGHUP's reload: the next connection gets the new certificate.
    fresh = make_cert(tmp_path / "new", name="renewed")
    srv.server.config.tls_cert, srv.server.config.tls_key = str(fresh.cert), str(fresh.key)
    assert srv.server.reload_tls()
    with pytest.raises(ssl.SSLError):
        request(srv, "OPTIONS", "/upload", context=trust)
    assert request(srv, "OPTIONS", "/upload", context=tls_client_context(fresh)).status == 204
    # A pinned fingerprint stands in for the authorities (a self-signed certificate).
    assert transfer.file_info(r.header("Location"), pin=fresh.fingerprint).size == len(body)
    with pytest.raises(transfer.TransferError, match="not the one you trusted"):
        transfer.file_info(r.header("Location"), pin=tls_cert.fingerprint)


# --- durability, retention, quota -------------------------------------------------------------


def test_files_survive_a_restart(make_server: Factory, tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = file_server(make_server, data_dir=str(data))
    location = post(first, b"kept").header("Location")
    first.stop()
    again = make_server(data_dir=str(data), files_port=0)
    got = request(again, "GET", path_of(location))
    assert got.status == 200 and got.body == b"kept"
    assert "notes.txt" in got.header("Content-Disposition")


def test_kill_9_mid_upload_leaves_nothing_half_there(tmp_path: Path) -> None:
    data = tmp_path / "data"
    add = subprocess.run([sys.executable, str(ROOT / "server.py"), "account", "add", "bob",
                          "--data-dir", str(data)], input=PW + "\n", text=True,
                         capture_output=True, timeout=30)
    assert add.returncode == 0, add.stderr

    def start() -> tuple[subprocess.Popen[str], int]:
        port, files_port = free_port(), free_port()
        proc = subprocess.Popen([sys.executable, str(ROOT / "server.py"), "--port", str(port),
                                 "--files-port", str(files_port), "--data-dir", str(data)],
                                stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        for _ in range(30):
            if f"listening on 127.0.0.1:{port}" in proc.stderr.readline():
                return proc, files_port
        proc.kill()
        raise AssertionError("the server did not start")

    def conn(port: int) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", port, timeout=5)

    proc, port = start()
    try:
        c = conn(port)
        c.request("POST", "/upload", b"whole", {"Authorization": basic("bob", PW)})
        location = c.getresponse().headers["Location"]
        c.close()
        half = socket.create_connection(("127.0.0.1", port), timeout=5)
        half.sendall(upload_head(1 << 20, account="bob") + b"x" * 300_000)
        files_dir = data / "files"
        assert eventually(lambda: any(p.name.startswith(F.PART_PREFIX)
                                      and p.stat().st_size >= 300_000
                                      for p in files_dir.iterdir()), 5), \
            "the half upload never reached the disk"
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        half.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert any(p.name.startswith(F.PART_PREFIX) for p in files_dir.iterdir())
    proc, port = start()
    try:
        assert sorted(p.name for p in files_dir.iterdir()) == [path_of(location).split("/")[2]]
        c = conn(port)
        c.request("GET", path_of(location))
        assert c.getresponse().read() == b"whole"
        c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_retention_purges_old_files_on_the_housekeepers_timer(make_server: Factory) -> None:
    srv = file_server(make_server, files_days=0.5 / 86400)  # half a second
    location = post(srv, b"old").header("Location")
    assert srv.server.files is not None
    directory = srv.server.files.directory
    assert eventually(lambda: request(srv, "GET", path_of(location)).status == 404, 5), \
        "never purged"
    assert list(directory.iterdir()) == []


def test_purge_keeps_what_is_young(tmp_path: Path) -> None:
    store = F.Files(tmp_path, retention_days=1)
    try:
        for age in (0, 2 * 86400):
            up = store.begin("bob", "bob", f"age{age}", "text/plain", 1)
            up.write(b"x")
            record = up.commit()
            store._sql("UPDATE files SET created = ? WHERE id = ?", (time.time() - age,
                                                                     record.id))
        assert store.purge() == 1
        assert [store.get(p.name).name for p in store.directory.iterdir()  # type: ignore[union-attr]
                ] == ["age0"]
    finally:
        store.close()


def test_quota_per_account(make_server: Factory) -> None:
    srv = file_server(make_server, "alice", "bob", files_quota=1000)
    assert post(srv, b"a" * 600).status == 201
    over = post(srv, b"a" * 600)
    assert over.status == 413 and b"1000 bytes" in over.body
    assert post(srv, b"b" * 600, account="bob").status == 201  # everyone has their own
    assert post(srv, b"a" * 400).status == 201  # exactly up to it


# --- slow peers -----------------------------------------------------------------------------------


def test_stalled_and_trickling_clients_time_out_and_block_no_one(make_server: Factory) -> None:
    srv = file_server(make_server, files_timeout=0.5)
    stalled = raw(srv, b"POST /upload HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    trickler = raw(srv, b"G")
    half_body = raw(srv, upload_head(100) + b"only a few bytes")
    # Meanwhile everyone else is served at once.
    assert post(srv, b"busy day").status == 201
    # ...while the stalled ones are still waiting for their timeout, not after it.
    for sock in (stalled, half_body):
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(1)
        sock.setblocking(True)
    # The trickler keeps each byte under the idle timeout, but the headers' deadline holds.
    deadline = time.monotonic() + 3
    trickler.settimeout(0.15)
    cut = False
    for ch in b"ET / HTTP/1.1\r\nX-Slow: " + b"a" * 100:
        try:
            trickler.send(bytes([ch]))
            if trickler.recv(1) == b"":
                cut = True
                break
        except TimeoutError:
            pass
        except OSError:
            cut = True
            break
        assert time.monotonic() < deadline
    assert cut, "the trickler was never cut off"
    for sock in (stalled, half_body):
        assert closed_within(sock, 2.0)
        sock.close()
    trickler.close()
    assert srv.server.filehost is not None
    assert eventually(lambda: not srv.server.filehost.active(), 3), \
        "a slow connection still holds a thread"
    assert parts_left(srv) == []  # the half body's file is gone


def test_connections_are_capped(make_server: Factory) -> None:
    srv = file_server(make_server, files_connections=4)  # two per address
    held = [raw(srv, b"GET /files/x HTTP/1.1\r\n"), raw(srv, b"GET /files/x HTTP/1.1\r\n")]
    assert srv.server.filehost is not None
    assert eventually(lambda: srv.server.filehost.active() >= 2, 3)
    turned_away = raw(srv)
    assert read_all(turned_away).startswith(b"HTTP/1.1 503 ")
    turned_away.close()
    for sock in held:
        sock.close()
    assert eventually(lambda: not srv.server.filehost.active(), 3)
    assert request(srv, "OPTIONS", "/upload").status == 204


def test_a_half_upload_never_appears(make_server: Factory) -> None:
    srv = file_server(make_server)
    assert srv.server.files is not None
    sock = raw(srv, upload_head(10_000) + b"x" * 5000)
    assert eventually(lambda: parts_left(srv), 3)
    part = srv.server.files.directory / parts_left(srv)[0]
    assert not F.valid_id(part.name)  # so no URL can ever name it
    assert srv.server.files._sql("SELECT count(*) FROM files")[0][0] == 0
    sock.close()  # the client goes away: the part goes too
    assert eventually(lambda: not parts_left(srv), 3)
    assert srv.server.files._sql("SELECT count(*) FROM files")[0][0] == 0


def test_uploads_are_logged_without_passwords(make_server: Factory,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    srv = file_server(make_server)
    location = post(srv, b"12345").header("Location")
    post(srv, b"x", password="s3cret-wrong-pw")
    file_id = path_of(location).split("/")[2]
    text = caplog.text
    assert f"alice uploaded {file_id} (5 bytes" in text
    assert "wrong password for 'alice'" in text
    assert PW not in text and "s3cret-wrong-pw" not in text
    assert base64.b64encode(b"alice:s3cret-wrong-pw").decode() not in text


# --- the client's transfer module -------------------------------------------------------------


def test_transfer_upload_download_with_progress(make_server: Factory, tmp_path: Path) -> None:
    srv = file_server(make_server)
    source = tmp_path / "holiday photo.png"
    content = PNG + os.urandom(1_000_000)
    source.write_bytes(content)
    seen: list[tuple[int, int]] = []
    url = transfer.upload(upload_url(srv), source, "alice", PW,
                          progress=lambda sent, total: seen.append((sent, total)))
    assert seen[0] == (0, len(content)) and seen[-1] == (len(content), len(content))
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)
    assert transfer.is_file_link(url, upload_url(srv))
    assert not transfer.is_file_link(upload_url(srv), upload_url(srv))
    assert not transfer.is_file_link("https://example.org/files/x", upload_url(srv))
    info = transfer.file_info(url)
    assert (info.name, info.size, info.type, info.inline) == ("holiday photo.png",
                                                              len(content), "image/png", True)
    got: list[tuple[int, int]] = []
    dest = transfer.download(url, tmp_path / "copy.png",
                             progress=lambda n, total: got.append((n, total)))
    assert dest.read_bytes() == content
    assert got[-1] == (len(content), len(content))
    assert not transfer.part_path(dest).exists()


def test_transfer_cancel_and_resume(make_server: Factory, tmp_path: Path) -> None:
    srv = file_server(make_server)
    source = tmp_path / "big.bin"
    content = os.urandom(3 * transfer.CHUNK + 123)
    source.write_bytes(content)
    cancel = threading.Event()

    def stop_after_first(sent: int, total: int) -> None:
        if sent >= transfer.CHUNK:
            cancel.set()

    with pytest.raises(transfer.Cancelled):
        transfer.upload(upload_url(srv), source, "alice", PW, progress=stop_after_first,
                        cancel=cancel)
    assert srv.server.files is not None
    assert eventually(lambda: not parts_left(srv), 3)  # the server drops the cut upload
    assert srv.server.files.used("alice") == 0
    url = transfer.upload(upload_url(srv), source, "alice", PW)
    cancel.clear()
    dest = tmp_path / "out.bin"
    with pytest.raises(transfer.Cancelled):
        transfer.download(url, dest, progress=stop_after_first, cancel=cancel)
    part = transfer.part_path(dest)
    assert part.exists() and 0 < part.stat().st_size < len(content) and not dest.exists()
    had = part.stat().st_size
    cancel.clear()
    starts: list[int] = []
    transfer.download(url, dest, progress=lambda n, total: starts.append(n))
    assert starts[0] == had  # it resumed where it stopped
    assert dest.read_bytes() == content and not part.exists()


def test_transfer_errors_in_words(make_server: Factory, tmp_path: Path) -> None:
    srv = file_server(make_server)
    source = tmp_path / "f.txt"
    source.write_bytes(b"x" * 100)
    with pytest.raises(transfer.TransferError, match="^wrong name or password$") as wrong:
        transfer.upload(upload_url(srv), source, "alice", "nope")
    assert wrong.value.status == 401
    # One byte over the default 50 MiB: refused before any of it is sent (a sparse file,
    # so a test that sent it would take a while).
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate((50 << 20) + 1)
    sent: list[int] = []
    t0 = time.monotonic()
    with pytest.raises(transfer.TransferError,
                       match=r"^the file is larger than the server accepts \(50 MB\)$") as over:
        transfer.upload(upload_url(srv), big, "alice", PW, progress=lambda n, _: sent.append(n))
    assert over.value.status == 413 and sent == [] and time.monotonic() - t0 < 2
    with pytest.raises(transfer.TransferError, match="not on the server"):
        transfer.download(f"http://127.0.0.1:{port_of(srv)}/files/{'A' * 22}/x",
                          tmp_path / "none")
    assert not (tmp_path / "none").exists()
    with pytest.raises(transfer.TransferError, match="not running"):
        transfer.file_info(f"http://127.0.0.1:{free_port()}/files/x")
    with pytest.raises(transfer.TransferError, match="can't read"):
        transfer.upload(upload_url(srv), tmp_path / "missing", "alice", PW)
    with pytest.raises(transfer.TransferError, match="not a web address"):
        transfer.upload("ftp://127.0.0.1/upload", source, "alice", PW)


def test_disposition_parsing() -> None:
    parse = P.disposition_filename
    assert parse('attachment; filename="a b.txt"') == "a b.txt"
    assert parse("attachment; filename=plain.txt") == "plain.txt"
    assert parse("attachment; filename*=UTF-8''%E2%82%AC%20rates.txt") == "€ rates.txt"
    assert parse("attachment; filename*=utf-8'en'x.txt; filename=\"y.txt\"") == "x.txt"
    assert parse("attachment; filename=\"fallback.txt\"; filename*=UTF-8''%FF") == "fallback.txt"
    assert parse('attachment; filename="quo\\"ted"') == 'quo"ted'
    assert parse("ATTACHMENT; FILENAME=up.txt") == "up.txt"
    assert parse("attachment; filename*=ISO-8859-1''%E9t%E9") == "été"
    assert parse('attachment; filename="\xc3\xa9t\xc3\xa9"') == "été"  # raw UTF-8, read as Latin-1
    assert parse("inline") is None and parse(None) is None and parse("") is None
    header = P.content_disposition("attachment", 'we"ird\\ €.txt')
    assert parse(header) == 'we"ird\\ €.txt'
    assert F.clean_name("../../etc/passwd") == "passwd"
    assert F.clean_name("a\0b\r\n") == "ab"
    assert F.clean_name("..") == "file" and F.clean_name("") == "file"
    assert len(F.clean_name("é" * 300 + ".txt").encode()) <= F.NAME_MAX
    assert F.clean_name("é" * 300 + ".txt").endswith(".txt")
