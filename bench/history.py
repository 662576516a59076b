"""History at scale: fill one room with a million messages, then time CHATHISTORY BEFORE.

    python -m bench.history                          # 1,000,000 messages, 1,000 requests
    python -m bench.history --messages 20000 --requests 100 --json out.json
    python -m bench.history --data-dir /tmp/hist --keep       # keep the filled directory
    python -m bench.history --data-dir /tmp/hist --reuse      # query it again, no fill

Three phases, each against a real server process (``server.py``, started by
bench/servers.py, pinned to core 0 with ``taskset -c 0``; this process pins itself to
core 1), over real loopback sockets:

1. **Fill.**  The server runs on an empty data directory.  ``--senders`` clients join
   ``#history`` and flood it (flood control is off) with ``--messages`` PRIVMSGs of
   chat-like text (lengths drawn from a log-normal distribution, median about 40 bytes),
   while one more member reads everything.  The senders keep at most ``--window``
   messages that the reader has not yet received in flight, so nobody's send queue
   overflows.  Every row in the store is one the server itself wrote.  The server is then
   stopped with SIGTERM (a clean stop commits and checkpoints; SQLite removes the -wal
   file on the last close), and the data directory is measured: bytes on disk per stored
   event, average stored line length.
2. **Restart.**  A new server process on the same data directory (how long it takes to
   listen is reported).  The file was just written, so the OS page cache holds it (warm);
   SQLite's own page caches, in the new process, start empty.
3. **Query.**  One client negotiates ``batch server-time message-tags draft/chathistory``,
   joins the room and sends ``CHATHISTORY BEFORE #history msgid=<id> <limit>`` one at a
   time for ``--requests`` stored msgids drawn uniformly from the whole room (read from
   the database while the server was down), timing each from the send until the line
   closing the batch (``BATCH -ref``) has arrived.  Every answer is checked: exactly the
   ``limit`` messages stored before that msgid, in order (their msgids are compared).
   Then the extremes: the oldest page, before the oldest message (an empty batch), before
   the newest, and ``LATEST *``; and ``--cold`` requests each made right after evicting
   the database file from the OS page cache (``posix_fadvise(DONTNEED)``, this file only).

Every loop is bounded by a count and a deadline; only processes started here are
stopped, by pid.  The report is a table on stdout and, with ``--json``, everything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import shutil
import socket
import sqlite3
import sys
import tempfile
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procstat, servers
from bench.ircclient import JOIN_ERRORS, REGISTRATION_ERRORS

ROOM = "#history"
MARKER = b" PRIVMSG " + ROOM.encode() + b" :"
DB_NAME = "chat.sqlite3"  # chatroom/history.py DB_NAME
CAPS = "batch server-time message-tags draft/chathistory"
SERVER_CORE, CLIENT_CORE = 0, 1
NICKS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
MSGID_RE = re.compile(rb"(?:^@|;)msgid=([0-9a-f]+)")
REFUSALS = REGISTRATION_ERRORS | JOIN_ERRORS


# --- text -------------------------------------------------------------------------------


def chat_texts(count: int, seed: int) -> list[bytes]:
    """``count`` chat-like message texts: pronounceable words, a capital and a full stop
    now and then, lengths log-normal with a median of 40 bytes (1-400)."""
    rng = random.Random(seed)
    onsets = ["", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t",
              "v", "w", "th", "st", "ch", "sh", "br", "tr"]
    vowels = ["a", "e", "i", "o", "u", "ee", "ou", "ai"]
    codas = ["", "", "", "n", "s", "t", "r", "ng", "ck", "ll"]
    out: list[bytes] = []
    for _ in range(count):
        target = max(1, min(400, round(rng.lognormvariate(math.log(40), 0.8))))
        words: list[str] = []
        size = -1
        while size < target:
            word = "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
                           for _ in range(rng.choice((1, 1, 1, 2, 2, 3))))
            words.append(word)
            size += len(word) + 1
        text = " ".join(words)[:target]
        if rng.random() < 0.3:
            text = text[:1].upper() + text[1:]
        if rng.random() < 0.2 and len(text) < 400:
            text += rng.choice(".?!")
        out.append(text.strip().encode() or b"k")
    return out


# --- phase 1: the fill --------------------------------------------------------------------


@dataclass
class Progress:
    """What the flood has done so far (one event loop, so no locks)."""

    total: int
    sent: int = 0
    received: int = 0  # by the reader
    text_bytes: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    last_change: float = field(default_factory=time.monotonic)


class FloodClient(asyncio.Protocol):
    """A member of the room: registers, joins, answers PING, counts or ignores the rest."""

    def __init__(self, nick: str, loop: asyncio.AbstractEventLoop,
                 progress: Progress | None) -> None:
        self.nick = nick
        self.progress = progress  # set for the reader: it counts the room's messages
        self.transport: asyncio.Transport | None = None
        self.registered: asyncio.Future[None] = loop.create_future()
        self.joined: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[str] = loop.create_future()
        self._buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        why = str(exc) if exc else "closed by the server"
        if not self.closed.done():
            self.closed.set_result(why)
        for fut in (self.registered, self.joined):
            if not fut.done():
                fut.set_exception(ConnectionError(f"{self.nick}: {why}"))

    def data_received(self, data: bytes) -> None:
        data = self._buf + data
        cut = data.rfind(b"\n") + 1
        block, self._buf = data[:cut], data[cut:]
        if len(self._buf) > 65536:
            self.send(b"QUIT :no newline in 64 KiB\r\n")
        if not block:
            return
        if self.progress is not None:
            n = block.count(MARKER)
            if n:
                self.progress.received += n
                self.progress.last_change = time.monotonic()
                self.progress.changed.set()
        if self.joined.done() and b"PING " not in block and b"ERROR " not in block:
            return
        for line in block.split(b"\r\n"):
            self._on_line(line)

    def _on_line(self, line: bytes) -> None:
        parts = line.split(b" ", 2)
        if parts[0] == b"PING":
            self.send(b"PONG " + (parts[1] if len(parts) > 1 else b"x") + b"\r\n")
        elif parts[0] == b"ERROR":
            if not self.closed.done():
                self.closed.set_result(line.decode(errors="replace"))
        elif len(parts) > 1 and parts[1] == b"001" and not self.registered.done():
            self.registered.set_result(None)
        elif len(parts) > 1 and parts[1] == b"366" and not self.joined.done():
            self.joined.set_result(None)
        elif len(parts) > 1 and parts[1] in REFUSALS and not self.joined.done():
            err = ConnectionError(f"{self.nick}: {line.decode(errors='replace')}")
            for fut in (self.registered, self.joined):
                if not fut.done():
                    fut.set_exception(err)
                    break

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


async def flood_member(port: int, nick: str, progress: Progress | None,
                       timeout: float) -> FloodClient:
    loop = asyncio.get_running_loop()
    client = FloodClient(nick, loop, progress)
    await asyncio.wait_for(loop.create_connection(lambda: client, "127.0.0.1", port), timeout)
    client.send(f"NICK {nick}\r\nUSER {nick} 0 * :{nick.title()}\r\n".encode())
    await asyncio.wait_for(client.registered, timeout)
    client.send(f"JOIN {ROOM}\r\n".encode())
    await asyncio.wait_for(client.joined, timeout)
    return client


async def send_flood(client: FloodClient, quota: int, first: int, stride: int,
                     lines: Sequence[bytes], texts: Sequence[int], progress: Progress,
                     window: int, burst: int, deadline: float, timeout: float) -> None:
    """``quota`` messages, taking lines[first], lines[first + stride], ... (cycling), never
    more than ``window`` sent and not yet read by the reader (all senders together)."""
    k = first
    done = 0
    while done < quota:
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"fill deadline reached with {progress.received:,} read")
        if now - progress.last_change > timeout:
            raise TimeoutError(f"no progress for {timeout:.0f} s "
                               f"({progress.received:,} read)")
        if client.closed.done():
            raise ConnectionError(f"{client.nick}: {client.closed.result()}")
        allowed = min(burst, quota - done, window - (progress.sent - progress.received))
        if allowed <= 0:
            progress.changed.clear()
            try:
                await asyncio.wait_for(progress.changed.wait(), 1.0)
            except TimeoutError:
                pass
            continue
        picks = [(k + i * stride) % len(lines) for i in range(allowed)]
        client.send(b"".join(lines[p] for p in picks))
        progress.text_bytes += sum(texts[p] for p in picks)
        k += allowed * stride
        done += allowed
        progress.sent += allowed
        await asyncio.sleep(0)  # let the reader's data in between bursts


async def fill_room(port: int, total: int, senders: int, window: int, seed: int,
                    deadline_s: float, timeout: float) -> dict[str, Any]:
    """Join ``senders`` senders and one reader to the room; flood ``total`` messages."""
    texts = chat_texts(min(total, 65536), seed)
    lines = [b"PRIVMSG " + ROOM.encode() + b" :" + t + b"\r\n" for t in texts]
    sizes = [len(t) for t in texts]
    progress = Progress(total)
    reader = await flood_member(port, "reader", progress, timeout)
    members = [await flood_member(port, NICKS[i % len(NICKS)] + (str(i // len(NICKS)) if
                                  i >= len(NICKS) else ""), None, timeout)
               for i in range(senders)]
    t0 = time.monotonic()
    deadline = t0 + deadline_s
    quotas = [total // senders + (1 if i < total % senders else 0) for i in range(senders)]
    tasks = [asyncio.create_task(send_flood(c, quotas[i], i, senders, lines, sizes, progress,
                                            window, 200, deadline, timeout))
             for i, c in enumerate(members)]
    try:
        await asyncio.gather(*tasks)
        while progress.received < total:
            if time.monotonic() > deadline or time.monotonic() - progress.last_change > timeout:
                raise TimeoutError(f"the reader got {progress.received:,} of {total:,}")
            if reader.closed.done():
                raise ConnectionError(f"reader: {reader.closed.result()}")
            progress.changed.clear()
            try:
                await asyncio.wait_for(progress.changed.wait(), 1.0)
            except TimeoutError:
                pass
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = time.monotonic() - t0
    for c in [reader, *members]:
        c.send(b"QUIT :filled\r\n")
    await asyncio.sleep(0.2)
    for c in [reader, *members]:
        if c.transport is not None:
            c.transport.close()
    return {"messages": total, "senders": senders, "window": window,
            "seconds": round(elapsed, 2), "messages_per_s": round(total / elapsed),
            "avg_text_bytes": round(progress.text_bytes / total, 1),
            "reader_got": progress.received}


# --- the data directory ---------------------------------------------------------------------


def file_sizes(data_dir: Path) -> dict[str, int]:
    """Bytes of the database, its -wal and its -shm (0 when absent)."""
    out: dict[str, int] = {}
    for suffix in ("", "-wal", "-shm"):
        try:
            out[DB_NAME + suffix] = (data_dir / (DB_NAME + suffix)).stat().st_size
        except FileNotFoundError:
            out[DB_NAME + suffix] = 0
    return out


def inspect_store(data_dir: Path) -> tuple[dict[str, Any], array[int]]:
    """With the server stopped: what the store holds, and the room's message times (ms,
    ascending), from which the requests' msgids are drawn."""
    db = sqlite3.connect(str(data_dir / DB_NAME))
    try:
        q = db.execute
        events, line_bytes, tag_bytes = q("SELECT count(*), sum(length(line)), "
                                          "coalesce(sum(length(tags)), 0) FROM events").fetchone()
        room = ROOM.lower()
        messages, avg_line = q("SELECT count(*), avg(length(line)) FROM events "
                               "WHERE target = ? AND message = 1", (room,)).fetchone()
        stats = {
            "events": events,
            "room_messages": messages,
            "other_events": events - messages,
            "avg_line_bytes": round(avg_line or 0, 1),  # CRLF included, as stored
            "avg_event_payload_bytes": round((line_bytes + tag_bytes) / max(events, 1), 1),
            "page_size": q("PRAGMA page_size").fetchone()[0],
            "page_count": q("PRAGMA page_count").fetchone()[0],
            "freelist_count": q("PRAGMA freelist_count").fetchone()[0],
            "journal_mode": q("PRAGMA journal_mode").fetchone()[0],
            "sample_line": q("SELECT line FROM events WHERE target = ? AND message = 1 "
                             "ORDER BY ms LIMIT 1", (room,)).fetchone()[0].decode(),
        }
        times = array("q")
        for (ms,) in q("SELECT ms FROM events WHERE target = ? AND message = 1 ORDER BY ms",
                       (room,)):
            times.append(ms)
    finally:
        db.close()
    if times:
        stats["first_ms"], stats["last_ms"] = times[0], times[-1]
        stats["span_s"] = round((times[-1] - times[0]) / 1000, 1)
    return stats, times


