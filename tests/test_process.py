"""The server as a user starts it: `python server.py`, signals, options."""

from __future__ import annotations

import atexit
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import LineClient, free_port

ROOT = Path(__file__).resolve().parent.parent


def start(*args: str) -> tuple[subprocess.Popen, int]:
    """The server, started as a user would, in a temporary working directory (its
    ``chat-data`` lands there); once it says it listens."""
    port = free_port()
    here = tempfile.mkdtemp(prefix="chat-proc-")
    atexit.register(shutil.rmtree, here, True)
    proc = subprocess.Popen([sys.executable, str(ROOT / "server.py"), "--port", str(port),
                             *args], stderr=subprocess.PIPE, text=True, cwd=here)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if f"listening on 127.0.0.1:{port}" in line:
            return proc, port
        assert len(seen) < 20, seen
    raise AssertionError(f"the server stopped before listening: {seen}")


def test_help_lists_every_option() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "server.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    for opt in ("--host", "--port", "--name", "--motd", "--password", "--max-clients",
                "--max-per-ip", "--sendq", "--register-timeout", "--ping-interval",
                "--ping-timeout", "--line-timeout", "--max-channels", "--max-members",
                "--flood-burst", "--flood-rate", "--no-flood-control", "--log-level"):
        assert opt in out


def test_bad_options_are_explained() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "server.py"), "--motd", "/nonexistent"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "cannot read --motd" in r.stderr


def test_port_in_use_is_reported() -> None:
    proc, port = start()
    try:
        r = subprocess.run([sys.executable, str(ROOT / "server.py"), "--port", str(port)],
                           capture_output=True, text=True, timeout=10,
                           cwd=tempfile.mkdtemp(prefix="chat-proc-"))
        assert r.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}" in r.stderr
        assert "Traceback" not in r.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=5)


@pytest.mark.parametrize("sig, n", [(signal.SIGTERM, 200), (signal.SIGINT, 20)])
def test_signal_tells_clients_and_exits_zero(sig: signal.Signals, n: int, tmp_path: Path) -> None:
    """SIGTERM while 200 clients chat: all get the notice, exit 0 at once, port reusable."""
    motd = tmp_path / "motd.txt"
    motd.write_text("Welcome\n")
    proc, port = start("--motd", str(motd), "--no-flood-control")
    clients = []
    for i in range(n):
        c = LineClient(("127.0.0.1", port))
        c.register(f"sig{i}")
        c.send("JOIN #chat")
        clients.append(c)
    for c in clients:
        c.lines_until("366")
    stop = threading.Event()
    busy = threading.Semaphore(0)  # each talker releases it once it has said a few lines

    def chat(c: LineClient) -> None:
        k = 0
        try:
            while not stop.is_set():
                c.send(f"PRIVMSG #chat :chatter {k}")
                k += 1
                if k == 5:
                    busy.release()
                c.sock.settimeout(0.05)
                try:
                    c.buf += c.sock.recv(1 << 20)  # keep reading, as a real client does
                except TimeoutError:
                    pass
        except OSError:
            pass  # the server went away mid-sentence, as expected

    talkers = [threading.Thread(target=chat, args=(c,)) for c in clients[:10]]
    for t in talkers:
        t.start()
    for _ in talkers:  # the room is busy when the signal comes
        assert busy.acquire(timeout=10)
    t0 = time.monotonic()
    proc.send_signal(sig)
    assert proc.wait(timeout=5) == 0
    assert time.monotonic() - t0 < 2.0
    stop.set()
    for t in talkers:
        t.join(timeout=5)
    notice = b"ERROR :Closing Link: 127.0.0.1 (Server shutting down)\r\n"
    for c in clients:
        c.closed()  # read everything that is left
        assert c.buf.endswith(notice), (c.nick, c.buf[-200:])
    # SO_REUSEADDR: the same port can be bound again at once.
    again = subprocess.Popen([sys.executable, str(ROOT / "server.py"), "--port", str(port)],
                             stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    assert again.stderr is not None
    assert any("listening on" in again.stderr.readline() for _ in range(5))
    again.send_signal(signal.SIGTERM)
    assert again.wait(timeout=5) == 0
    assert proc.stderr is not None
    log = proc.stderr.read()
    assert "registered" in log and "join sig0 #chat" in log and "shutting down" in log
    assert "Traceback" not in log


def test_every_option_in_help_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for face in ("server.py", "client.py"):
        out = subprocess.run([sys.executable, str(ROOT / face), "--help"], capture_output=True,
                             text=True, timeout=60, check=True).stdout
        options = {m for m in re.findall(r"(?<![\w-])--[a-z][a-z-]*[a-z]", out)}
        options.discard("--help")
        missing = sorted(o for o in options if f"`{o}" not in readme and f"{o} " not in readme
                         and f"[{o}" not in readme)
        assert not missing, f"{face}: options missing from README.md: {missing}"
