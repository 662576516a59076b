"""Accounts under load: SASL PLAIN login latency, failed logins, and a login storm during chat.

    python -m bench.login                              # 200 logins, a storm of 50
    python -m bench.login --logins 20 --storm 10 --json out.json
    python -m bench.login --logins 5 --failures 2 --unknown 1 --storm 4 --members 3 \\
        --idle 1 --after 0.5                           # a smoke run, a few seconds

Everything runs against the real server (``server.py``, started by bench/servers.py with
``--no-flood-control``, on a free 127.0.0.1 port, pinned to core 0 with ``taskset -c 0``;
this process pins itself to core 1), with the server's **default scrypt parameters**
(``ln=14,r=8,p=1``: nothing is passed to lower them).

0. **Accounts.**  Before any server runs, ``--storm`` accounts ``u000``... and
   ``--failures`` accounts ``bad00``... are made with the admin command line,
   ``python server.py account add NAME --data-dir DIR``, the password on stdin (how long
   each took is reported).  Every stored hash is checked to carry the default parameters.
1. **Logins, one at a time** (a fresh server on that data directory).  ``--warmup`` logins
   that are not counted, then ``--logins`` full SASL PLAIN logins, cycling over the
   ``u...`` accounts, each on a fresh connection: connect; ``CAP REQ :sasl``, ``NICK``,
   ``USER`` (pipelined); the ``CAP ACK``; ``AUTHENTICATE PLAIN``; ``AUTHENTICATE +``; the
   base64 response; ``903``.  Then ``CAP END`` and ``001``, then ``QUIT``.  Reported:
   connect -> 903 (the login), response -> 903 (the server's check, mostly one hash) and
   connect -> 001.  Then failed logins, each on a fresh connection and for an account
   nobody else tried, so neither the per-connection nor the per-account throttle (the
   first 3 failures are free) comes into it: ``--failures`` wrong passwords for the
   ``bad..`` accounts and ``--unknown`` names with no account (the server hashes for
   those too).  A ``904`` that says "too many failed attempts" is counted as a failure of
   the benchmark.  One scrypt hash with the same parameters, timed in this process on
   core 1, is the yardstick.
2. **The storm** (another fresh server on the same data directory, so phase 1 left
   nothing in its memory).  ``--members`` idle members and ``--senders`` senders join
   ``#storm``; ``--storm`` more connections get as far as ``AUTHENTICATE +`` and wait.  The
   senders then chat at ``--rate`` messages/s each (a fixed schedule, the send time in the
   message) and everybody else in the room times each delivery.  After ``--warmup-s``
   seconds of warm-up and ``--idle`` seconds of "idle" chat, all the waiting connections
   send their AUTHENTICATE response at once (one loop of non-blocking writes), and the
   storm lasts until the last verdict (903).  Chat goes on ``--after`` seconds more.
   Deliveries are classed by their send time: idle (the ``--idle`` seconds before the
   storm), storm (from the first response to the last 903), after.  The server's VmRSS
   (``/proc/PID/status``) is sampled every ``--sample`` seconds throughout; VmHWM (the
   kernel's own peak) is read before the storm and after it.

Only processes started here are stopped, by pid.  Every loop is bounded by a count and a
deadline.  The report is a table on stdout and, with ``--json``, everything.  The exit
status is 1 if anything went wrong (a login not accepted, a throttled failure, a lost chat
message); the issue's targets (storm chat p99 within 2x idle, memory within +100 MB) are
reported, not enforced.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procstat, servers
from bench.history import pin_self, summary_ms

SERVER_CORE, CLIENT_CORE = 0, 1
DB_NAME = "chat.sqlite3"  # chatroom/accounts.py DB_NAME
DEFAULT_SCRYPT = "ln=14,r=8,p=1"  # chatroom/accounts.py ScryptParams(), the server's default
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1
ROOM = "#storm"
CHAT_RE = re.compile(rb" PRIVMSG #storm :s(\d+) (\d+) (\d+)")
VERDICTS = {b"902", b"903", b"904", b"905", b"906", b"907"}
THROTTLED = b"too many failed attempts"
MAX_LINES = 1_000_000  # lines one connection may read in one wait or read loop
MB = 1024.0  # KB per MB (VmRSS is in KiB)


# --- a small line client --------------------------------------------------------------------


class ConnError(Exception):
    """The server closed, refused, or did not answer in time."""


def now_ns() -> int:
    return time.perf_counter_ns()


def code_of(line: bytes) -> bytes:
    """The command or numeric of a line from the server (b"" if there is none)."""
    words = line.split(b" ", 2)
    if line.startswith(b":"):
        return words[1] if len(words) > 1 else b""
    return words[0]


class Conn:
    """One connection: send lines, wait for a line that matches, answer PING meanwhile."""

    def __init__(self, name: str, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.name = name
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, name: str, timeout: float) -> Conn:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), timeout)
        except (TimeoutError, OSError) as exc:
            raise ConnError(f"{name}: connect: {exc!r}") from None
        return cls(name, reader, writer)

    def send(self, *lines: str) -> None:
        self.writer.write("".join(line + "\r\n" for line in lines).encode())

    async def line(self, deadline: float) -> bytes:
        """The next line (without CRLF); PINGs are answered and returned too."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ConnError(f"{self.name}: timed out")
        try:
            raw = await asyncio.wait_for(self.reader.readline(), remaining)
        except TimeoutError:
            raise ConnError(f"{self.name}: timed out") from None
        except (OSError, ValueError) as exc:
            raise ConnError(f"{self.name}: {exc!r}") from None
        if not raw.endswith(b"\n"):
            raise ConnError(f"{self.name}: connection closed")
        line = raw.rstrip(b"\r\n")
        if line.startswith(b"PING"):
            self.writer.write(b"PONG" + line[4:] + b"\r\n")
        return line

    async def until(self, pred: Callable[[bytes], bool], deadline: float) -> list[bytes]:
        """Lines up to and including the first one ``pred`` accepts; an ERROR line or a
        refusal of registration ends the wait with :class:`ConnError`."""
        lines: list[bytes] = []
        for _ in range(MAX_LINES):
            line = await self.line(deadline)
            lines.append(line)
            if pred(line):
                return lines
            if line.startswith(b"ERROR") or code_of(line) in (b"432", b"433", b"465"):
                raise ConnError(f"{self.name}: {line[:200]!r}")
        raise ConnError(f"{self.name}: no end after {MAX_LINES} lines")

    async def quit(self, timeout: float = 5.0) -> None:
        """QUIT, wait (bounded) for the server to close, close our end."""
        try:
            self.send("QUIT :done")
            await asyncio.wait_for(self._drain_to_eof(), timeout)
        except (TimeoutError, OSError, ConnError):
            pass
        finally:
            self.writer.close()

    async def _drain_to_eof(self) -> None:
        for _ in range(MAX_LINES):
            if not await self.reader.read(65536):
                return

    def abort(self) -> None:
        self.writer.close()


