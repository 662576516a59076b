"""One client's reader thread: set the socket up, read and frame lines, run their handlers.

:class:`Connection` follows socketserver's handler lifecycle, ``setup(); try: handle()
finally: finish()``, so the cleanup runs however the connection ends.  The reader only ever
calls ``recv`` on its socket (all output goes through the writer).  Bad input gets one error
reply here, in :meth:`Connection.handle_line`, and never reaches a handler.

Flood control is a token bucket per connection: a burst, then a steady rate.  A client over
its allowance is slowed by this reader not reading (only the flooder's TCP window closes);
one far over it, or with too much unread input while slowed, is cut with ``Excess Flood``.
A multiline batch costs one line, its opening (``multiline.Collector.free``): a pasted
message is bounded by the advertised max-bytes and max-lines instead.

``BATCH`` is not in the command table: the collector takes it, and every line of a batch,
before dispatch (it needs the reader's state across lines).
"""

from __future__ import annotations

import array
import fcntl
import logging
import socket
import termios
import time

from chatroom import multiline
from chatroom import protocol as P
from chatroom.handlers import COMMANDS
from chatroom.hub import Hub
from chatroom.protocol import Message, ProtocolError
from chatroom.registry import Client
from chatroom.transport import TLSClosed, handshake, os_reason
from chatroom.writer import BACKLOG_HIGH

log = logging.getLogger(__name__)

# Kernel send buffer per client.  Left alone, Linux autotunes it up to 4 MB, so a peer that
# stops reading would hide megabytes in the kernel before its send-queue limit ever shows.
SOCKET_SNDBUF = 128 * 1024
MAX_LABEL = 64  # bytes of a label tag's value (labeled-response)


