"""One benchmark IRC connection: register, join, read cheaply, check every delivery.

The generator must outrun the server, so reading is two-speed.  Every chunk is cut at its
last newline; while a measurement runs, the benchmark messages in it are only counted
(``bytes.count``, C speed) and the chunk is kept for checking afterwards (see
:class:`Tracker`).  Only when a chunk holds a line that is neither a benchmark message nor a
JOIN (PING, ERROR, QUIT, a numeric), or the client is still registering, does it take the
slow path that parses line by line.

A benchmark message is ``PRIVMSG #bench :s<sender> <seq> <send-time-us> <padding>``.  Each
receiving client keeps, per sender, the next sequence number it expects; anything else is
counted as a gap (loss until it turns up), a late arrival (reordering) or a duplicate.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Iterable

CHANNEL = b"#bench"
MAX_PARTIAL = 64 * 1024  # bytes without a newline: the peer is not speaking IRC
MAX_RECORDED = 100_000  # QUIT lines and errors kept per client, so memory stays bounded
REGISTRATION_ERRORS = {b"431", b"432", b"433", b"436", b"437", b"461", b"462", b"464", b"465"}
JOIN_ERRORS = {b"403", b"405", b"471", b"473", b"474", b"475", b"476", b"477", b"489"}


class IrcError(Exception):
    """The server refused registration or JOIN, or closed the connection."""


def message_regex(channel: bytes = CHANNEL) -> re.Pattern[bytes]:
    """The pattern that pulls (sender, seq, send-time) out of a block of relayed lines."""
    return re.compile(rb" PRIVMSG " + re.escape(channel) + rb" :s(\d+) (\d+) (\d+)")


def format_message(channel: bytes, sid: int, seq: int, ts_us: int, pad: bytes) -> bytes:
    return b"PRIVMSG %s :s%d %d %d %s\r\n" % (channel, sid, seq, ts_us, pad)


def now_us() -> int:
    """Wall-clock microseconds: send and receive times come from the same clock."""
    return time.time_ns() // 1000


class Tracker:
    """Delivery bookkeeping for one burst of benchmark messages, shared by its receivers.

    ``remaining`` counts deliveries still due; ``done`` is set when it reaches zero.
    ``acked[sid]`` is how many messages of sender ``sid`` the ack receiver has seen in
    order, which is what bounds each sender's window.

    With ``deferred`` (the default), receivers other than the ack receiver only count
    benchmark lines while the clock runs and keep each chunk with its arrival time; the
    per-message checks (order, duplicates, latency) run in :meth:`BenchClient.verify`
    afterwards.  Checking a message in Python costs about a microsecond, which at a
    million deliveries a second would make the generator, not the server, the bottleneck.
    """

    def __init__(self, n_senders: int, expected: int, channel: bytes = CHANNEL,
                 keep_send_times: bool = False, deferred: bool = True) -> None:
        self.n_senders = n_senders
        self.deferred = deferred
        self.marker = b" PRIVMSG " + channel + b" :s"
        self.msg_re = message_regex(channel)
        self.remaining = expected
        self.done = asyncio.Event()
        if expected <= 0:
            self.done.set()
        self.acked = [0] * n_senders
        self.ack_events = [asyncio.Event() for _ in range(n_senders)]
        self.latencies_us: list[int] = []
        self.send_times_us: list[int] | None = [] if keep_send_times else None
        self.first_delivery: float | None = None  # time.monotonic()
        self.last_delivery: float | None = None


class BenchClient(asyncio.Protocol):
    """An asyncio protocol for one connection; create it with :func:`open_client`."""

    def __init__(self, nick: str, loop: asyncio.AbstractEventLoop) -> None:
        self.nick = nick
        self.transport: asyncio.Transport | None = None
        self._buf = b""
        self.registered: asyncio.Future[bool] = loop.create_future()
        self.joined: asyncio.Future[bool] = loop.create_future()
        self.closed: asyncio.Future[str] = loop.create_future()
        self.steady = False  # joined: from now on the fast path is allowed
        self.count_joins = False
        self.joins_seen = 0
        self.quits: list[tuple[float, bytes, bytes]] = []  # (monotonic, nick, reason)
        self.errors: list[str] = []
        self.error_text: str | None = None  # the server's ERROR line, if any
        self.bytes_in = 0
        # Delivery state, reset by track().
        self.tracker: Tracker | None = None
        self.is_ack = False
        self.next_seq: dict[bytes, int] = {}  # sender id (as bytes) -> next seq expected
        self.missing: dict[bytes, set[int]] = {}
        self.chunks: list[tuple[int, bytes]] = []  # (arrival us, data) awaiting verify()
        self.delivered = 0
        self.duplicates = 0
        self.late = 0
        self.unexpected = 0

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        reason = self.error_text or (str(exc) if exc else "closed by server")
        if not self.closed.done():
            self.closed.set_result(reason)
        self._fail_pending(IrcError(f"{self.nick}: connection lost: {reason}"))

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self._buf:
            data = self._buf + data
        end = data.rfind(b"\n") + 1
        if end == 0:
            self._buf = data
            if len(data) > MAX_PARTIAL:
                self._protocol_error("line longer than 64 KiB")
            return
        if end == len(data):
            self._buf = b""
        else:
            self._buf = data[end:]
            data = data[:end]
        tracker = self.tracker
        messages = self._on_block(data, tracker) if tracker is not None else 0
        if self.steady:
            # Fast path: every line was a benchmark message or a JOIN (all C-speed counts).
            joins = data.count(b" JOIN ")
            if data.count(b"\n") == messages + joins:
                if self.count_joins:
                    self.joins_seen += joins
                return
        self._slow_path(data)

    # --- sending ------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # --- delivery checks ----------------------------------------------------------------

    def track(self, tracker: Tracker | None, is_ack: bool = False,
              own_sid: int | None = None) -> None:
        """Start checking deliveries for ``tracker`` (None: ignore benchmark messages).

        ``own_sid`` is this client's sender id, if it sends: IRC does not echo a channel
        message to its sender, so one coming back counts as unexpected.
        """
        self.tracker = tracker
        self.is_ack = is_ack
        n = tracker.n_senders if tracker else 0
        self.next_seq = {b"%d" % sid: 0 for sid in range(n) if sid != own_sid}
        self.missing = {}
        self.chunks = []
        self.delivered = self.duplicates = self.late = self.unexpected = 0

    def _on_block(self, data: bytes, tracker: Tracker) -> int:
        """Account for the benchmark messages in ``data``; return how many lines they were."""
        now = now_us()
        if tracker.deferred and not self.is_ack:
            count = data.count(tracker.marker)
            if count:
                self.chunks.append((now, data))
                _arrived(tracker, count)
            return count
        found = tracker.msg_re.findall(data)
        if found:
            new = self._check(found, tracker, now)
            self.delivered += new
            _arrived(tracker, new)
            if self.is_ack:
                self._acknowledge(tracker)
        return len(found)

    def verify(self) -> None:
        """Run the per-message checks on the chunks kept while the clock was running."""
        tracker = self.tracker
        if tracker is None:
            return
        for now, data in self.chunks:
            self.delivered += self._check(tracker.msg_re.findall(data), tracker, now)
        self.chunks = []

    def _acknowledge(self, tracker: Tracker) -> None:
        acked = tracker.acked
        nxt = self.next_seq
        for sid in range(tracker.n_senders):
            n = nxt.get(b"%d" % sid, 0)
            if n != acked[sid]:
                acked[sid] = n
                tracker.ack_events[sid].set()

    def _check(self, found: list[tuple[bytes, bytes, bytes]], tracker: Tracker, now: int
               ) -> int:
        """The hot loop over (sender, seq, send-time) triples; returns first deliveries.

        Sender ids stay bytes (dict keys) and only the in-order case runs inline.
        """
        nxt = self.next_seq
        get = nxt.get
        lat = tracker.latencies_us.append
        send_times = tracker.send_times_us
        new = 0
        for sid_b, seq_b, ts_b in found:
            seq = int(seq_b)
            if get(sid_b) == seq:
                nxt[sid_b] = seq + 1
            elif not self._irregular(sid_b, seq):
                continue
            ts = int(ts_b)
            lat(now - ts)
            if send_times is not None:
                send_times.append(ts)
            new += 1
        return new

    def _irregular(self, sid_b: bytes, seq: int) -> bool:
        """A message that is not the next one expected; True if it is a first delivery."""
        expected = self.next_seq.get(sid_b)
        if expected is None:
            self.unexpected += 1
            return False
        if seq > expected:  # a gap: the skipped ones are missing until they turn up
            self.missing.setdefault(sid_b, set()).update(range(expected, seq))
            self.next_seq[sid_b] = seq + 1
            return True
        gaps = self.missing.get(sid_b)
        if gaps is None or seq not in gaps:
            self.duplicates += 1
            return False
        gaps.discard(seq)
        self.late += 1
        return True

    def unique_from(self, sid: int) -> int:
        """How many distinct messages of sender ``sid`` arrived (in order or late)."""
        key = b"%d" % sid
        return self.next_seq.get(key, 0) - len(self.missing.get(key, ()))

    # --- slow path ----------------------------------------------------------------------

    def _slow_path(self, block: bytes) -> None:
        for line in block.split(b"\n"):
            line = line.rstrip(b"\r")
            if line:
                self._on_line(line)

    def _on_line(self, line: bytes) -> None:
        if line.startswith(b"@"):  # IRCv3 tags: not used by the benchmark
            line = line.partition(b" ")[2]
        prefix = b""
        if line.startswith(b":"):
            prefix, _, line = line[1:].partition(b" ")
        command, _, args = line.partition(b" ")
        command = command.upper()
        if command in (b"PRIVMSG", b"NOTICE", b"PONG"):
            return  # benchmark messages were counted by the fast path
        if command == b"PING":
            self.send(b"PONG " + args + b"\r\n")
        elif command == b"001":
            _resolve(self.registered)
        elif command == b"366":
            if not self.joined.done():
                self.steady = True
                _resolve(self.joined)
        elif command == b"JOIN":
            if self.steady:
                self.joins_seen += 1
        elif command == b"QUIT":
            if len(self.quits) < MAX_RECORDED:
                self.quits.append((time.monotonic(), prefix.partition(b"!")[0], args))
        elif command == b"ERROR":
            self.error_text = args.decode("utf-8", "replace").lstrip(":")
        elif command[:1] in (b"4", b"5") and len(command) == 3:
            self._on_error_numeric(command, line)

    def _on_error_numeric(self, code: bytes, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        if len(self.errors) < MAX_RECORDED:
            self.errors.append(text)
        if code in REGISTRATION_ERRORS and not self.registered.done():
            self.registered.set_exception(IrcError(f"{self.nick}: registration refused: {text}"))
        elif code in JOIN_ERRORS and self.registered.done() and not self.joined.done():
            self.joined.set_exception(IrcError(f"{self.nick}: JOIN refused: {text}"))

    def _protocol_error(self, why: str) -> None:
        self.error_text = why
        self.close()

    def _fail_pending(self, exc: Exception) -> None:
        # Only the first pending step gets the error: it is the one being awaited.
        if not self.registered.done():
            self.registered.set_exception(exc)
        elif (not self.joined.done() and not self.registered.cancelled()
              and self.registered.exception() is None):
            self.joined.set_exception(exc)


def _arrived(tracker: Tracker, count: int) -> None:
    if count:
        tracker.remaining -= count
        mono = time.monotonic()
        if tracker.first_delivery is None:
            tracker.first_delivery = mono
        tracker.last_delivery = mono
        if tracker.remaining <= 0:
            tracker.done.set()


def _resolve(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(True)


def tls_context(cafile: str | None) -> ssl.SSLContext:
    """A client context: verify against ``cafile`` (the server's own certificate, for a
    self-signed one), or, without it, verify nothing (encryption only, no authentication)."""
    if cafile:
        return ssl.create_default_context(cafile=cafile)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def open_client(host: str, port: int, nick: str, tls: ssl.SSLContext | None = None,
                      handshake_timeout: float = 30.0) -> BenchClient:
    """Connect (no registration yet); with ``tls``, returns once the TLS handshake is done."""
    loop = asyncio.get_running_loop()
    client = BenchClient(nick, loop)
    if tls is None:
        await loop.create_connection(lambda: client, host, port)
    else:
        await loop.create_connection(lambda: client, host, port, ssl=tls,
                                     server_hostname=host,
                                     ssl_handshake_timeout=handshake_timeout)
    return client


async def register_and_join(client: BenchClient, timeout: float,
                            extra: Iterable[bytes] = (), channel: bytes = CHANNEL) -> None:
    """NICK/USER, wait for 001; send ``extra`` lines; JOIN, wait for 366 (end of NAMES)."""
    nick = client.nick.encode()
    client.send(b"NICK %s\r\nUSER u 0 * :r\r\n" % nick)
    await asyncio.wait_for(client.registered, timeout)
    lines = b"".join(line.replace(b"{nick}", nick) + b"\r\n" for line in extra)
    client.send(lines + b"JOIN %s\r\n" % channel)
    await asyncio.wait_for(client.joined, timeout)
