"""Durability of room history with the server as a separate process: what any client has
received survives ``kill -9`` (the store commits before anyone is sent a line), and a clean
stop (SIGTERM) loses nothing.  Checked by flooding a room from a few clients, recording every
msgid anyone received, killing the server mid-flood, restarting it on the same data
directory and paging through the whole room with CHATHISTORY."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import LineClient, free_port

from chatroom import protocol as P

ROOT = Path(__file__).resolve().parent.parent
SRV = "chat.local"  # the server's default --name
ROOM = "#flood"
SENDERS = 3
TEXT_RE = re.compile(r"s(\d+)-(\d+)\Z")


class Proc:
    """``python server.py`` on a free port with its own data directory; stderr drained."""

    def __init__(self, data: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "server.py"), "--port", str(self.port),
             "--data-dir", str(data), "--no-flood-control"],
            stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        self.log: list[str] = []
        # Read the log up to the line that says it listens (it exits if it can't, ending
        # the pipe); a reader thread then keeps the pipe drained.
        listening = False
        for line in self.proc.stderr:
            self.log.append(line)
            if f"listening on 127.0.0.1:{self.port}" in line:
                listening = True
                break
            if len(self.log) > 50:
                break
        self._drain = threading.Thread(target=self._read_log, daemon=True)
        self._drain.start()
        if not listening:
            self.proc.kill()
            self.proc.wait(5)
            self._drain.join(5)
            pytest.fail(f"server did not start: {''.join(self.log)}")

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def client(self, nick: str, caps: str = "") -> LineClient:
        c = LineClient(("127.0.0.1", self.port))
        if caps:
            c.send(f"CAP REQ :{caps}")
            line = c.recv_line()
            assert P.parse(line) == P.Message("CAP", ("*", "ACK", caps), SRV), line
            c.send("CAP END")
        c.register(nick)
        return c

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._drain.join(5)


class Recorder:
    """A connection whose every received byte is kept by a reader thread, until EOF."""

    def __init__(self, c: LineClient) -> None:
        self.c = c
        self.data = bytearray(c.buf)
        c.buf = b""
        self.privmsgs = 0
        c.sock.settimeout(15)  # bounded: a server that never dies fails the test, not hangs
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while True:
                chunk = self.c.sock.recv(1 << 20)
                if not chunk:
                    return
                self.data += chunk
                self.privmsgs += chunk.count(b" PRIVMSG ")
        except OSError:
            return

    def received(self) -> dict[str, str]:
        """msgid -> text of every complete PRIVMSG to the room received."""
        out = {}
        for raw in bytes(self.data).split(b"\r\n")[:-1]:  # the last piece may be cut short
            m = P.parse(raw, limits=False)
            if m.command == "PRIVMSG" and m.params[0] == ROOM:
                assert "msgid" in m.tags, raw
                out[m.tags["msgid"]] = m.params[1]
        return out


def join(c: LineClient, room: str) -> None:
    c.send(f"JOIN {room}")
    while P.parse(c.recv_line(), limits=False).command != "366":
        pass


def flood(p: Proc) -> tuple[list[Recorder], threading.Event, list[threading.Thread]]:
    """A receiver and SENDERS echoing senders in ROOM, the senders writing as fast as the
    server reads.  Returns the recorders (receiver first), the stop flag and the threads."""
    receiver = p.client("receiver", "message-tags")
    join(receiver, ROOM)
    senders = []
    for i in range(SENDERS):
        s = p.client(f"sender{i}", "message-tags echo-message")
        join(s, ROOM)
        senders.append(s)
    recorders = [Recorder(receiver)] + [Recorder(s) for s in senders]
    stop = threading.Event()

    def send(i: int, c: LineClient) -> None:
        k = 0
        try:
            while not stop.is_set():
                c.sock.sendall(b"".join(f"PRIVMSG {ROOM} :s{i}-{k + j}\r\n".encode()
                                        for j in range(20)))
                k += 20
        except OSError:
            pass  # the server went away mid-flood, as it should

    threads = [threading.Thread(target=send, args=(i, c), daemon=True)
               for i, c in enumerate(senders)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while recorders[0].privmsgs < 1500:  # well into the flood
        assert time.monotonic() < deadline, "the flood never got going"
        time.sleep(0.005)
    return recorders, stop, threads


def everything(p: Proc) -> list[tuple[str, str, str]]:
    """(msgid, time, text) of every PRIVMSG stored for ROOM, oldest first, paging back
    from LATEST with BEFORE until an empty batch."""
    c = p.client("auditor", "batch draft/chathistory message-tags server-time")
    join(c, ROOM)
    pages: list[list[tuple[str, str, str]]] = []
    command = f"CHATHISTORY LATEST {ROOM} * 500"
    while True:
        c.send(command)
        first = P.parse(c.recv_line(), limits=False)
        assert first.command == "BATCH" and first.params[1:] == ("chathistory", ROOM), first
        ref = first.params[0][1:]
        page = []
        while True:
            m = P.parse(c.recv_line(), limits=False)
            if m.command == "BATCH":
                assert m.params == ("-" + ref,), m
                break
            assert m.tags["batch"] == ref and m.command == "PRIVMSG", m
            page.append((m.tags["msgid"], m.tags["time"], m.params[1]))
        if not page:
            break
        assert len(page) <= 500
        pages.append(page)
        command = f"CHATHISTORY BEFORE {ROOM} msgid={page[0][0]} 500"
        assert len(pages) < 200, "paging does not end"
    c.close()
    rows = [row for page in reversed(pages) for row in page]
    times = [t for _, t, _ in rows]
    assert times == sorted(times), "history in ascending order, pages included"
    assert len({m for m, _, _ in rows}) == len(rows), "each event once"
    return rows


def check(rows: list[tuple[str, str, str]], recorders: list[Recorder]) -> int:
    """Every message anyone received is stored, with its text; each sender's stored lines
    are an unbroken run from its first line (nothing lost in the middle).  Returns how many
    were received."""
    texts = {m: text for m, _, text in rows}
    got: dict[str, str] = {}
    for r in recorders:
        got.update(r.received())
    missing = {m: t for m, t in got.items() if m not in texts}
    assert not missing, f"{len(missing)} received but not stored, e.g. {list(missing.items())[:5]}"
    assert all(texts[m] == t for m, t in got.items())
    per_sender: dict[int, list[int]] = {}
    for _, _, text in rows:
        match = TEXT_RE.match(text)
        assert match, text
        per_sender.setdefault(int(match.group(1)), []).append(int(match.group(2)))
    for i, ks in per_sender.items():
        assert ks == list(range(len(ks))), f"sender{i}: a gap in its stored lines"
    return len(got)


def finish(recorders: list[Recorder], stop: threading.Event,
           threads: list[threading.Thread]) -> None:
    stop.set()
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    for r in recorders:
        r.thread.join(15)
        assert not r.thread.is_alive()
        r.c.close()


def test_kill_9_mid_flood_loses_nothing_anyone_received(tmp_path: Path) -> None:
    data = tmp_path / "data"
    p = Proc(data)
    try:
        recorders, stop, threads = flood(p)
        p.proc.send_signal(signal.SIGKILL)
        assert p.proc.wait(10) == -signal.SIGKILL
        finish(recorders, stop, threads)
    finally:
        p.stop()
    again = Proc(data)
    try:
        rows = everything(again)
        n = check(rows, recorders)
        assert n >= 1500
        # The restarted server's ids and times go on after the stored ones.
        c = again.client("later", "message-tags echo-message")
        join(c, ROOM)
        c.send(f"PRIVMSG {ROOM} :after the crash")
        m = P.parse(c.recv_line(), limits=False)
        assert m.command == "PRIVMSG" and m.params[1] == "after the crash", m
        assert m.tags["msgid"] not in {x for x, _, _ in rows}
        assert m.tags["time"] > rows[-1][1]
        c.close()
    finally:
        again.proc.send_signal(signal.SIGTERM)
        assert again.proc.wait(10) == 0
        again.stop()
    assert "Traceback" not in "".join(p.log + again.log)


def test_sigterm_mid_flood_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    p = Proc(data)
    try:
        recorders, stop, threads = flood(p)
        t0 = time.monotonic()
        p.proc.send_signal(signal.SIGTERM)
        assert p.proc.wait(10) == 0
        assert time.monotonic() - t0 < 5
        finish(recorders, stop, threads)
    finally:
        p.stop()
    # The receiver was told, after the last message it got.  (Not checked for the senders:
    # a socket closed with their unread lines in it is reset, and a reset may discard what
    # had not been read yet on their side.)
    for r in recorders[:1]:
        assert bytes(r.data).endswith(b"ERROR :Closing Link: 127.0.0.1 (Server shutting down)"
                                      b"\r\n"), bytes(r.data)[-200:]
    again = Proc(data)
    try:
        rows = everything(again)
        assert check(rows, recorders) >= 1500
        # A clean stop commits what it accepted: each sender's last echo is stored, and so
        # is everything it sent before that (check() saw no gaps).
        for i, r in enumerate(recorders[1:]):
            mine = [t for t in r.received().values() if t.startswith(f"s{i}-")]
            assert mine and mine[-1] in {text for _, _, text in rows}
    finally:
        again.proc.send_signal(signal.SIGTERM)
        assert again.proc.wait(10) == 0
        again.stop()
    assert "Traceback" not in "".join(p.log + again.log)


def test_the_data_dir_is_where_the_history_is(tmp_path: Path) -> None:
    """Two data directories are two histories: a restart on another one starts empty."""
    first, second = tmp_path / "one", tmp_path / "two"
    p = Proc(first)
    try:
        c = p.client("writer", "message-tags echo-message")
        join(c, ROOM)
        c.send(f"PRIVMSG {ROOM} :s0-0")
        assert P.parse(c.recv_line(), limits=False).command == "PRIVMSG"
        c.close()
        p.proc.send_signal(signal.SIGTERM)
        assert p.proc.wait(10) == 0
    finally:
        p.stop()
    q = Proc(second)
    try:
        assert everything(q) == []
    finally:
        q.proc.send_signal(signal.SIGTERM)
        q.proc.wait(10)
        q.stop()
    r = Proc(first)
    try:
        assert [text for _, _, text in everything(r)] == ["s0-0"]
    finally:
        r.proc.send_signal(signal.SIGTERM)
        r.proc.wait(10)
        r.stop()

