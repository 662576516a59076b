"""Shared fixtures: a real server on an ephemeral loopback port, and a small line client."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import server as server_mod  # noqa: E402

TIMEOUT = 5.0


class LineClient:
    """A test peer: sends raw lines, reads CRLF lines with a timeout, never guesses framing."""

    def __init__(self, address: tuple[str, int], timeout: float = TIMEOUT) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
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

    def no_line(self, wait: float = 0.3) -> None:
        """Assert nothing arrives for ``wait`` seconds (a PING round trip proves the path)."""
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
        cfg = server_mod.Config(host="127.0.0.1", port=0, name="chat.test", network="TestNet")
        for k, v in overrides.items():
            setattr(cfg, k, v)
        self.config = cfg
        self.server = server_mod.Server(cfg)
        self.address = self.server.bind()
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-server",
                                       daemon=True)
        self.clients: list[LineClient] = []
        self.thread.start()

    def client(self, nick: str | None = None, room: str | None = None) -> LineClient:
        c = LineClient(self.address)
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

    def wait_for(self, cond: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
        """Poll server state until ``cond`` holds; state changes have no event to wait on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.server.reg.lock:
                if cond():
                    return True
            time.sleep(0.01)
        return False


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


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))