def evict_from_page_cache(path: Path) -> bool:
    """Drop this one file's clean pages from the OS page cache (nothing else)."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


# --- phase 3: the queries -------------------------------------------------------------------


class HistoryClient:
    """A blocking IRC client with the history capabilities, for one request at a time."""

    def __init__(self, port: int, nick: str, timeout: float) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.nick = nick
        self.buf = bytearray()
        self.isupport: dict[str, str] = {}

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\r\n")

    def _lines(self) -> list[bytes]:
        cut = self.buf.rfind(b"\n") + 1
        block = bytes(self.buf[:cut])
        del self.buf[:cut]
        return [line for line in block.split(b"\r\n") if line]

    def _recv(self) -> None:
        chunk = self.sock.recv(1 << 18)
        if not chunk:
            raise ConnectionError("closed by the server")
        self.buf += chunk

    def wait_for(self, numeric: bytes | set[bytes], deadline: float) -> list[bytes]:
        """Read lines until one whose command is ``numeric`` (or one of them); answer PINGs
        on the way; raise on ERROR or an error numeric."""
        wanted = {numeric} if isinstance(numeric, bytes) else numeric
        seen: list[bytes] = []
        while time.monotonic() < deadline:
            self._recv()
            for line in self._lines():
                seen.append(line)
                parts = line.split(b" ")
                if parts[0] == b"PING":
                    self.send("PONG " + parts[1].decode())
                cmd = parts[1] if parts[0][:1] in (b":", b"@") and len(parts) > 1 else parts[0]
                if parts[0][:1] == b"@" and len(parts) > 2:
                    cmd = parts[2]
                if cmd == b"ERROR" or cmd in REFUSALS:
                    raise ConnectionError(line.decode(errors="replace"))
                if cmd in wanted:
                    return seen
        raise TimeoutError(f"none of {sorted(wanted)} in time")

    def register_and_join(self, timeout: float) -> list[str]:
        """CAP LS, REQ the history caps, END; NICK/USER; JOIN.  The caps acknowledged."""
        end = time.monotonic() + timeout
        self.send("CAP LS 302")
        self.send(f"NICK {self.nick}")
        self.send(f"USER {self.nick} 0 * :History bench")
        for line in self.wait_for(b"CAP", end):
            if b" LS " in line and b"draft/chathistory" not in line:
                raise RuntimeError(f"the server does not offer draft/chathistory: {line!r}")
        self.send(f"CAP REQ :{CAPS}")
        acked = self.wait_for(b"CAP", end)[-1]
        if b" ACK " not in acked:
            raise RuntimeError(f"CAP REQ refused: {acked!r}")
        self.send("CAP END")
        for line in self.wait_for({b"376", b"422"}, end):  # end of MOTD, or no MOTD
            if b" 005 " in line:
                for token in line.split(b" :", 1)[0].split(b" ")[3:]:
                    key, _, value = token.decode().partition("=")
                    self.isupport[key] = value
        self.send(f"JOIN {ROOM}")
        self.wait_for(b"366", end)
        return acked.split(b":")[-1].decode().split()

    def request(self, text: str, deadline: float) -> tuple[int, list[bytes]]:
        """Send one request; return (nanoseconds until its batch closed, the lines)."""
        self.buf.clear()
        data = text.encode() + b"\r\n"
        t0 = time.perf_counter_ns()
        self.sock.sendall(data)
        scanned = 0
        while True:
            self._recv()
            i = self.buf.find(b" BATCH -", max(0, scanned - 8))
            if i < 0:
                i = self.buf.find(b" FAIL ", max(0, scanned - 8))
            if i >= 0 and self.buf.find(b"\n", i) >= 0:
                break
            scanned = len(self.buf)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no end of batch for {text!r}")
        t1 = time.perf_counter_ns()
        lines = self._lines()
        for line in lines:
            if line.startswith(b"PING"):
                self.send("PONG " + line.split(b" ")[1].decode())
        return t1 - t0, lines

    def close(self) -> None:
        try:
            self.send("QUIT :done")
        except OSError:
            pass
        self.sock.close()


def check_batch(lines: Sequence[bytes], expected: Sequence[int]) -> str | None:
    """Why this answer is wrong (None: right): one chathistory batch holding exactly the
    messages ``expected`` (ms, ascending), each in that batch, on the room."""
    opening = [ln for ln in lines if b" BATCH +" in ln]
    closing = [ln for ln in lines if b" BATCH -" in ln]
    if len(opening) != 1 or len(closing) != 1:
        return f"{len(opening)} batch openings, {len(closing)} closings: {lines[:2]!r}"
    words = opening[0].split(b" ")
    at = words.index(b"BATCH")
    ref = words[at + 1][1:]
    if words[at + 2:at + 4] != [b"chathistory", ROOM.encode()]:
        return f"not a chathistory batch on {ROOM}: {opening[0]!r}"
    if closing[0].split(b" ")[-1] != b"-" + ref:
        return f"closing {closing[0]!r} does not match +{ref.decode()}"
    body = [ln for ln in lines if b" BATCH " not in ln and not ln.startswith(b"PING")]
    got: list[int] = []
    for line in body:
        if not line.startswith(b"@batch=" + ref + b";") or MARKER not in line:
            return f"not a message of the batch: {line[:120]!r}"
        m = MSGID_RE.search(line.split(b" ", 1)[0])
        if m is None:
            return f"no msgid: {line[:120]!r}"
        got.append(int(m.group(1), 16))
    if got != list(expected):
        if len(got) != len(expected):
            return f"{len(got)} messages, expected {len(expected)}"
        wrong = next(i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b)
        return f"message {wrong} is {got[wrong]:x}, expected {expected[wrong]:x}"
    return None


def summary_ms(ns: Sequence[int]) -> dict[str, float | int | None]:
    values = sorted(ns)

    def pct(q: float) -> float | None:
        if not values:
            return None
        k = max(0, min(len(values) - 1, math.ceil(q / 100 * len(values)) - 1))
        return round(values[k] / 1e6, 3)

    return {"count": len(values), "p50": pct(50), "p90": pct(90), "p99": pct(99),
            "max": round(values[-1] / 1e6, 3) if values else None,
            "mean": round(sum(values) / len(values) / 1e6, 3) if values else None}


def run_queries(port: int, pid: int, times: array[int], db_path: Path, requests: int,
                limit: int, extremes: int, cold: int, seed: int, deadline_s: float,
                timeout: float) -> dict[str, Any]:
    """Phase 3 (see the module's docstring); every answer checked, every loop bounded."""
    if len(times) <= limit:
        raise ValueError(f"the room holds {len(times)} messages: need more than {limit}")
    deadline = time.monotonic() + deadline_s
    client = HistoryClient(port, "asker", timeout)
    out: dict[str, Any] = {"limit": limit, "failures": []}
    try:
        out["caps"] = client.register_and_join(timeout)
        out["isupport_chathistory"] = client.isupport.get("CHATHISTORY")
        rng = random.Random(seed)

        def timed(name: str, text: str, expected: Sequence[int]) -> int | None:
            ns, lines = client.request(text, min(deadline, time.monotonic() + timeout))
            why = check_batch(lines, expected)
            if why is not None:
                out["failures"].append(f"{name}: {text}: {why}")
                return None
            return ns

        def before(i: int) -> str:
            return f"CHATHISTORY BEFORE {ROOM} msgid={times[i]:x} {limit}"

        # The main loop: msgids uniform over the room (each with a full page before it).
        picks = [rng.randrange(limit, len(times)) for _ in range(requests)]
        cpu0 = procstat.cpu_seconds(pid)
        t0 = time.monotonic()
        main_ns: list[int] = []
        for i in picks:
            if time.monotonic() > deadline or len(out["failures"]) >= 10:
                out["failures"].append(f"stopped after {len(main_ns)} requests")
                break
            ns = timed("random", before(i), times[i - limit:i])
            if ns is not None:
                main_ns.append(ns)
        wall = time.monotonic() - t0
        cpu1 = procstat.cpu_seconds(pid)
        out["random"] = summary_ms(main_ns)
        out["random"]["requests_per_s"] = round(len(main_ns) / wall, 1) if wall else None
        out["random"]["picked_positions"] = {"min": min(picks), "max": max(picks),
                                             "of": len(times)}
        if cpu0 is not None and cpu1 is not None and main_ns:
            out["random"]["server_cpu_ms_per_request"] = round((cpu1 - cpu0) / len(main_ns)
                                                               * 1000, 3)
            out["random"]["server_cpu_util"] = round((cpu1 - cpu0) / wall, 3)
        # The extremes, ``extremes`` times each.
        n = len(times)
        cases: list[tuple[str, str, Sequence[int]]] = [
            ("oldest page", before(limit), times[:limit]),
            ("before the oldest (empty)", before(0), []),
            ("before the newest", before(n - 1), times[n - 1 - limit:n - 1]),
            ("LATEST *", f"CHATHISTORY LATEST {ROOM} * {limit}", times[n - limit:]),
        ]
        out["extremes"] = {}
        for name, text, expected in cases:
            got = [ns for _ in range(extremes) if time.monotonic() < deadline
                   and (ns := timed(name, text, expected)) is not None]
            out["extremes"][name] = {"request": text, **summary_ms(got)}
        # Cold: the file evicted from the OS page cache before each request.
        if cold:
            cold_ns: list[int] = []
            evicted = True
            for i in [rng.randrange(limit, len(times)) for _ in range(cold)]:
                if time.monotonic() > deadline:
                    break
                evicted = evict_from_page_cache(db_path) and evicted
                ns = timed("cold", before(i), times[i - limit:i])
                if ns is not None:
                    cold_ns.append(ns)
            out["cold"] = {**summary_ms(cold_ns), "evicted": evicted}
    finally:
        client.close()
    return out


# --- the whole run ----------------------------------------------------------------------------


def pin_self(core: int) -> str:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > core:
        os.sched_setaffinity(0, {core})
        return f"core {core}"
    return "not pinned"


def stop_cleanly(srv: servers.Running) -> float:
    """SIGTERM (SIGKILL after 5 s, by servers.Running.stop); seconds it took.  Raises if
    the server had to be killed: the store would not have been closed cleanly."""
    t0 = time.monotonic()
    srv.stop()
    if srv.proc.returncode not in (0, None):
        raise RuntimeError(f"{srv.name} exited with {srv.proc.returncode} on SIGTERM")
    return round(time.monotonic() - t0, 2)


def run(a: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"machine": {"nproc": os.cpu_count(), "client": pin_self(CLIENT_CORE),
                                          "server": f"taskset -c {SERVER_CORE}"},
                              "params": {k: v for k, v in vars(a).items() if k != "json"}}
    data_dir = Path(a.data_dir) if a.data_dir else Path(tempfile.mkdtemp(prefix="bench-history-"))
    made_here = not a.data_dir
    srv: servers.Running | None = None
    try:
        if not a.reuse:
            if (data_dir / DB_NAME).exists():
                raise RuntimeError(f"{data_dir} already holds a store (use --reuse)")
            srv = servers.start_ours(servers.free_port(), SERVER_CORE, data_dir=data_dir,
                                     name="ours-fill")
            print(f"fill: {a.messages:,} messages into {data_dir} (server pid {srv.pid})",
                  file=sys.stderr, flush=True)
            cpu0 = procstat.cpu_seconds(srv.pid)
            fill = asyncio.run(fill_room(srv.port, a.messages, a.senders, a.window, a.seed,
                                         a.fill_deadline, a.timeout))
            cpu1 = procstat.cpu_seconds(srv.pid)
            if cpu0 is not None and cpu1 is not None:
                fill["server_cpu_s"] = round(cpu1 - cpu0, 2)
            fill["files_while_running"] = file_sizes(data_dir)
            fill["stop_s"] = stop_cleanly(srv)
            srv = None
            result["fill"] = fill
            print(f"fill: {fill['seconds']} s, {fill['messages_per_s']:,} messages/s",
                  file=sys.stderr, flush=True)
        stats, times = inspect_store(data_dir)
        files = file_sizes(data_dir)
        disk = files[DB_NAME] + files[DB_NAME + "-wal"]
        stats["files_after_clean_stop"] = files
        stats["bytes_on_disk_per_event"] = round(disk / max(stats["events"], 1), 1)
        result["store"] = stats
        t0 = time.monotonic()
        srv = servers.start_ours(servers.free_port(), SERVER_CORE, data_dir=data_dir,
                                 name="ours-restarted")
        result["restart"] = {"seconds_to_listen": round(time.monotonic() - t0, 2),
                             "page_cache": "warm (file just written or read; the OS holds "
                                           "it); SQLite's caches empty (new process)",
                             "rss_kb": procstat.sample(srv.pid).rss_kb}
        print(f"query: server pid {srv.pid}, {len(times):,} messages in {ROOM}",
              file=sys.stderr, flush=True)
        result["query"] = run_queries(srv.port, srv.pid, times, data_dir / DB_NAME,
                                      a.requests, a.limit, a.extremes, a.cold, a.seed,
                                      a.query_deadline, a.timeout)
        result["query"]["server_alive"] = procstat.alive(srv.pid)
        result["query"]["rss_kb_after"] = procstat.sample(srv.pid).rss_kb
        stop_cleanly(srv)
        srv = None
        result["ok"] = not result["query"]["failures"]
    finally:
        if srv is not None:
            srv.stop()
        if made_here and not a.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
        elif data_dir.exists():
            result["data_dir_kept"] = str(data_dir)
    return result


def format_report(r: dict[str, Any]) -> str:
    def row(*cells: object) -> str:
        return "| " + " | ".join(str(c) for c in cells) + " |"

    q, st = r["query"], r["store"]
    lines = ["| measurement | value |", "|---|---|"]
    if "fill" in r:
        f = r["fill"]
        lines.append(row("fill", f"{f['messages']:,} messages from {f['senders']} senders in "
                         f"{f['seconds']} s ({f['messages_per_s']:,}/s)"))
    lines.append(row("stored events (room messages + others)",
                     f"{st['events']:,} ({st['room_messages']:,} + {st['other_events']:,})"))
    lines.append(row("average stored line (CRLF included)", f"{st['avg_line_bytes']} bytes"))
    if "fill" in r:
        lines.append(row("average message text", f"{r['fill']['avg_text_bytes']} bytes"))
    files = st["files_after_clean_stop"]
    lines.append(row("on disk after a clean stop", f"{files[DB_NAME]:,} B + -wal "
                     f"{files[DB_NAME + '-wal']:,} B"))
    lines.append(row("bytes on disk per stored event", st["bytes_on_disk_per_event"]))
    lines.append(row("restart: seconds until it listens", r["restart"]["seconds_to_listen"]))
    rnd = q["random"]
    lines.append(row(f"BEFORE msgid {q['limit']}, {rnd['count']} random: p50 / p99 / max ms",
                     f"{rnd['p50']} / {rnd['p99']} / {rnd['max']}"))
    lines.append(row("... requests/s (one at a time)", rnd.get("requests_per_s")))
    lines.append(row("... server CPU ms per request", rnd.get("server_cpu_ms_per_request")))
    for name, e in q["extremes"].items():
        lines.append(row(f"{name}, {e['count']}x: p50 / max ms", f"{e['p50']} / {e['max']}"))
    if "cold" in q:
        c = q["cold"]
        lines.append(row(f"cold (file evicted before each), {c['count']}x: p50 / p99 / max ms",
                         f"{c['p50']} / {c['p99']} / {c['max']}"))
    lines.append(row("answers checked", "all right" if not q["failures"]
                     else "; ".join(q["failures"][:3])))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=1_000_000, help="messages to fill with")
    p.add_argument("--senders", type=int, default=4, help="clients flooding the room")
    p.add_argument("--window", type=int, default=1000,
                   help="messages in flight that the reader has not got (all senders)")
    p.add_argument("--requests", type=int, default=1000, help="random BEFORE requests")
    p.add_argument("--limit", type=int, default=100, help="messages per request")
    p.add_argument("--extremes", type=int, default=20, help="requests at each extreme")
    p.add_argument("--cold", type=int, default=100,
                   help="requests each after evicting the file from the page cache (0: none)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--data-dir", help="the data directory (default: a temporary one, removed)")
    p.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    p.add_argument("--reuse", action="store_true", help="--data-dir is filled: skip the fill")
    p.add_argument("--fill-deadline", type=float, default=900.0, help="seconds for the fill")
    p.add_argument("--query-deadline", type=float, default=300.0,
                   help="seconds for all the requests")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds one step may take")
    p.add_argument("--json", metavar="FILE", help="write everything here")
    a = p.parse_args(argv)
    if a.reuse and not a.data_dir:
        p.error("--reuse needs --data-dir")
    if a.senders < 1 or a.messages <= a.limit or a.limit < 1:
        p.error("need senders >= 1 and messages > limit >= 1")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    result = run(a)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    print(format_report(result))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
