"""The benchmark scenarios: fan-out, many connections, slow consumer, churn, handshakes.

Each scenario is a coroutine that takes :class:`Options` and returns a plain dict (the
JSON report).  Every wait is bounded: a step that takes longer than ``timeout`` is a
failure that ends up in the report, and the whole scenario has a ``deadline``.  A failed
scenario still returns what it measured, because a server that falls over under load is
a result, not a crash of the benchmark.

With ``tls``, every client of every scenario connects over TLS (asyncio's own, ``ssl=`` on
the connection), verifying the server against ``tls_ca`` if given.
"""

from __future__ import annotations

import asyncio
import functools
import math
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench import procstat
from bench.ircclient import (
    CHANNEL,
    BenchClient,
    IrcError,
    Tracker,
    format_message,
    now_us,
    open_client,
    register_and_join,
    tls_context,
)

SATURATED = 0.9  # generator CPU, as a fraction of one core, at which it may be the bottleneck
POLL = 0.1  # seconds between progress checks


@dataclass
class Options:
    """What to run and against which server; ``None`` means the scenario's default."""

    scenario: str = "fanout"
    host: str = "127.0.0.1"
    port: int = 6667
    server_pid: int | None = None
    label: str = ""
    clients: int | None = None
    senders: int | None = None
    messages: int | None = None
    window: int = 50  # unacknowledged messages per sender
    size: int | None = None  # bytes of message text
    rate: float = 100.0  # slow: messages per second per sender
    duration: float = 10.0  # slow: seconds of sending
    cycles: int = 1000  # churn
    parallel: int = 10  # churn
    rounds: int = 3  # many: one message per round, each from another client
    target_ms: float = 600.0  # many: one message must reach everyone within this
    # Connections between connect() and end of JOIN at once.  ngIRCd listens with a backlog
    # of 10 and miniircd with 5: more pending connections than that overflow the accept
    # queue, the kernel drops handshakes, and clients stall for seconds of SYN-ACK retries.
    connect_concurrency: int = 8
    timeout: float = 30.0  # one step (connect, register, join, no-progress) at most
    deadline: float = 900.0  # the whole scenario at most
    sender_setup: list[str] = field(default_factory=list)  # raw lines after registration
    client_setup: list[str] = field(default_factory=list)
    tls: bool = False  # every client over TLS
    tls_ca: str | None = None  # verify the server against this PEM; None: verify nothing


DEFAULTS: dict[str, dict[str, int]] = {
    "fanout": {"clients": 50, "senders": 5, "messages": 2000, "size": 40},
    "many": {"clients": 5000, "size": 40},
    "slow": {"clients": 20, "size": 450},
    "handshakes": {"clients": 1000},
}


def with_defaults(opts: Options) -> Options:
    """A copy of ``opts`` with the scenario's defaults filled in."""
    values = dict(vars(opts))
    for key, value in DEFAULTS.get(opts.scenario, {}).items():
        if values.get(key) is None:
            values[key] = value
    return Options(**values)


# --- measuring ------------------------------------------------------------------------