class Connection:
    """The reader of one client.  :meth:`run` is the thread's whole life; nothing else here
    is called from another thread."""

    __slots__ = ("hub", "client", "splitter", "bucket", "batches")

    def __init__(self, hub: Hub, client: Client) -> None:
        cfg = hub.config
        self.hub = hub
        self.client = client
        self.splitter = P.LineSplitter()
        self.bucket = (P.TokenBucket(cfg.flood_burst, cfg.flood_rate, time.monotonic())
                       if cfg.flood_control else None)
        self.batches = multiline.Collector(hub, client)

    def run(self) -> None:
        c = self.client
        try:
            self.setup()
            self.handle()
        except OSError as exc:
            c.quit_reason = c.quit_reason or c.doomed or os_reason(exc)
        except Exception:
            log.exception("reader for %s crashed", c)
            c.quit_reason = c.quit_reason or "Internal error"
        finally:
            self.finish()

    def setup(self) -> None:
        c = self.client
        sock = c.sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SNDBUF)
        if c.tls is not None:
            # On this thread, with a deadline: a peer that never sends its ClientHello
            # holds up nobody but itself, and only until the deadline.
            try:
                handshake(sock, c.tls, self.hub.config.tls_handshake_timeout)
            except OSError as exc:
                c.quit_reason = c.quit_reason or f"TLS handshake failed: {os_reason(exc)}"
                log.info("TLS handshake with %s:%d failed: %s", c.host, c.addr[1],
                         os_reason(exc))
                raise
            log.info("tls %s:%d %s", c.host, c.addr[1], c.tls.describe())
            with self.hub.delivering():
                self.hub.writer.poke(c)  # anything queued meanwhile can go now

    def handle(self) -> None:
        c, splitter, bucket = self.client, self.splitter, self.bucket
        sock = c.sock
        # A client may send its first lines in the same packet as the end of its TLS
        # handshake (GnuTLS clients such as WeeChat do): those are in the TLS buffer
        # already, and the socket may have nothing more until we answer them.
        buffered = c.tls is not None
        while c.quit_reason is None:
            if buffered:
                buffered, data = False, b""
            else:
                # Wait with a 1-byte peek, then take everything there is: an idle reader
                # holds no receive buffer, which is most of the memory of 10,000 of them.
                sock.recv(1, socket.MSG_PEEK)
                try:
                    data = sock.recv(16384, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    continue
                if not data:
                    c.quit_reason = c.quit_reason or c.doomed or "Connection closed"
                    break
            if c.tls is not None:
                try:
                    data = c.tls.feed(data)  # may be b"": a record is not complete yet
                except TLSClosed:
                    c.quit_reason = c.quit_reason or "Connection closed"
                    break
                if c.tls.has_output:  # e.g. a key update to answer; only the writer sends
                    with self.hub.delivering():
                        self.hub.writer.poke(c)
            now = time.monotonic()
            lines = splitter.feed(data)
            if lines:
                c.last_active = now
                c.ping_sent = None
                if bucket is not None and (bucket.debt_after(self._cost(lines), now)
                                           > self.hub.config.flood_kill):
                    self.hub.kill(c, "Excess Flood")
                    break
                self._run_lines(lines)
            # The unfinished-line clock runs only while this reader waits for bytes: time
            # spent throttled or held back is ours, not the client's.
            if not splitter.partial:
                c.partial_since = None
            elif lines or c.partial_since is None:
                c.partial_since = time.monotonic()

    def finish(self) -> None:
        self.hub.remove(self.client)
        self.hub.writer.release(self.client)

    def _cost(self, lines: list[bytes | object]) -> int:
        """How many of ``lines`` flood control counts, at most: a multiline client's batch
        lines are paid for by their opening (each is checked again as it is run)."""
        if not multiline.capable(self.client):
            return len(lines)
        return sum(1 for line in lines if not multiline.batch_form(line))

    def _run_lines(self, lines: list[bytes | object]) -> None:
        c, bucket, hub = self.client, self.bucket, self.hub
        writer = hub.writer
        batches = self.batches
        for line in lines:
            if bucket is not None and not batches.free(line):
                delay = bucket.take(time.monotonic())
                if delay:
                    if _unread_bytes(c.sock) > hub.config.recvq:
                        hub.kill(c, "Excess Flood")
                        return
                    # The throttle: this reader stops reading, so only the flooder's TCP
                    # window closes.  Shutdown interrupts the wait.
                    if hub.stopping.wait(delay):
                        return
            if writer.backlog > BACKLOG_HIGH:
                writer.wait_for_room()
            self.handle_line(line)
            if c.quit_reason is not None or c.doomed is not None:
                return

    def handle_line(self, line: bytes | object) -> None:
        """Parse one line and run its handler; bad input gets one error reply here."""
        c, hub = self.client, self.hub
        if line is P.TOO_LONG:
            self.batches.broken()
            hub.reply_error(c, P.ERR_INPUTTOOLONG)
            return
        assert isinstance(line, bytes)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s:%d %s <- %r", c.host, c.addr[1], c.nick, loggable(line))
        if not line.strip(b"\r \t"):
            return  # empty lines are silently ignored, as the spec says
        try:
            msg = P.parse(line)
        except ProtocolError as exc:
            self.batches.broken()
            self._bad_line(line, exc)
            return
        label = msg.tags.get("label") if msg.tags else None
        if label is not None and not (label and "labeled-response" in c.caps
                                      and "batch" in c.caps
                                      and len(label.encode()) <= MAX_LABEL):
            label = None
        if (msg.command == "BATCH" or self.batches.current is not None
                or (msg.tags and "batch" in msg.tags)) and self.batches.take(msg, label):
            return  # a multiline batch's line: the collector answered (or will, at its end)
        if label:
            # The reply is held back while the command runs, then goes out labeled
            # (one line), as a labeled batch (several) or as ACK (none).
            with hub.delivering():
                hub.writer.hold(c)
            try:
                self._dispatch(msg, line)
            finally:
                with hub.delivering():
                    hub.labeled(c, label)
        else:
            self._dispatch(msg, line)

    def _dispatch(self, msg: Message, line: bytes) -> None:
        """Run ``msg``'s handler after the checks every command shares (451, 461, 421)."""
        c, hub = self.client, self.hub
        cmd = COMMANDS.get(msg.command)
        if cmd is None:
            if c.registered:
                hub.reply_error(c, P.ERR_UNKNOWNCOMMAND, msg.command)
            else:
                hub.reply_error(c, P.ERR_NOTREGISTERED)
            return
        if not c.registered and not cmd.before_registration:
            hub.reply_error(c, P.ERR_NOTREGISTERED)
            return
        if len(msg.params) < cmd.min_params:
            hub.reply_error(c, P.ERR_NEEDMOREPARAMS, msg.command)
            return
        try:
            cmd.handler(hub, c, msg)
        except Exception:
            log.exception("handler %s failed for %s on line %r", msg.command, c,
                          loggable(line)[:200])
            hub.reply(c, P.ERR_UNKNOWNERROR, msg.command, "Internal error, command dropped")

    def _bad_line(self, line: bytes, exc: ProtocolError) -> None:
        c, hub = self.client, self.hub
        word = line.split(b" ", 1)[0].decode("ascii", "replace").upper()
        if not word.isalpha():
            word = "*"
        if exc.too_long:
            hub.reply_error(c, P.ERR_INPUTTOOLONG)
        elif exc.reason == "not valid UTF-8":
            hub.send(c, P.format_line(hub.config.name, "FAIL", word, "INVALID_UTF8",
                                      "Message rejected: text must be UTF-8"))
        else:
            hub.reply(c, P.ERR_UNKNOWNERROR, word, f"Malformed line: {exc.reason}")


SECRET_COMMANDS = (b"AUTHENTICATE", b"REGISTER", b"PASS", b"OPER")


def loggable(line: bytes) -> bytes:
    """``line`` as a log may show it: a command that carries a password shows only its
    name.  The command is found as the parser finds it (past tags, a source, spaces)."""
    words = line.replace(b"\t", b" ").split()
    while words and words[0][:1] in (b"@", b":"):
        words.pop(0)
    word = words[0].upper() if words else b""
    return word + b" <redacted>" if word in SECRET_COMMANDS else line


def _unread_bytes(sock: socket.socket) -> int:
    """Bytes the kernel holds for us that we have not read yet (its receive queue)."""
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
    except OSError:
        return 0
    return buf[0]