def is_code(*codes: bytes) -> Callable[[bytes], bool]:
    wanted = set(codes)
    return lambda line: code_of(line) in wanted


def plain_response(account: str, password: str) -> str:
    """``AUTHENTICATE <base64(\\0account\\0password)>`` (under 400 bytes here)."""
    blob = base64.b64encode(f"\0{account}\0{password}".encode()).decode()
    if len(blob) >= 400:
        raise ValueError("password too long for one AUTHENTICATE chunk")
    return "AUTHENTICATE " + blob


async def start_sasl(port: int, nick: str, timeout: float) -> tuple[Conn, int]:
    """Connect and get to ``AUTHENTICATE +``; the connection and the connect time (ns)."""
    t0 = now_ns()
    deadline = time.monotonic() + timeout
    c = await Conn.open(port, nick, timeout)
    try:
        c.send("CAP REQ :sasl", f"NICK {nick}", f"USER {nick} 0 * :bench {nick}")
        ack = (await c.until(is_code(b"CAP"), deadline))[-1]
        if b" ACK " not in ack:
            raise ConnError(f"{nick}: sasl not acknowledged: {ack!r}")
        c.send("AUTHENTICATE PLAIN")
        await c.until(lambda ln: ln == b"AUTHENTICATE +", deadline)
    except ConnError:
        c.abort()
        raise
    return c, t0


@dataclass
class Attempt:
    """One login: its verdict and times (ns, perf_counter)."""

    account: str
    code: str  # "903", "904", ... or "error"
    text: str = ""
    connect_ns: int = 0
    response_ns: int = 0  # the AUTHENTICATE response was written
    verdict_ns: int = 0
    welcome_ns: int = 0  # 001 (successful sequential logins only)