class Meter:
    """Server CPU from /proc and the generator's own CPU over one measured phase."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.t0 = time.monotonic()
        self.server0 = procstat.sample(pid)
        self.gen0 = procstat.own_cpu_seconds()

    def stop(self) -> dict[str, Any]:
        wall = max(time.monotonic() - self.t0, 1e-9)
        server1 = procstat.sample(self.pid)
        gen_cpu = procstat.own_cpu_seconds() - self.gen0
        server_cpu = (None if server1.cpu_s is None or self.server0.cpu_s is None
                      else server1.cpu_s - self.server0.cpu_s)
        return {
            "wall_s": round(wall, 3),
            "server": {
                "cpu_s": _round(server_cpu, 3),
                "cpu_util": _round(server_cpu / wall if server_cpu is not None else None, 3),
                "before": self.server0.as_dict(),
                "after": server1.as_dict(),
            },
            # /proc counts CPU in clock ticks (10 ms): under a second, utilisation is rough.
            "short_run": wall < 1.0,
            "generator": {
                "cpu_s": round(gen_cpu, 3),
                "cpu_util": round(gen_cpu / wall, 3),
                "saturated": gen_cpu / wall >= SATURATED,
            },
        }


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def latency_summary(latencies_us: list[int]) -> dict[str, float | None]:
    values = sorted(latencies_us)
    return {
        "count": len(values),
        "p50": _ms(percentile(values, 50)),
        "p99": _ms(percentile(values, 99)),
        "max": _ms(values[-1] if values else None),
    }


def _ms(us: float | None) -> float | None:
    return None if us is None else round(us / 1000, 3)


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"


def _base_result(opts: Options) -> dict[str, Any]:
    params = {k: v for k, v in vars(opts).items()
              if k not in ("host", "port", "server_pid", "label", "scenario")}
    return {
        "scenario": opts.scenario,
        "label": opts.label,
        "target": f"{opts.host}:{opts.port}",
        "server_pid": opts.server_pid,
        "params": params,
        "ok": False,
        "failures": [],
        "checks": {},
    }


def _finish(result: dict[str, Any], opts: Options) -> dict[str, Any]:
    result["server_alive"] = procstat.alive(opts.server_pid)
    if not result["server_alive"]:
        result["failures"].append("server process exited")
    result["ok"] = not result["failures"] and all(result["checks"].values())
    return result


# --- connecting -----------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _context(cafile: str | None) -> ssl.SSLContext:
    return tls_context(cafile)


async def connect(opts: Options, nick: str, timeout: float) -> BenchClient:
    """One connection (TLS handshake included with ``opts.tls``), within ``timeout`` s."""
    ctx = _context(opts.tls_ca) if opts.tls else None
    return await asyncio.wait_for(open_client(opts.host, opts.port, nick, ctx, timeout),
                                  timeout)


def tls_summary(opts: Options, clients: Sequence[BenchClient]) -> dict[str, Any]:
    """Whether TLS was on, verified, and what one connection negotiated."""
    info: dict[str, Any] = {"on": opts.tls, "verified": bool(opts.tls and opts.tls_ca)}
    for client in clients[:1]:
        obj = client.transport.get_extra_info("ssl_object") if client.transport else None
        if obj is not None:
            cipher = obj.cipher()
            info["version"] = obj.version()
            info["cipher"] = cipher[0] if cipher else None
    return info


async def connect_many(opts: Options, nicks: Sequence[str],
                       setup: Callable[[int], list[bytes]] | None = None,
                       count_joins: bool = False, deadline: float | None = None
                       ) -> tuple[list[BenchClient], list[str]]:
    """Connect, register and join every nick, ``connect_concurrency`` at a time.

    Registering in bounded batches keeps the listen backlog from overflowing.  The first
    failure stops new attempts: past that point the server is broken and waiting for
    thousands of timeouts tells us nothing more.  So does ``deadline`` (monotonic).
    """
    sem = asyncio.Semaphore(opts.connect_concurrency)
    clients: list[BenchClient | None] = [None] * len(nicks)
    failures: list[str] = []
    stop = asyncio.Event()
    start = time.monotonic()
    end = deadline if deadline is not None else start + opts.deadline

    def joined() -> int:
        return sum(1 for c in clients if c is not None and c.steady)

    async def one(i: int) -> None:
        async with sem:
            if stop.is_set():
                return
            step = min(opts.timeout, end - time.monotonic())
            if step <= 0:
                failures.append(f"setup deadline ({end - start:.0f} s) reached after "
                                f"{joined()} joined")
                stop.set()
                return
            try:
                client = await connect(opts, nicks[i], step)
                clients[i] = client
                client.count_joins = count_joins
                extra = setup(i) if setup else []
                await register_and_join(client, step, extra)
            except (OSError, TimeoutError, IrcError, ssl.SSLError) as exc:
                if stop.is_set():
                    pass
                elif time.monotonic() >= end:
                    failures.append(f"setup deadline ({end - start:.0f} s) reached after "
                                    f"{joined()} joined")
                else:
                    failures.append(f"client {i} ({nicks[i]}) after {joined()} joined: "
                                    f"{_describe(exc)}")
                stop.set()

    await asyncio.gather(*(one(i) for i in range(len(nicks))))
    return [c for c in clients if c is not None], failures


def _setup_lines(opts: Options, senders: set[int]) -> Callable[[int], list[bytes]]:
    every = [line.encode() for line in opts.client_setup]
    for_senders = [line.encode() for line in opts.sender_setup]
    return lambda i: every + (for_senders if i in senders else [])


def close_all(clients: Sequence[BenchClient]) -> None:
    for client in clients:
        client.close()


async def wait_for_deliveries(tracker: Tracker, opts: Options, since: float,
                              deadline: float) -> str | None:
    """Wait until every delivery arrived; return why not if no progress or out of time."""
    while not tracker.done.is_set():
        try:
            await asyncio.wait_for(tracker.done.wait(), POLL)
        except TimeoutError:
            pass
        now = time.monotonic()
        last = tracker.last_delivery or since
        if tracker.done.is_set():
            break
        if now - last > opts.timeout:
            return f"no delivery for {opts.timeout:.0f} s ({tracker.remaining} still due)"
        if now > deadline:
            return f"scenario deadline reached ({tracker.remaining} deliveries still due)"
        if not procstat.alive(opts.server_pid):
            return "server process exited"
    return None


async def _cancel(tasks: Sequence[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _pad(size: int) -> bytes:
    # The header "s12 1234 1732590000123456 " is about 26 bytes; pad the rest.
    return b"x" * max(1, size - 26)


# --- fan-out --------------------------------------------------------------------------


async def send_windowed(client: BenchClient, sid: int, count: int, window: int,
                        tracker: Tracker, pad: bytes) -> int:
    """Send ``count`` messages as fast as acknowledgements allow, ``window`` in flight."""
    event = tracker.ack_events[sid]
    sent = 0
    while sent < count:
        allowed = min(count, tracker.acked[sid] + window) - sent
        if allowed <= 0:
            event.clear()
            if tracker.acked[sid] + window <= sent:
                await event.wait()
            continue
        ts = now_us()
        client.send(b"".join(format_message(CHANNEL, sid, seq, ts, pad)
                             for seq in range(sent, sent + allowed)))
        sent += allowed
    return sent


def delivery_stats(receivers: Sequence[tuple[BenchClient, int | None]], messages: int,
                   n_senders: int) -> dict[str, int]:
    """Loss, duplicates and reordering over (client, own sender id or None) pairs."""
    lost = dup = late = unexpected = delivered = 0
    for client, own in receivers:
        for sid in range(n_senders):
            if sid != own:
                lost += max(0, messages - client.unique_from(sid))
        dup += client.duplicates
        late += client.late
        unexpected += client.unexpected
        delivered += client.delivered
    return {"deliveries": delivered, "lost": lost, "duplicates": dup, "reordered": late,
            "unexpected": unexpected}


async def fanout(opts: Options) -> dict[str, Any]:
    """N clients in one room, S of them sending M messages each, W unacknowledged at most."""
    result = _base_result(opts)
    n, s, m = opts.clients or 0, opts.senders or 0, opts.messages or 0
    if not 1 <= s < n:
        raise ValueError("fanout needs 1 <= senders < clients (client 0 only receives)")
    deadline = time.monotonic() + opts.deadline
    first_sender = n - s  # the last S clients send; client 0 acknowledges
    nicks = [f"b{i}" for i in range(n)]
    t0 = time.monotonic()
    clients, failures = await connect_many(opts, nicks,
                                           _setup_lines(opts, set(range(first_sender, n))))
    result["setup_s"] = round(time.monotonic() - t0, 3)
    result["failures"] += failures
    result["tls"] = tls_summary(opts, clients)
    if failures:
        close_all(clients)
        return _finish(result, opts)
    expected = s * m * (n - 1)
    tracker = Tracker(s, expected)
    for i, client in enumerate(clients):
        client.track(tracker, is_ack=(i == 0),
                     own_sid=i - first_sender if i >= first_sender else None)
    meter = Meter(opts.server_pid)
    start = time.monotonic()
    tasks = [asyncio.create_task(send_windowed(clients[first_sender + sid], sid, m,
                                               opts.window, tracker, _pad(opts.size or 40)))
             for sid in range(s)]
    why = await wait_for_deliveries(tracker, opts, start, deadline)
    measured = meter.stop()
    await _cancel(tasks)
    close_all(clients)
    for client in clients:
        client.verify()
    if why:
        result["failures"].append(why)
    receivers = [(c, i - first_sender if i >= first_sender else None)
                 for i, c in enumerate(clients)]
    stats = delivery_stats(receivers, m, s)
    elapsed = (tracker.last_delivery or time.monotonic()) - start
    result.update(measured)
    result.update(stats)
    result["deliveries_expected"] = expected
    result["duration_s"] = round(elapsed, 3)
    result["deliveries_per_s"] = round(stats["deliveries"] / elapsed) if elapsed > 0 else None
    result["latency_ms"] = latency_summary(tracker.latencies_us)
    cpu = measured["server"]["cpu_s"]
    result["server_cpu_us_per_delivery"] = (
        round(cpu / stats["deliveries"] * 1e6, 3) if cpu is not None and stats["deliveries"]
        else None)
    result["checks"] = {
        "all_delivered": stats["lost"] == 0 and stats["deliveries"] == expected,
        "exactly_once": stats["duplicates"] == 0 and stats["unexpected"] == 0,
        "in_order": stats["reordered"] == 0,
    }
    return _finish(result, opts)


# --- many connections -----------------------------------------------------------------


async def _wait_until(predicate: Callable[[], bool], quiet_for: float, limit: float,
                      activity: Callable[[], int]) -> bool:
    """Poll until ``predicate``; give up after ``limit`` s or ``quiet_for`` s of no activity."""
    end = time.monotonic() + limit
    last_seen, last_change = activity(), time.monotonic()
    while not predicate():
        await asyncio.sleep(0.2)
        now = time.monotonic()
        seen = activity()
        if seen != last_seen:
            last_seen, last_change = seen, now
        if now > end or now - last_change > quiet_for:
            return predicate()
    return True


async def one_round(clients: Sequence[BenchClient], sender: int, opts: Options
                    ) -> dict[str, Any]:
    """One message from ``clients[sender]``; how long until it reached everyone else."""
    tracker = Tracker(1, len(clients) - 1)
    for i, client in enumerate(clients):
        client.track(tracker, own_sid=0 if i == sender else None)
    start_mono = time.monotonic()
    clients[sender].send(format_message(CHANNEL, 0, 0, now_us(), _pad(opts.size or 40)))
    try:
        await asyncio.wait_for(tracker.done.wait(), max(opts.timeout, opts.target_ms / 1000))
    except TimeoutError:
        pass
    for client in clients:
        client.verify()
    reached = sum(c.delivered for c in clients)
    last = tracker.last_delivery
    all_ms = round((last - start_mono) * 1000, 3) if last and tracker.done.is_set() else None
    return {"sender": clients[sender].nick, "reached": reached,
            "unexpected": sum(c.unexpected + c.duplicates for c in clients),
            "of": len(clients) - 1, "all_reached_ms": all_ms,
            "latency_ms": latency_summary(tracker.latencies_us)}


async def many(opts: Options) -> dict[str, Any]:
    """N clients registered and joined to one room; then one message must reach all."""
    result = _base_result(opts)
    n = opts.clients or 0
    result["fd_limit"] = procstat.raise_fd_limit()
    before = procstat.sample(opts.server_pid)
    meter = Meter(opts.server_pid)
    # Setup gets most of the deadline; the rest is for the JOIN flood to drain and rounds.
    clients, failures = await connect_many(opts, [f"m{i}" for i in range(n)],
                                           _setup_lines(opts, set()), count_joins=True,
                                           deadline=time.monotonic() + opts.deadline * 0.8)
    setup = meter.stop()
    result["setup_s"] = setup["wall_s"]
    result["setup_server_cpu_s"] = setup["server"]["cpu_s"]
    result["setup_generator"] = setup["generator"]
    result["connected"] = sum(1 for c in clients if c.steady)  # joined, even if lost later
    result["failures"] += failures
    result["tls"] = tls_summary(opts, clients)
    if failures:
        result["server_after"] = procstat.sample(opts.server_pid).as_dict()
        close_all(clients)
        return _finish(result, opts)
    # Each client sees the JOIN of everyone who joined after it: n(n-1)/2 lines in all.
    # Wait for that flood to drain so the memory figure is for a settled server.
    expected_joins = n * (n - 1) // 2
    drained = await _wait_until(lambda: sum(c.joins_seen for c in clients) >= expected_joins,
                                quiet_for=5.0, limit=opts.timeout * 4,
                                activity=lambda: sum(c.bytes_in for c in clients))
    result["join_lines"] = {"seen": sum(c.joins_seen for c in clients),
                            "expected": expected_joins, "drained": drained}
    after = procstat.sample(opts.server_pid)
    result["server_before"] = before.as_dict()
    result["server_after"] = after.as_dict()
    if before.rss_kb is not None and after.rss_kb is not None:
        result["rss_kb_per_connection"] = round((after.rss_kb - before.rss_kb) / n, 2)
    rounds = [await one_round(clients, r % n, opts) for r in range(opts.rounds)]
    close_all(clients)
    result["rounds"] = rounds
    times = [r["all_reached_ms"] for r in rounds]
    result["worst_all_reached_ms"] = (None if None in times or not times else max(times))
    result["checks"] = {
        "all_connected": result["connected"] == n,
        "all_reached": all(r["reached"] == r["of"] for r in rounds),
        "within_target": all(t is not None and t <= opts.target_ms for t in times),
    }
    return _finish(result, opts)


# --- slow consumer --------------------------------------------------------------------


async def send_paced(client: BenchClient, sid: int, count: int, rate: float, start: float,
                     pad: bytes) -> None:
    """``count`` messages at ``rate`` per second from ``start``, catching up if late."""
    interval = 1.0 / rate
    for seq in range(count):
        delay = start + seq * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        client.send(format_message(CHANNEL, sid, seq, now_us(), pad))


async def sample_memory(pid: int | None, into: list[tuple[float, int]], start: float) -> None:
    """Server RSS four times a second until cancelled."""
    while True:
        s = procstat.sample(pid)
        if s.rss_kb is not None:
            into.append((round(s.at - start, 2), s.rss_kb))
        await asyncio.sleep(0.25)


def window_p99(send_times: list[int], latencies: list[int], lo: int, hi: int) -> float | None:
    """p99 latency (ms) of the messages sent in [lo, hi) microseconds."""
    values = sorted(lat for ts, lat in zip(send_times, latencies, strict=True) if lo <= ts < hi)
    return _ms(percentile(values, 99))


def stalled_fate(stalled: BenchClient, witnesses: Sequence[BenchClient], start: float
                 ) -> dict[str, Any]:
    """Whether and when the room saw the stalled client leave, and why."""
    nick = stalled.nick.encode()
    closed = stalled.closed.done() and not stalled.closed.cancelled()
    for witness in witnesses:
        for at, who, reason in witness.quits:
            if who == nick:
                return {"disconnected": True, "after_s": round(at - start, 2),
                        "reason": reason.decode("utf-8", "replace").lstrip(":"),
                        "error_line": stalled.error_text, "bytes_read": stalled.bytes_in}
    return {"disconnected": closed, "after_s": None,
            "reason": stalled.closed.result() if closed else None,
            "error_line": stalled.error_text, "bytes_read": stalled.bytes_in}


async def slow(opts: Options) -> dict[str, Any]:
    """One client stops reading while the others send steadily: nobody else may suffer."""
    result = _base_result(opts)
    n = opts.clients or 0
    if n < 3:
        raise ValueError("slow needs at least 3 clients")
    count = int(opts.rate * opts.duration)
    senders = n - 1  # everyone but the stalled client 0 sends
    clients, failures = await connect_many(opts, [f"w{i}" for i in range(n)],
                                           _setup_lines(opts, set(range(1, n))))
    result["failures"] += failures
    result["tls"] = tls_summary(opts, clients)
    if failures:
        close_all(clients)
        return _finish(result, opts)
    stalled, healthy = clients[0], clients[1:]
    tracker = Tracker(senders, senders * count * (senders - 1), keep_send_times=True)
    stalled.track(None)
    for sid, client in enumerate(healthy):
        client.track(tracker, own_sid=sid)
    assert stalled.transport is not None
    stalled.transport.pause_reading()
    memory: list[tuple[float, int]] = []
    meter = Meter(opts.server_pid)
    start = time.monotonic()
    start_us = now_us()
    sampler = asyncio.create_task(sample_memory(opts.server_pid, memory, start))
    pad = _pad(opts.size or 450)
    tasks = [asyncio.create_task(send_paced(c, sid, count, opts.rate,
                                            start + sid / (opts.rate * senders), pad))
             for sid, c in enumerate(healthy)]
    _, pending = await asyncio.wait(tasks, timeout=opts.duration + opts.timeout)
    await _cancel(list(pending))
    why = await wait_for_deliveries(tracker, opts, start, start + opts.deadline)
    measured = meter.stop()
    if why:
        result["failures"].append(why)
    stalled.transport.resume_reading()  # now drain it, to learn how the server ended it
    try:
        await asyncio.wait_for(asyncio.shield(stalled.closed), 5.0)
    except TimeoutError:
        pass
    await _cancel([sampler])
    close_all(clients)
    for client in healthy:
        client.verify()
    stats = delivery_stats([(c, sid) for sid, c in enumerate(healthy)], count, senders)
    span = int(opts.duration * 1e6)
    first = window_p99(tracker.send_times_us or [], tracker.latencies_us,
                       start_us, start_us + 3_000_000)
    last = window_p99(tracker.send_times_us or [], tracker.latencies_us,
                      start_us + span - 3_000_000, start_us + span)
    seconds = math.ceil(opts.duration)
    result["p99_by_second_ms"] = [
        window_p99(tracker.send_times_us or [], tracker.latencies_us,
                   start_us + k * 1_000_000, start_us + (k + 1) * 1_000_000)
        for k in range(seconds)]
    rss = [kb for _, kb in memory]
    result.update(measured)
    result.update(stats)
    result["deliveries_expected"] = senders * count * (senders - 1)
    result["latency_ms"] = latency_summary(tracker.latencies_us)
    result["p99_first_3s_ms"] = first
    result["p99_last_3s_ms"] = last
    result["p99_ratio"] = round(last / first, 2) if first and last is not None else None
    result["stalled"] = stalled_fate(stalled, healthy, start)
    result["memory"] = {
        "rss_kb_start": rss[0] if rss else None,
        "rss_kb_max": max(rss) if rss else None,
        "rss_kb_end": rss[-1] if rss else None,
        "growth_kb": (max(rss) - rss[0]) if rss else None,
        "timeline": memory[::4],  # one point a second keeps the JSON short
    }
    result["checks"] = {
        "healthy_lost_nothing": stats["lost"] == 0 and stats["duplicates"] == 0,
        "no_stray_messages": stats["unexpected"] == 0,
        "healthy_in_order": stats["reordered"] == 0,
        "latency_held": first is not None and last is not None and last <= 2 * first,
        "stalled_disconnected": bool(result["stalled"]["disconnected"]),
    }
    return _finish(result, opts)


# --- churn ----------------------------------------------------------------------------


async def churn_worker(opts: Options, worker: int, cycles: int, durations: list[float],
                       failures: list[str]) -> None:
    """Connect, register, join, quit, ``cycles`` times in a row."""
    for k in range(cycles):
        nick = f"c{worker}x{k}"
        t0 = time.monotonic()
        client: BenchClient | None = None
        try:
            client = await connect(opts, nick, opts.timeout)
            await register_and_join(client, opts.timeout,
                                    [line.encode() for line in opts.client_setup])
            client.send(b"QUIT :churn\r\n")
            await asyncio.wait_for(client.closed, opts.timeout)
            durations.append(time.monotonic() - t0)
        except (TimeoutError, OSError, IrcError, ssl.SSLError) as exc:
            failures.append(f"{nick}: {_describe(exc)}")
            if len(failures) >= 10:
                return  # the server is broken; stop hammering it
        finally:
            if client is not None:
                client.close()


async def _settle(pid: int | None, before: procstat.ProcSample, limit: float
                  ) -> procstat.ProcSample:
    """Wait (up to ``limit`` s) for threads and fds to fall back to where they were."""
    end = time.monotonic() + limit
    while True:
        now = procstat.sample(pid)
        settled = (now.threads is None or before.threads is None
                   or (now.threads <= before.threads and (now.fds or 0) <= (before.fds or 0)))
        if settled or time.monotonic() > end:
            return now
        await asyncio.sleep(0.2)


async def churn(opts: Options) -> dict[str, Any]:
    """Connect-register-join-quit cycles from parallel clients; look for leaks."""
    result = _base_result(opts)
    observers, failures = await connect_many(opts, ["obs"], count_joins=True)
    result["failures"] += failures
    result["tls"] = tls_summary(opts, observers)
    if failures:
        return _finish(result, opts)
    observer = observers[0]
    await asyncio.sleep(0.5)
    before = procstat.sample(opts.server_pid)
    per_worker = [opts.cycles // opts.parallel + (1 if w < opts.cycles % opts.parallel else 0)
                  for w in range(opts.parallel)]
    durations: list[float] = []
    cycle_failures: list[str] = []
    meter = Meter(opts.server_pid)
    work = asyncio.gather(*(churn_worker(opts, w, c, durations, cycle_failures)
                            for w, c in enumerate(per_worker)))
    try:
        await asyncio.wait_for(work, opts.deadline)
    except TimeoutError:
        cycle_failures.append("scenario deadline reached")
    measured = meter.stop()
    after = await _settle(opts.server_pid, before, 10.0)
    # Until the observer has read every QUIT (or nothing more arrives for a second).
    await _wait_until(lambda: len(observer.quits) >= opts.cycles, quiet_for=1.0, limit=10.0,
                      activity=lambda: len(observer.quits))
    close_all(observers)
    quits = Counter(nick.decode() for _, nick, _ in observer.quits)
    result.update(measured)
    result["failures"] += cycle_failures[:10]
    result["cycles_done"] = len(durations)
    result["cycles_failed"] = len(cycle_failures)
    result["cycles_per_s"] = round(len(durations) / measured["wall_s"], 1)
    ms = sorted(d * 1000 for d in durations)
    result["cycle_ms"] = {"p50": _round(percentile(ms, 50), 2),
                          "p99": _round(percentile(ms, 99), 2)}
    result["server_before"] = before.as_dict()
    result["server_after"] = after.as_dict()
    result["observer"] = {"joins_seen": observer.joins_seen, "quits_seen": sum(quits.values()),
                          "nicks_quit_twice": sorted(n for n, c in quits.items() if c > 1)}
    result["checks"] = {
        "all_cycles_ok": len(durations) == opts.cycles,
        "observer_saw_each_join": observer.joins_seen == opts.cycles,
        "observer_saw_each_quit_once": (sum(quits.values()) == opts.cycles
                                        and not result["observer"]["nicks_quit_twice"]),
        "no_thread_leak": _not_above(after.threads, before.threads),
        "no_fd_leak": _not_above(after.fds, before.fds),
    }
    return _finish(result, opts)


def _not_above(after: int | None, before: int | None) -> bool:
    return after is None or before is None or after <= before


# --- handshakes -----------------------------------------------------------------------


async def handshake_worker(opts: Options, todo: Iterator[int], end: float,
                           connect_s: list[float], failures: list[str],
                           first: list[BenchClient]) -> None:
    """Take connection numbers from ``todo`` (shared, so bounded by its length) until done:
    connect (and handshake), send QUIT, wait for the server to close."""
    for i in todo:
        if len(failures) >= 10 or time.monotonic() > end:
            return  # the server is broken, or out of time: stop hammering it
        t0 = time.monotonic()
        client: BenchClient | None = None
        try:
            client = await connect(opts, f"h{i}", opts.timeout)
            connect_s.append(time.monotonic() - t0)
            if not first:
                first.append(client)
            client.registered.cancel()  # never registers: nothing to report through it
            # The server closes after QUIT: proof that it finished its side of the
            # handshake and read the first record, and its cleanup runs inside the clock.
            client.send(b"QUIT :handshake\r\n")
            await asyncio.wait_for(asyncio.shield(client.closed), opts.timeout)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            failures.append(f"connection {i}: {_describe(exc)}")
        finally:
            if client is not None:
                client.close()


async def handshakes(opts: Options) -> dict[str, Any]:
    """N connections opened as fast as possible, ``parallel`` at once: each is connected
    (and TLS-handshaken with ``tls``), sends QUIT and is closed by the server.  Reports
    handshakes (connections) per second and the server's CPU per connection."""
    result = _base_result(opts)
    n = opts.clients or 0
    before = procstat.sample(opts.server_pid)
    connect_s: list[float] = []
    failures: list[str] = []
    first: list[BenchClient] = []
    todo = iter(range(n))
    meter = Meter(opts.server_pid)
    start = time.monotonic()
    work = asyncio.gather(*(handshake_worker(opts, todo, start + opts.deadline, connect_s,
                                             failures, first)
                            for _ in range(max(1, opts.parallel))))
    try:
        await asyncio.wait_for(work, opts.deadline + opts.timeout)
    except TimeoutError:
        failures.append("scenario deadline reached")
    elapsed = time.monotonic() - start
    # The server's share of the last connections (thread exit, close) belongs to the run.
    after = await _settle(opts.server_pid, before, 10.0)
    measured = meter.stop()
    result["tls"] = tls_summary(opts, first)
    result.update(measured)
    result["failures"] += failures[:10]
    done = len(connect_s)
    result["handshakes_done"] = done
    result["handshakes_failed"] = len(failures)
    result["duration_s"] = round(elapsed, 3)
    result["handshakes_per_s"] = round(done / elapsed, 1) if elapsed > 0 else None
    ms = sorted(d * 1000 for d in connect_s)
    result["handshake_ms"] = {"p50": _round(percentile(ms, 50), 2),
                              "p99": _round(percentile(ms, 99), 2)}
    cpu = measured["server"]["cpu_s"]
    result["server_cpu_us_per_handshake"] = (round(cpu / done * 1e6, 1)
                                             if cpu is not None and done else None)
    result["server_before"] = before.as_dict()
    result["server_after"] = after.as_dict()
    result["checks"] = {
        "all_handshakes_ok": done == n and not failures,
        "no_thread_leak": _not_above(after.threads, before.threads),
        "no_fd_leak": _not_above(after.fds, before.fds),
    }
    return _finish(result, opts)


SCENARIOS: dict[str, Callable[[Options], Awaitable[dict[str, Any]]]] = {
    "fanout": fanout,
    "many": many,
    "slow": slow,
    "churn": churn,
    "handshakes": handshakes,
}


async def run(opts: Options) -> dict[str, Any]:
    """Run one scenario under its overall deadline (plus a grace period for reporting)."""
    opts = with_defaults(opts)
    procstat.raise_fd_limit()
    try:
        return await asyncio.wait_for(SCENARIOS[opts.scenario](opts), opts.deadline + 60)
    except TimeoutError:
        result = _base_result(opts)
        result["failures"].append(f"scenario did not finish within {opts.deadline + 60:.0f} s")
        return _finish(result, opts)
