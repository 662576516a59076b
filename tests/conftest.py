"""Shared fixtures: a real server on an ephemeral loopback port, a small line client, and
for the client's tests a scripted fake server and an address where connect() hangs."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import queue
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatroom.config import Config  # noqa: E402
from chatroom.server import Server  # noqa: E402
from chatroom.transport import TLSClosed, TLSStream, handshake

TIMEOUT = 5.0


class LineClient:
    """A test peer: sends raw lines, reads CRLF lines with a timeout, never guesses framing."""

    def __init__(self, address: tuple[str, int], timeout: float = TIMEOUT,
                 tls: ssl.SSLContext | None = None, source: str | None = None) -> None:
        # ``source``: another loopback address to come from (127.0.0.2: another "host").
        sock = socket.create_connection(address, timeout=timeout,
                                        source_address=(source, 0) if source else None)
        # A test client has one thread, so an SSLSocket is fine here.
        self.sock = tls.wrap_socket(sock, server_hostname="localhost") if tls else sock
        self.buf = b""
        self.nick = "*"

    def send(self, line: str | bytes) -> None:
        data = line.encode() if isinstance(line, str) else line
        if not data.endswith(b"\n"):
            data += b"\r\n"
        self.sock.sendall(data)

    def recv_line(self, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while b"\r\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line within {timeout}s; have {self.buf[:200]!r}")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; have {self.buf[:200]!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8")

    def expect(self, predicate: Callable[[str], bool] | str, timeout: float = TIMEOUT
               ) -> list[str]:
        """Read lines until one matches (a substring or a predicate); return all read."""
        test = (lambda s: predicate in s) if isinstance(predicate, str) else predicate
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            line = self.recv_line(max(0.01, deadline - time.monotonic()))
            seen.append(line)
            if test(line):
                return seen

    def lines_until(self, code: str, timeout: float = TIMEOUT) -> list[str]:
        """Read through the first line whose command is ``code``."""
        return self.expect(lambda s: s.split(" ")[1:2] == [code], timeout)

    def no_line(self) -> None:
        """Assert nothing is waiting for us: the server answers a PING in order, so if
        anything had been queued for this client before it, it would arrive first."""
        self.send("PING :quiet-check")
        line = self.recv_line()
        assert line.endswith("PONG chat.test :quiet-check") or line.endswith(
            "PONG chat.test quiet-check"), f"unexpected line {line!r}"

    def register(self, nick: str, user: str = "u", real: str = "Real Name") -> list[str]:
        self.send(f"NICK {nick}")
        self.send(f"USER {user} 0 * :{real}")
        self.nick = nick
        return self.expect(lambda s: s.split(" ")[1:2] in (["376"], ["422"]))

    def join(self, room: str) -> list[str]:
        self.send(f"JOIN {room}")
        return self.lines_until("366")

    def closed(self, timeout: float = TIMEOUT) -> bool:
        """True once the server has closed the connection (reads and drops any lines)."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
        return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class RunningServer:
    def __init__(self, **overrides: object) -> None:
        # Cheap password hashes: the real cost (scrypt_cost 14) is measured in bench/.
        # No file host unless a test asks for one (files_port=0: a free port).
        cfg = Config(host="127.0.0.1", port=0, name="chat.test", network="TestNet",
                     scrypt_cost=4, files_port=None)
        # Every test server keeps its data (history, certificates) in its own temporary
        # directory, unless the test hands it one (to restart on the same data).
        self._own_dir: str | None = None
        if "data_dir" not in overrides:
            self._own_dir = tempfile.mkdtemp(prefix="chat-data-")
            cfg.data_dir = self._own_dir
        for k, v in overrides.items():
            setattr(cfg, k, v)
        self.server = Server(cfg)
        self.address = self.server.bind()
        self.tls_address = self.server.tls_address
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-server",
                                       daemon=True)
        self.clients: list[LineClient] = []
        self.thread.start()

    def client(self, nick: str | None = None, room: str | None = None,
               tls: ssl.SSLContext | None = None) -> LineClient:
        """A line client, registered as ``nick`` and in ``room`` if given; over TLS (to the
        TLS port) with a client context."""
        if tls is not None:
            assert self.tls_address is not None, "this server has no TLS port"
        c = LineClient(self.tls_address if tls is not None else self.address, tls=tls)
        self.clients.append(c)
        if nick:
            c.register(nick)
        if room:
            c.join(room)
        return c

    def stop(self) -> None:
        for c in self.clients:
            c.close()
        self.server.shutdown()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "server did not stop"
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)

    def wait_for(self, cond: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
        """Poll server state until ``cond`` holds; state changes have no event to wait on."""
        def locked() -> bool:
            with self.server.reg.lock:
                return cond()
        return eventually(locked, timeout)


def eventually(cond: Callable[[], object], timeout: float = TIMEOUT) -> bool:
    """Poll ``cond`` (state outside the registry: files on disk, the file host's threads)
    until it holds, for at most ``timeout`` seconds; nothing signals such changes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return bool(cond())


# --- fakes for the client's tests: a scripted server, and an address that never answers

class FakePeer:
    """One connection to a :class:`FakeServer`: the test writes raw lines, reads what came.

    A reader thread queues each line it receives; a QUIT is answered as a server would
    (ERROR, then close), so sessions end promptly.  With ``stream`` (an established
    server-side TLS session) the bytes are TLS; reader and test thread never enter it at
    once (the stream locks itself; ``_wlock`` keeps records in order).
    """

    def __init__(self, sock: socket.socket, stream: TLSStream | None = None) -> None:
        self.sock = sock
        self.stream = stream
        self._wlock = threading.Lock()
        self.lines: queue.Queue[str] = queue.Queue()
        self.received: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        first = self.stream is not None  # lines that came with the handshake's last flight
        try:
            while True:
                data = b"" if first else self.sock.recv(65536)
                if first:
                    first = False
                elif not data:
                    return
                if self.stream is not None:
                    try:
                        data = self.stream.feed(data)
                    except (TLSClosed, ssl.SSLError):
                        return
                    if self.stream.has_output:
                        self._write(b"")
                buf += data
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    raw = raw.rstrip(b"\r")
                    self.received.append(raw)
                    line = raw.decode("utf-8", "replace")
                    self.lines.put(line)
                    if line.startswith("QUIT"):
                        self.send("ERROR :Closing link (Quit)")
                        self.sock.shutdown(socket.SHUT_RDWR)
                        return
        except OSError:
            return

    def send(self, *lines: str | bytes) -> None:
        self._write(b"".join((ln.encode() if isinstance(ln, str) else ln) + b"\r\n"
                             for ln in lines))

    def _write(self, data: bytes) -> None:
        with self._wlock:
            self.sock.sendall(self.stream.encrypt(data) if self.stream is not None else data)

    def expect(self, start: str, timeout: float = 5.0) -> str:
        """The next line that starts with ``start`` (earlier ones are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line starting {start!r} within {timeout}s") from None
            if line.startswith(start):
                return line

    def welcome(self, nick: str = "alice", *isupport: str,
                userhost: str = "alice@fake.example") -> None:
        """Answer the registration: 001, one 005 with ``isupport``, no MOTD (422)."""
        self.expect("USER")
        lines = [f":fake.server 001 {nick} :Welcome to FakeNet {nick}!{userhost}"]
        if isupport:
            lines.append(f":fake.server 005 {nick} {' '.join(isupport)} :are supported by "
                         f"this server")
        lines.append(f":fake.server 422 {nick} :MOTD File is missing")
        self.send(*lines)

    def join(self, nick: str = "alice", names: list[str] | None = None, room: str = "#chat",
             userhost: str = "alice@fake.example") -> None:
        """Answer our JOIN: the echo, NAMES in lines of at most 40 names, 366."""
        self.expect(f"JOIN {room}")
        everyone = names or [nick]
        lines = [f":{nick}!{userhost} JOIN {room}"]
        lines += [f":fake.server 353 {nick} = {room} :{' '.join(everyone[i:i + 40])}"
                  for i in range(0, len(everyone), 40)]
        lines.append(f":fake.server 366 {nick} {room} :End of /NAMES list.")
        self.send(*lines)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._reader.join(2)


class FakeServer:
    """A scripted server on 127.0.0.1, for lines our own server never sends.

    With ``tls`` (a server-side context; tests may swap it to change the certificate) every
    connection first does a TLS handshake on its own thread; only established ones become
    peers, and ``handshakes`` counts the attempts (``failed`` keeps why the others failed).
    """

    def __init__(self, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> None:
        self.tls = tls
        self.handshakes = 0
        self.failed: list[BaseException] = []
        self.listener = socket.create_server((host, 0))
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.peers: queue.Queue[FakePeer] = queue.Queue()
        self._all: list[FakePeer] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            if self.tls is None:
                self._add(FakePeer(sock))
            else:
                self.handshakes += 1
                threading.Thread(target=self._secure, args=(sock, self.tls),
                                 daemon=True).start()

    def _secure(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        stream = TLSStream(context, server_side=True)
        try:
            handshake(sock, stream, TIMEOUT)
        except (OSError, ssl.SSLError) as exc:
            self.failed.append(exc)
            sock.close()
            return
        self._add(FakePeer(sock, stream))

    def _add(self, peer: FakePeer) -> None:
        self._all.append(peer)
        self.peers.put(peer)

    def peer(self, timeout: float = 5.0) -> FakePeer:
        """The next connection (waits for it)."""
        return self.peers.get(timeout=timeout)

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        except OSError:
            pass
        self.listener.close()
        self._thread.join(2)
        for p in self._all:
            p.close()


@pytest.fixture(autouse=True)
def _private_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads or writes the user's own config (pins, passwords, rooms)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    f = FakeServer()
    yield f
    f.close()


@contextlib.contextmanager
def blackhole() -> Iterator[tuple[str, int]]:
    """An address on 127.0.0.1 where connect() hangs: a listener whose backlog is full."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = []
    try:
        for _ in range(3):  # one fills the accept queue; the SYNs of the rest are dropped
            f = socket.socket()
            f.setblocking(False)
            try:
                f.connect(address)
            except BlockingIOError:
                pass
            fillers.append(f)
        yield address
    finally:
        for f in fillers:
            f.close()
        listener.close()


@pytest.fixture
def make_server() -> Iterator[Callable[..., RunningServer]]:
    started: list[RunningServer] = []

    def factory(**overrides: object) -> RunningServer:
        overrides.setdefault("flood_control", False)
        s = RunningServer(**overrides)
        started.append(s)
        return s

    yield factory
    for s in started:
        s.stop()


@pytest.fixture
def srv(make_server: Callable[..., RunningServer]) -> RunningServer:
    return make_server()


def free_port() -> int:
    """A loopback port nobody listens on right now (for "nothing is there" cases)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- TLS: certificates made with the openssl command, as an operator would -----------------

@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path
    fingerprint: str  # SHA-256, "AB:CD:..."


def make_cert(directory: Path, name: str = "server", cn: str = "localhost",
              days: int = 30) -> Cert:
    """A self-signed certificate for ``localhost`` and 127.0.0.1 (EC P-256, fast to make)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", str(days),
         "-subj", f"/CN={cn}", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30)
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    return Cert(cert, key, ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest()))


def server_context(cert: Cert) -> ssl.SSLContext:
    """A server-side context for ``cert``, with the ssl module's defaults for servers."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert.cert, cert.key)
    return context


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    """One certificate for the whole run (tests that change it make their own)."""
    if shutil.which("openssl") is None:
        pytest.fail("the TLS tests need the openssl command (Debian package openssl)")
    return make_cert(tmp_path_factory.mktemp("tls"))


def tls_client_context(cert: Cert) -> ssl.SSLContext:
    """What a careful client uses: verification on, trusting just this certificate."""
    return ssl.create_default_context(cafile=str(cert.cert))


# --- the display and the one Tk root of every GUI test --------------------------------------
# One root for the whole run: the views make Tk variables without a master, so they belong to
# the first root made; a second root (one per test module) would break them.

try:
    import tkinter as tk
except ImportError:  # reported by the root fixture: a skip locally, a failure in CI
    tk = None  # type: ignore[assignment]


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"GUI tests need a display in CI: {why}")
    pytest.skip(f"no display for GUI tests: {why}")


@pytest.fixture(scope="session")
def display() -> Iterator[str]:
    """The X display to use: $DISPLAY, or a private Xvfb started for this test session."""
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        _unavailable("DISPLAY is unset and Xvfb is not installed")
    r, w = os.pipe()
    proc = subprocess.Popen(
        [xvfb, "-displayfd", str(w), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    number = b""
    deadline = time.monotonic() + 10
    try:
        while not number.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(r, 16)
            if not chunk:
                break
            number += chunk
    finally:
        os.close(r)
    if not number.strip().isdigit():
        proc.kill()
        proc.wait()
        _unavailable("Xvfb did not start")
    os.environ["DISPLAY"] = f":{number.decode().strip()}"
    try:
        yield os.environ["DISPLAY"]
    finally:
        del os.environ["DISPLAY"]
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def root(display: str) -> Iterator[tk.Tk]:
    if tk is None:
        _unavailable("tkinter is not installed")
    try:
        r = tk.Tk()
    except tk.TclError as exc:
        _unavailable(f"Tk cannot start: {exc}")
    r.withdraw()
    yield r
    r.destroy()
    gc.collect()