async def login_once(port: int, nick: str, account: str, password: str, timeout: float,
                     welcome: bool) -> Attempt:
    """One login on a fresh connection; with ``welcome``, on to 001 after a 903."""
    try:
        c, t0 = await start_sasl(port, nick, timeout)
    except ConnError as exc:
        return Attempt(account, "error", str(exc))
    a = Attempt(account, "error", connect_ns=t0)
    deadline = time.monotonic() + timeout
    try:
        line = plain_response(account, password)
        a.response_ns = now_ns()
        c.send(line)
        verdict = (await c.until(lambda ln: code_of(ln) in VERDICTS, deadline))[-1]
        a.verdict_ns = now_ns()
        a.code, a.text = code_of(verdict).decode(), verdict.decode(errors="replace")[:200]
        if welcome and a.code == "903":
            c.send("CAP END")
            await c.until(is_code(b"001"), deadline)
            a.welcome_ns = now_ns()
    except ConnError as exc:
        a.code, a.text = "error", str(exc)
    await c.quit()
    return a


# --- phase 0: accounts ------------------------------------------------------------------------


def create_accounts(data_dir: Path, names: Sequence[str], password: str, workers: int,
                    timeout: float) -> dict[str, Any]:
    """``python server.py account add NAME --data-dir DIR`` for each name, the password on
    stdin, ``workers`` at a time after the first; how long each took.  Raises if one
    fails."""
    def add(name: str) -> float:
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, str(servers.ROOT / "server.py"), "account",
                               "add", name, "--data-dir", str(data_dir)],
                              input=password + "\n", capture_output=True, text=True,
                              timeout=timeout, check=False, cwd=servers.ROOT)
        if proc.returncode != 0 or f"registered {name}" not in proc.stdout:
            raise RuntimeError(f"account add {name}: status {proc.returncode}: "
                               f"{(proc.stdout + proc.stderr).strip()[-300:]}")
        return time.monotonic() - t0

    t0 = time.monotonic()
    # The first one alone: it creates the database (two processes creating it at once were
    # seen to fail once with "database is locked").
    seconds = [add(name) for name in names[:1]]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        seconds += list(pool.map(add, names[1:]))
    ms = [round(s * 1000, 1) for s in sorted(seconds)]
    with sqlite3.connect(data_dir / DB_NAME) as db:
        hashes = [str(r[0]) for r in db.execute("SELECT hash FROM accounts")]
    params = sorted({h.split("$")[2] for h in hashes if h.count("$") >= 4})
    return {"command": "python server.py account add NAME --data-dir DIR (password on stdin)",
            "accounts": len(names), "stored": len(hashes), "stored_params": params,
            "workers": workers, "seconds": round(time.monotonic() - t0, 2),
            "per_account_ms": {"p50": ms[len(ms) // 2] if ms else None,
                               "max": ms[-1] if ms else None}}


def local_hash_ms(count: int) -> dict[str, float]:
    """One scrypt hash with the server's default parameters, timed here (core 1)."""
    times: list[float] = []
    for _ in range(max(1, count)):
        t0 = time.perf_counter()
        hashlib.scrypt(b"correct horse", salt=secrets.token_bytes(16), n=SCRYPT_N, r=SCRYPT_R,
                       p=SCRYPT_P, maxmem=128 * SCRYPT_R * (SCRYPT_N + SCRYPT_P + 2), dklen=32)
        times.append((time.perf_counter() - t0) * 1000)
    return {"count": len(times), "median_ms": round(statistics.median(times), 2),
            "min_ms": round(min(times), 2), "max_ms": round(max(times), 2)}


# --- phase 1: one at a time -------------------------------------------------------------------


def ms_between(attempts: Sequence[Attempt], start: str, end: str) -> list[int]:
    return [getattr(a, end) - getattr(a, start) for a in attempts
            if getattr(a, end) and getattr(a, start)]


async def sequential(port: int, pid: int, accounts: Sequence[str], bad: Sequence[str],
                     unknown: Sequence[str], password: str, logins: int, warmup: int,
                     timeout: float, deadline_s: float) -> dict[str, Any]:
    """Phase 1 (see the module's docstring)."""
    deadline = time.monotonic() + deadline_s
    out: dict[str, Any] = {"failures": []}

    async def run(kind: str, names: Sequence[str], pw: str, n: int, want: str,
                  welcome: bool) -> list[Attempt]:
        done: list[Attempt] = []
        for i in range(n):
            if time.monotonic() > deadline:
                out["failures"].append(f"{kind}: deadline after {len(done)} of {n}")
                break
            name = names[i % len(names)]
            nick = name if welcome else f"x{kind[:1]}{i}"
            a = await login_once(port, nick, name, pw, timeout, welcome)
            if a.code != want or THROTTLED.decode() in a.text:
                out["failures"].append(f"{kind} {name}: {a.code} {a.text}")
            done.append(a)
        return done

    await run("warmup", accounts, password, warmup, "903", True)
    cpu0, t0 = procstat.cpu_seconds(pid), time.monotonic()
    ok = await run("login", accounts, password, logins, "903", True)
    wall, cpu1 = time.monotonic() - t0, procstat.cpu_seconds(pid)
    good = [a for a in ok if a.code == "903"]
    out["login"] = {"connect_to_903": summary_ms(ms_between(good, "connect_ns", "verdict_ns")),
                    "response_to_903": summary_ms(ms_between(good, "response_ns",
                                                             "verdict_ns")),
                    "connect_to_001": summary_ms(ms_between(good, "connect_ns", "welcome_ns")),
                    "logins_per_s": round(len(good) / wall, 1) if wall else None,
                    "accounts_cycled": min(len(accounts), logins)}
    if cpu0 is not None and cpu1 is not None and good:
        out["login"]["server_cpu_ms_per_login"] = round((cpu1 - cpu0) / len(good) * 1000, 2)
    wrong = await run("wrong", bad, password + "-wrong", len(bad), "904", False)
    ghosts = await run("unknown", unknown, password, len(unknown), "904", False)
    for key, got in (("wrong_password", wrong), ("unknown_account", ghosts)):
        refused = [a for a in got if a.code == "904"]
        out[key] = {"connect_to_904": summary_ms(ms_between(refused, "connect_ns",
                                                            "verdict_ns")),
                    "response_to_904": summary_ms(ms_between(refused, "response_ns",
                                                             "verdict_ns")),
                    "throttled": sum(THROTTLED.decode() in a.text for a in got)}
    return out


# --- phase 2: the storm ----------------------------------------------------------------------


@dataclass
class Chat:
    """Every delivery of the room's chat: (send ns, receive ns); one event loop, no locks."""

    deliveries: list[tuple[int, int]] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    lost: int = 0  # a sequence number skipped (counted at the receiver)
    out_of_order: int = 0


def rss_kb(pid: int) -> tuple[int | None, int | None]:
    """VmRSS and VmHWM of ``pid`` in KiB (None if unreadable)."""
    got: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    got[line[:5]] = int(line.split()[1])
    except (OSError, ValueError):
        return None, None
    return got.get("VmRSS"), got.get("VmHWM")


async def join_room(port: int, nick: str, timeout: float) -> Conn:
    deadline = time.monotonic() + timeout
    c = await Conn.open(port, nick, timeout)
    try:
        c.send(f"NICK {nick}", f"USER {nick} 0 * :bench {nick}")
        await c.until(is_code(b"376", b"422"), deadline)
        c.send(f"JOIN {ROOM}")
        await c.until(is_code(b"366"), deadline)
    except ConnError:
        c.abort()
        raise
    return c


async def receive(c: Conn, chat: Chat, stop: asyncio.Event, deadline: float) -> None:
    """Time every chat line ``c`` gets until ``stop`` (or the deadline, or the end)."""
    expect: dict[int, int] = {}
    for _ in range(MAX_LINES):
        if stop.is_set():
            return
        try:
            line = await c.line(deadline)
        except ConnError:
            return
        t = now_ns()
        m = CHAT_RE.search(line)
        if m is None:
            continue
        sid, seq, sent = int(m.group(1)), int(m.group(2)), int(m.group(3))
        chat.deliveries.append((sent, t))
        nxt = expect.get(sid, 0)
        if seq > nxt:
            chat.lost += seq - nxt
        elif seq < nxt:
            chat.out_of_order += 1
        expect[sid] = max(nxt, seq + 1)


async def send_chat(c: Conn, sid: int, rate: float, start: float, stop: asyncio.Event,
                    max_messages: int, chat: Chat) -> None:
    """``rate`` messages/s on a fixed schedule (offset per sender) until ``stop``."""
    loop = asyncio.get_running_loop()
    period = 1.0 / rate
    for seq in range(max_messages):
        delay = start + (seq + sid / 2) * period - loop.time()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass
        if stop.is_set():
            return
        t = now_ns()
        c.send(f"PRIVMSG {ROOM} :s{sid} {seq} {t} how is everyone doing today")
        chat.sent.append(t)


async def sample_rss(pid: int, every: float, stop: asyncio.Event, deadline: float,
                     samples: list[tuple[int, int]]) -> None:
    for _ in range(int((deadline - time.monotonic()) / every) + 2):
        if stop.is_set() or time.monotonic() > deadline:
            return
        rss, _hwm = rss_kb(pid)
        if rss is not None:
            samples.append((now_ns(), rss))
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass


async def gather_bounded(coros: Sequence[Any], at_once: int) -> list[Any]:
    sem = asyncio.Semaphore(at_once)

    async def one(coro: Any) -> Any:
        async with sem:
            return await coro

    return list(await asyncio.gather(*(one(c) for c in coros), return_exceptions=True))


def window(chat: Chat, lo: int, hi: int) -> dict[str, float | int | None]:
    return summary_ms([r - s for s, r in chat.deliveries if lo <= s < hi])


async def storm(port: int, pid: int, accounts: Sequence[str], password: str,
                a: argparse.Namespace) -> dict[str, Any]:
    """Phase 2 (see the module's docstring)."""
    deadline = time.monotonic() + a.storm_deadline
    out: dict[str, Any] = {"failures": [], "rss_fresh_kb": rss_kb(pid)[0]}
    stop_chat, stop_all = asyncio.Event(), asyncio.Event()
    chat = Chat()
    room: list[Conn] = []
    waiting: list[Conn] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        nicks = [f"m{i}" for i in range(a.members)] + [f"s{i}" for i in range(a.senders)]
        joined = await gather_bounded([join_room(port, n, a.timeout) for n in nicks], 10)
        room += [c for c in joined if isinstance(c, Conn)]
        if len(room) < len(nicks):
            errors = [e for e in joined if not isinstance(e, Conn)]
            raise RuntimeError(f"joining {ROOM}: {errors[:3]}")
        senders = room[a.members:]
        prepared = await gather_bounded([start_sasl(port, name, a.timeout)
                                         for name in accounts], 10)
        waiting += [got[0] for got in prepared if isinstance(got, tuple)]
        if len(waiting) < len(accounts):
            raise RuntimeError("preparing the storm: "
                               f"{[e for e in prepared if not isinstance(e, tuple)][:3]}")
        await asyncio.sleep(0.3)  # the JOIN lines have been read
        for c in room:
            tasks.append(asyncio.create_task(receive(c, chat, stop_all, deadline)))
        samples: list[tuple[int, int]] = []
        tasks.append(asyncio.create_task(sample_rss(pid, a.sample, stop_all, deadline,
                                                    samples)))
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.05
        longest = a.warmup_s + a.idle + a.storm_deadline + a.after + 5
        for i, c in enumerate(senders):
            tasks.append(asyncio.create_task(send_chat(
                c, i, a.rate, start, stop_chat, int(longest * a.rate) + 1, chat)))
        await asyncio.sleep(0.05 + a.warmup_s)
        t_idle = now_ns()
        await asyncio.sleep(a.idle)

        # --- fire ---
        responses = [plain_response(name, password) for name in accounts]
        verdict_ns: list[int] = [0] * len(waiting)
        verdicts: list[str] = [""] * len(waiting)

        async def wait_verdict(i: int, c: Conn) -> None:
            try:
                line = (await c.until(lambda ln: code_of(ln) in VERDICTS, deadline))[-1]
                verdict_ns[i] = now_ns()
                verdicts[i] = line.decode(errors="replace")[:200]
            except ConnError as exc:
                verdicts[i] = f"error: {exc}"

        listeners = [asyncio.create_task(wait_verdict(i, c)) for i, c in enumerate(waiting)]
        rss_before, hwm_before = rss_kb(pid)
        cpu0 = procstat.cpu_seconds(pid)
        t_fire = now_ns()
        for c, line in zip(waiting, responses, strict=True):
            c.send(line)
        t_fired = now_ns()
        await asyncio.wait(listeners, timeout=max(0.1, deadline - time.monotonic()))
        t_end = max(verdict_ns) if all(verdict_ns) else now_ns()
        cpu1 = procstat.cpu_seconds(pid)
        rss_end, hwm_after = rss_kb(pid)
        await asyncio.sleep(a.after)
        t_after = now_ns()
        stop_chat.set()
        # Let the last messages arrive (bounded).
        for _ in range(40):
            if len(chat.deliveries) >= len(chat.sent) * (len(room) - 1):
                break
            await asyncio.sleep(0.05)
        stop_all.set()
        rss_last = rss_kb(pid)[0]

        # --- the numbers ---
        bad = [v for v in verdicts if code_of(v.encode()) != b"903"]
        if bad:
            out["failures"].append(f"storm: {len(bad)} logins not accepted: {bad[:3]}")
        per_login = sorted(v - t_fire for v in verdict_ns if v)
        idle_rss = [s for s in samples if t_idle <= s[0] < t_fire]
        peak = [s[1] for s in samples if t_fire <= s[0] <= t_end + 200_000_000]
        before_kb = int(statistics.median(s[1] for s in idle_rss)) if idle_rss else rss_before
        peak_kb = max([*peak, rss_end or 0])
        out["storm"] = {
            "logins": len(waiting), "accepted": len(waiting) - len(bad),
            "fire_spread_ms": round((t_fired - t_fire) / 1e6, 3),
            "duration_ms": round((t_end - t_fire) / 1e6, 1),
            "first_903_ms": round(per_login[0] / 1e6, 1) if per_login else None,
            "fire_to_903": summary_ms(per_login),
            "server_cpu_s": (round(cpu1 - cpu0, 2) if cpu0 is not None and cpu1 is not None
                             else None),
        }
        expected = len(chat.sent) * (len(room) - 1)
        out["chat"] = {
            "room": len(room), "senders": len(senders), "rate_per_sender": a.rate,
            "sent": len(chat.sent), "deliveries": len(chat.deliveries),
            "deliveries_expected": expected, "lost": chat.lost,
            "out_of_order": chat.out_of_order,
            "idle": window(chat, t_idle, t_fire), "storm": window(chat, t_fire, t_end),
            "after": window(chat, t_end, t_after),
            # The storm in four equal slices of its duration, by send time.
            "storm_quarters": [window(chat, t_fire + q * (t_end - t_fire) // 4,
                                      t_fire + (q + 1) * (t_end - t_fire) // 4)
                               for q in range(4)],
        }
        if len(chat.deliveries) != expected or chat.lost or chat.out_of_order:
            out["failures"].append(f"chat: {len(chat.deliveries)} of {expected} deliveries, "
                                   f"{chat.lost} lost, {chat.out_of_order} out of order")
        out["rss"] = {
            "samples": len(samples), "every_s": a.sample,
            "before_kb": before_kb, "at_fire_kb": rss_before, "peak_kb": peak_kb,
            "end_of_storm_kb": rss_end, "after_kb": rss_last,
            "peak_minus_before_mb": (round((peak_kb - before_kb) / MB, 1)
                                     if before_kb is not None else None),
            "hwm_before_kb": hwm_before, "hwm_after_kb": hwm_after,
        }
        idle_p99, storm_p99 = out["chat"]["idle"]["p99"], out["chat"]["storm"]["p99"]
        ratio = (round(storm_p99 / idle_p99, 2)
                 if isinstance(idle_p99, float) and isinstance(storm_p99, float) and idle_p99
                 else None)
        growth = out["rss"]["peak_minus_before_mb"]
        out["targets"] = {
            "chat_p99_storm_over_idle": ratio,
            "chat_p99_within_2x": ratio is not None and ratio <= 2.0,
            "memory_within_100mb": growth is not None and growth <= 100.0,
        }
    finally:
        stop_chat.set()
        stop_all.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await gather_bounded([c.quit(2.0) for c in waiting + room], 20)
    return out


# --- the whole run ---------------------------------------------------------------------------


def run(a: argparse.Namespace) -> dict[str, Any]:
    password = "bench-" + secrets.token_urlsafe(12)
    tmp = Path(tempfile.mkdtemp(prefix="bench-login-"))
    data_dir = tmp / "data"
    result: dict[str, Any] = {"params": {k: v for k, v in vars(a).items() if k != "json"},
                              "scrypt": DEFAULT_SCRYPT, "failures": []}
    storm_names = [f"u{i:03d}" for i in range(a.storm)]
    bad_names = [f"bad{i:02d}" for i in range(a.failures)]
    ghost_names = [f"ghost{i:02d}" for i in range(a.unknown)]
    srv: servers.Running | None = None
    try:
        print(f"accounts: {len(storm_names) + len(bad_names)} with the admin command line",
              file=sys.stderr, flush=True)
        made = create_accounts(data_dir, storm_names + bad_names, password, a.workers,
                               a.timeout)
        result["accounts"] = made
        if made["stored_params"] != [DEFAULT_SCRYPT]:
            result["failures"].append(f"stored hashes use {made['stored_params']}, not "
                                      f"{DEFAULT_SCRYPT}")
        result["machine"] = {"nproc": os.cpu_count(), "client": pin_self(CLIENT_CORE),
                             "server": f"taskset -c {SERVER_CORE}", "cpu": cpu_model()}
        result["local_hash"] = local_hash_ms(a.hashes)

        srv = servers.start_ours(servers.free_port(), SERVER_CORE, data_dir=data_dir,
                                 name="ours-login")
        result["server_command"] = " ".join(srv.proc.args if isinstance(srv.proc.args, list)
                                            else [str(srv.proc.args)])
        print(f"logins: {a.logins} one at a time (server pid {srv.pid})", file=sys.stderr,
              flush=True)
        rss0 = rss_kb(srv.pid)[0]
        seq = asyncio.run(sequential(srv.port, srv.pid, storm_names, bad_names, ghost_names,
                                     password, a.logins, a.warmup, a.timeout, a.deadline))
        seq["rss_kb"] = {"start": rss0, "end": rss_kb(srv.pid)[0], "hwm": rss_kb(srv.pid)[1]}
        seq["server_alive"] = procstat.alive(srv.pid)
        result["sequential"] = seq
        srv.stop()
        srv = None

        srv = servers.start_ours(servers.free_port(), SERVER_CORE, data_dir=data_dir,
                                 name="ours-storm")
        print(f"storm: {a.storm} logins at once, {a.members}+{a.senders} in {ROOM} "
              f"(server pid {srv.pid})", file=sys.stderr, flush=True)
        st = asyncio.run(storm(srv.port, srv.pid, storm_names, password, a))
        st["server_alive"] = procstat.alive(srv.pid)
        if "storm" in st:
            one = result["local_hash"]["median_ms"]
            st["storm"]["expected_ms"] = {"one_core": round(a.storm * one, 1),
                                          "two_slots_in_parallel": round(a.storm / 2 * one, 1)}
        result["storm"] = st
        tail = srv.log_tail(5)
        if tail.strip():
            result["server_log_tail"] = tail
        srv.stop()
        srv = None
        result["failures"] += seq["failures"] + st["failures"]
        if not (seq["server_alive"] and st["server_alive"]):
            result["failures"].append("the server died")
        result["ok"] = not result["failures"]
    finally:
        if srv is not None:
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def format_report(r: dict[str, Any]) -> str:
    def row(*cells: object) -> str:
        return "| " + " | ".join(str(c) for c in cells) + " |"

    def three(s: dict[str, Any]) -> str:
        return f"{s['p50']} / {s['p99']} / {s['max']}"

    lines = ["| measurement | value |", "|---|---|"]
    acc, hs = r["accounts"], r["local_hash"]
    lines.append(row("accounts made with `account add` (each, p50 / max)",
                     f"{acc['accounts']} in {acc['seconds']} s "
                     f"({acc['per_account_ms']['p50']} / {acc['per_account_ms']['max']} ms), "
                     f"stored as {', '.join(acc['stored_params'])}"))
    lines.append(row("one scrypt hash here (core 1), median / min",
                     f"{hs['median_ms']} / {hs['min_ms']} ms"))
    if "sequential" in r:
        lg = r["sequential"]["login"]
        n = lg["connect_to_903"]["count"]
        lines.append(row(f"login, connect -> 903, {n} one at a time: p50 / p99 / max ms",
                         three(lg["connect_to_903"])))
        lines.append(row("... AUTHENTICATE response -> 903: p50 / p99 / max ms",
                         three(lg["response_to_903"])))
        lines.append(row("... connect -> 001: p50 / p99 / max ms", three(lg["connect_to_001"])))
        lines.append(row("... logins/s, server CPU ms per login",
                         f"{lg['logins_per_s']}, {lg.get('server_cpu_ms_per_login')}"))
        for key, name in (("wrong_password", "wrong password"),
                          ("unknown_account", "unknown account")):
            f = r["sequential"][key]
            lines.append(row(f"{name}, {f['response_to_904']['count']}x, response -> 904: "
                             "p50 / p99 / max ms", three(f["response_to_904"]) +
                             f" (throttled: {f['throttled']})"))
    if "storm" in r and "storm" in r["storm"]:
        st, ch, rs, tg = (r["storm"]["storm"], r["storm"]["chat"], r["storm"]["rss"],
                          r["storm"]["targets"])
        lines.append(row(f"storm: {st['logins']} responses at once (written within "
                         f"{st['fire_spread_ms']} ms): last 903 after",
                         f"{st['duration_ms']} ms ({st['accepted']} accepted; first 903 "
                         f"{st['first_903_ms']} ms; p50 {st['fire_to_903']['p50']} ms)"))
        if "expected_ms" in st:
            ex = st["expected_ms"]
            lines.append(row("... expected: storm x one hash (one core) / storm / 2 x one hash",
                             f"{ex['one_core']} / {ex['two_slots_in_parallel']} ms"))
        lines.append(row("... server CPU during the storm", f"{st['server_cpu_s']} s"))
        lines.append(row(f"chat ({ch['room']} in {ROOM}, {ch['senders']} x "
                         f"{ch['rate_per_sender']:g} msg/s), idle: p50 / p99 / max ms",
                         three(ch["idle"]) + f" ({ch['idle']['count']} deliveries)"))
        lines.append(row("... during the storm: p50 / p99 / max ms",
                         three(ch["storm"]) + f" ({ch['storm']['count']} deliveries)"))
        quarters = ", ".join(f"{q['p99']}" for q in ch["storm_quarters"])
        lines.append(row("... p99 in each quarter of the storm (ms)", quarters))
        lines.append(row("... after the storm: p50 / p99 / max ms",
                         three(ch["after"]) + f" ({ch['after']['count']} deliveries)"))
        lines.append(row("... storm p99 / idle p99 (target <= 2x)",
                         f"{tg['chat_p99_storm_over_idle']}x: "
                         f"{'met' if tg['chat_p99_within_2x'] else 'missed'}"))
        lines.append(row("server VmRSS before / peak / after (MB)",
                         f"{rs['before_kb'] / MB:.1f} / {rs['peak_kb'] / MB:.1f} / "
                         f"{(rs['after_kb'] or 0) / MB:.1f} (VmHWM "
                         f"{rs['hwm_before_kb'] / MB:.1f} -> {rs['hwm_after_kb'] / MB:.1f})"))
        lines.append(row("... peak minus before (target <= +100 MB)",
                         f"+{rs['peak_minus_before_mb']} MB: "
                         f"{'met' if tg['memory_within_100mb'] else 'missed'}"))
        lines.append(row("deliveries (got / expected, lost, out of order)",
                         f"{ch['deliveries']} / {ch['deliveries_expected']}, {ch['lost']}, "
                         f"{ch['out_of_order']}"))
    lines.append(row("checks", "all right" if not r["failures"]
                     else "; ".join(r["failures"][:3])))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.login", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logins", type=int, default=200, help="sequential logins timed")
    p.add_argument("--warmup", type=int, default=3, help="sequential logins not timed")
    p.add_argument("--failures", type=int, default=20,
                   help="wrong-password logins, each on its own account")
    p.add_argument("--unknown", type=int, default=10, help="logins as names with no account")
    p.add_argument("--storm", type=int, default=50, help="logins fired at once")
    p.add_argument("--members", type=int, default=20, help="idle members of the room")
    p.add_argument("--senders", type=int, default=2, help="members who chat")
    p.add_argument("--rate", type=float, default=20.0, help="messages/s per sender")
    p.add_argument("--warmup-s", type=float, default=1.0, help="seconds of chat not counted")
    p.add_argument("--idle", type=float, default=5.0, help="seconds of chat before the storm")
    p.add_argument("--after", type=float, default=2.0, help="seconds of chat after it")
    p.add_argument("--sample", type=float, default=0.05, help="seconds between RSS samples")
    p.add_argument("--hashes", type=int, default=10, help="local scrypt hashes timed")
    p.add_argument("--workers", type=int, default=2, help="account add commands at once")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds one step may take")
    p.add_argument("--deadline", type=float, default=300.0, help="seconds for phase 1")
    p.add_argument("--storm-deadline", type=float, default=120.0,
                   help="seconds the storm may take")
    p.add_argument("--json", metavar="FILE", help="write everything here")
    a = p.parse_args(argv)
    if a.storm < 1 or a.logins < 1 or a.senders < 1 or a.members < 0 or a.rate <= 0:
        p.error("need --storm, --logins, --senders >= 1, --members >= 0, --rate > 0")
    if min(a.failures, a.unknown, a.warmup) < 0 or a.idle <= 0 or a.sample <= 0:
        p.error("counts must be >= 0, --idle and --sample > 0")
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
