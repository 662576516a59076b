"""A thread-per-connection chat server that speaks a subset of the IRC client protocol.

Threads and who owns what:

* The main thread accepts connections and starts one *reader* thread for each.  A reader
  only ever calls ``recv`` on its socket; it splits lines, parses them and runs the command
  handler.  When its loop ends, its ``finally`` removes the client from the registry exactly
  once and hands the socket to the writer for closing.
* One registry lock guards nick -> client, room -> members and every client's outbound
  buffer.  Handlers hold it only to read or change that state and to append already
  formatted lines to recipients' buffers.  No socket I/O ever happens under it.
* One *writer* thread (:class:`Writer`) does every ``send``, ``shutdown`` and ``close``: it
  coalesces all that is queued for a socket into one non-blocking send and waits for
  writability with ``selectors`` when the peer is slow.  A client whose buffer passes the
  send-queue limit is cut off; nobody else waits for it.
* One *housekeeper* thread enforces the registration deadline, pings idle clients and drops
  those that do not answer or that trickle a line without ever finishing it.

``python server.py --help`` lists the options.
"""

from __future__ import annotations

import argparse
import array
import errno
import fcntl
import logging
import selectors
import signal
import socket
import sys
import termios
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import protocol as P
from protocol import Message, ProtocolError

log = logging.getLogger("chat.server")

VERSION = "chatroom-0.1"
CAPABILITIES = ("multi-prefix", "userhost-in-names")
THREAD_STACK = 256 * 1024  # readers keep shallow stacks; small stacks let 10,000 threads fit
# Kernel send buffer per client.  Left alone, Linux autotunes it up to 4 MB, so a peer that
# stops reading would hide megabytes in the kernel before its send-queue limit ever shows.
SOCKET_SNDBUF = 128 * 1024
CLOSE_GRACE = 5.0  # seconds a closing connection gets to take its last lines
# Bytes queued since the writer last collected.  Past this, readers wait for the writer before
# handling more lines: producers can't outrun the one writer, and memory stays bounded.
BACKLOG_HIGH = 4 * 1024 * 1024


@dataclass
class Config:
    """Everything an operator can set.  Defaults are what ``python server.py`` uses."""

    host: str = "127.0.0.1"
    port: int = 1027
    name: str = "chat.local"
    network: str = "ChatRoom"
    motd: list[str] | None = None
    password: str | None = None
    max_clients: int = 10000
    max_per_ip: int = 0
    sendq: int = 256 * 1024
    register_timeout: float = 60.0
    ping_interval: float = 90.0
    ping_timeout: float = 60.0
    line_timeout: float = 30.0  # an unfinished line older than this closes the connection
    max_channels: int = 20  # rooms per user
    max_members: int = 0  # members per room, 0 for no limit
    flood_control: bool = True
    flood_burst: int = 10
    flood_rate: float = 2.0
    flood_kill: int = 60  # lines waiting beyond the burst before "Excess Flood"
    recvq: int = 8192  # unread bytes a throttled client may have waiting before "Excess Flood"


# --- registry state --------------------------------------------------------------------


class Client:
    """One connection: its identity, its rooms and its outbound buffer."""

    __slots__ = ("sock", "fd", "addr", "host", "nick", "user", "realname", "password",
                 "registered", "cap_negotiating", "caps", "modes", "away", "channels", "prefix",
                 "signon", "last_active", "last_message", "ping_sent", "partial_since",
                 "connected_at", "out", "outlen", "doomed", "closing", "wbuf", "blocked",
                 "quit_reason", "released", "closing_since", "invites")

    def __init__(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.addr = addr
        self.host = addr[0]
        self.nick = "*"
        self.user = ""
        self.realname = ""
        self.password: str | None = None
        self.registered = False
        self.cap_negotiating = False
        self.caps: set[str] = set()
        self.modes: set[str] = set()
        self.away: str | None = None
        self.channels: dict[str, Channel] = {}
        # Rooms it was invited to (casefolded name -> invited by an operator?)
        self.invites: dict[str, bool] = {}
        self.prefix = "*"
        self.signon = time.time()
        self.last_active = time.monotonic()
        self.last_message = self.last_active  # for WHOIS idle time
        self.ping_sent: float | None = None
        self.partial_since: float | None = None
        self.connected_at = time.monotonic()
        # Outbound state.  ``out``/``outlen``/``doomed``/``closing`` under the registry lock;
        # ``wbuf``/``blocked`` belong to the writer thread alone.
        self.out: list[bytes] = []
        self.outlen = 0
        self.doomed: str | None = None  # why the connection is being cut
        self.closing = False  # close once what is queued has been written
        self.closing_since = 0.0
        self.wbuf: memoryview | None = None
        self.blocked = False
        self.quit_reason: str | None = None
        self.released = False

    def __repr__(self) -> str:
        return f"<Client {self.nick} {self.host}:{self.addr[1]}>"

    def update_prefix(self) -> None:
        self.prefix = f"{self.nick}!{self.user}@{self.host}"


class Channel:
    """A room: members with their prefixes (``@`` operator, ``+`` voice), topic and modes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: dict[Client, str] = {}  # client -> "" | "@" | "+" | "@+"
        self.topic = ""
        self.topic_by = ""
        self.topic_at = 0
        self.created = int(time.time())
        self.modes: set[str] = {"n", "t"}
        self.key: str | None = None  # +k
        self.limit = 0  # +l, 0 for none
        self.bans: list[Ban] = []  # +b

    def mode_string(self, show_key: bool) -> tuple[str, ...]:
        """The 324 parameters: ``+flags`` then the key (to members only) and the limit."""
        flags, args = "+" + "".join(sorted(self.modes)), []
        if self.key is not None:
            flags += "k"
            args.append(self.key if show_key else "*")
        if self.limit:
            flags += "l"
            args.append(str(self.limit))
        return (flags, *args)

    def banned(self, c: Client) -> bool:
        if not self.bans:
            return False
        who = P.casefold(c.prefix)
        return any(b.match(who) for b in self.bans)

    def visible_to(self, c: Client) -> bool:
        return "s" not in self.modes or c in self.members


@dataclass
class Ban:
    mask: str  # normalised nick!user@host, casefolded
    by: str
    at: int
    match: Callable[[str], bool]


def ban_mask(text: str) -> str:
    """Complete a ban mask the way established servers do: ``nick`` -> ``nick!*@*``."""
    mask = P.casefold(text)
    if "!" not in mask and "@" not in mask:
        return mask + "!*@*"
    if "!" not in mask:
        return "*!" + mask
    if "@" not in mask:
        return mask + "@*"
    return mask


MAX_BANS = 100
WHOWAS_SIZE = 1000


class Registry:
    """Who is connected and which rooms exist.  Every field is guarded by ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clients: set[Client] = set()
        self.nicks: dict[str, Client] = {}  # casefolded nick -> client (claimed at NICK)
        self.channels: dict[str, Channel] = {}
        self.per_ip: dict[str, int] = {}
        self.max_users = 0
        self.user_count = 0  # registered clients
        self.invisible_count = 0  # registered clients with user mode +i
        # (folded nick, nick, user, host, realname), newest last, for WHOWAS
        self.whowas: deque[tuple[str, str, str, str, str]] = deque(maxlen=WHOWAS_SIZE)

    def remember(self, c: Client) -> None:
        self.whowas.append((P.casefold(c.nick), c.nick, c.user, c.host, c.realname))


# --- the writer ------------------------------------------------------------------------


class Writer:
    """The one thread that writes to, shuts down and closes client sockets.

    Handlers call :meth:`queue` under the registry lock: it appends bytes to the client's
    buffer and, when the buffer goes from empty to non-empty, marks the client dirty.
    After releasing the lock they call :meth:`kick`, which wakes the writer only if it is
    asleep.  The writer takes every dirty buffer in one lock acquisition and writes each
    as a single non-blocking send.
    """

    def __init__(self, registry: Registry, sendq: int) -> None:
        self.reg = registry
        self.sendq = sendq
        self.dirty: list[Client] = []
        self.releases: list[Client] = []
        self.backlog = 0  # bytes queued since the last collection (see BACKLOG_HIGH)
        self.drained = threading.Condition(registry.lock)
        self.sleeping = False
        self.running = True
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self.thread = threading.Thread(target=self.run, name="writer", daemon=True)

    # Called with the registry lock held.
    def queue(self, client: Client, data: bytes) -> None:
        if client.doomed is not None or client.closing:
            return  # ERROR was its last line; nothing may follow it
        client.out.append(data)
        n = len(data)
        client.outlen += n
        self.backlog += n
        if client.outlen == n:
            self.dirty.append(client)
        elif client.outlen > self.sendq and (client.blocked or
                                             client.outlen > self.sendq + BACKLOG_HIGH):
            # Blocked: its socket is full, so it really is not reading.  Not blocked, the
            # bytes are only waiting for the writer, which is not the client's fault.
            self.doom(client, "SendQ exceeded")

    def wait_for_room(self) -> None:
        """Hold a reader back while the writer is far behind (backpressure, not a sleep)."""
        with self.reg.lock:
            if self.backlog > BACKLOG_HIGH and self.running:
                self.drained.wait_for(lambda: self.backlog <= BACKLOG_HIGH or not self.running,
                                      timeout=2.0)

    # Called with the registry lock held.
    def doom(self, client: Client, reason: str) -> None:
        """Cut the connection now, dropping whatever is queued."""
        if client.doomed is None:
            client.doomed = reason
            client.out = []
            client.outlen = 0
            self.dirty.append(client)

    # Called with the registry lock held.
    def close_after_flush(self, client: Client) -> None:
        if not client.closing:
            client.closing = True
            client.closing_since = time.monotonic()
        if client.outlen == 0:
            self.dirty.append(client)

    # Called with the registry lock held: True if the caller must kick after unlocking.
    def needs_kick(self) -> bool:
        if self.sleeping and (self.dirty or self.releases):
            self.sleeping = False
            return True
        return False

    def kick(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full or closed: the writer is awake or gone either way

    def release(self, client: Client) -> None:
        """The reader is done with ``client``: flush what is left, then close the socket."""
        with self.reg.lock:
            self.releases.append(client)
            wake = self.needs_kick()
        if wake:
            self.kick()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with self.reg.lock:
            self.running = False
            self.drained.notify_all()
        self.kick()
        self.thread.join(timeout=5)

    def run(self) -> None:
        while True:
            with self.reg.lock:
                batch, self.dirty = self.dirty, []
                releases, self.releases = self.releases, []
                jobs: list[tuple[Client, list[bytes], str | None, bool]] = []
                for c in batch:
                    if c.released:
                        continue
                    if c.doomed is not None:
                        jobs.append((c, [], c.doomed, False))
                        continue
                    if c.blocked:
                        continue  # its writability event takes the buffer
                    jobs.append((c, c.out, None, c.closing))
                    c.out = []
                    c.outlen = 0
                if self.backlog > BACKLOG_HIGH:
                    self.drained.notify_all()
                self.backlog = 0
                running = self.running
                idle = not batch and not releases
                self.sleeping = idle and running
            if not running and idle:
                break
            timeout = None if idle else 0
            for key, _ in self.selector.select(timeout):
                if key.data is None:
                    self._drain_wake()
                else:
                    self._guarded(self._on_writable, key.data)
            for c, chunks, doomed, closing in jobs:
                self._guarded(self._flush, c, chunks, doomed, closing)
            for c in releases:
                self._guarded(self._close, c)
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _guarded(self, fn: Callable[..., None], c: Client, *args: object) -> None:
        """Run one client's step; a bug there must cut that client, never stop all output."""
        try:
            fn(c, *args)
        except Exception:
            log.exception("writer failed on %s; disconnecting it", c)
            with self.reg.lock:
                self.doom(c, "Internal error")
            self._shutdown(c)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _flush(self, c: Client, chunks: list[bytes], doomed: str | None, closing: bool) -> None:
        if doomed is not None:
            self._shutdown(c)
            return
        if c.blocked:
            return  # a duplicate entry: the writability path owns the rest, closing included
        if chunks:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if not self._send(c, memoryview(data)):
                return
        if closing:
            self._shutdown(c)

    def _send(self, c: Client, data: memoryview) -> bool:
        """Write what the socket takes now; True if all of it went."""
        try:
            n = c.sock.send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            # Reset or broken: stop watching it (a dead socket polls writable forever) and
            # drop what is queued; the reader sees the shutdown and cleans up.
            if c.blocked:
                self.selector.unregister(c.fd)
                c.blocked = False
            c.wbuf = None
            with self.reg.lock:
                self.doom(c, _reset_reason(exc))
            self._shutdown(c)
            return False
        if n == len(data):
            return True
        c.wbuf = data[n:]
        if not c.blocked:
            c.blocked = True
            self.selector.register(c.fd, selectors.EVENT_WRITE, c)
        return False

    def _on_writable(self, c: Client) -> None:
        assert c.wbuf is not None
        if not self._send(c, c.wbuf):
            return
        c.wbuf = None
        with self.reg.lock:
            chunks, c.out, c.outlen = c.out, [], 0
            doomed, closing = c.doomed, c.closing
        c.blocked = False
        self.selector.unregister(c.fd)
        self._flush(c, chunks, doomed, closing)

    def _shutdown(self, c: Client) -> None:
        # Wakes the reader (its recv returns b""), which then cleans up and releases.
        if c.released:
            return
        try:
            c.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _close(self, c: Client) -> None:
        with self.reg.lock:
            chunks, c.out, c.outlen = c.out, [], 0
        if c.blocked:
            self.selector.unregister(c.fd)
            c.blocked = False
        elif chunks and c.doomed is None:
            # Best effort: the last words (ERROR, say) go if the socket takes them now.
            try:
                c.sock.send(b"".join(chunks), socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except OSError:
                pass
        self._shutdown(c)
        c.released = True
        c.sock.close()


# --- commands --------------------------------------------------------------------------


Handler = Callable[["Server", Client, Message], None]


@dataclass(frozen=True)
class Command:
    handler: Handler
    min_params: int = 0
    before_registration: bool = False


COMMANDS: dict[str, Command] = {}


def command(name: str, min_params: int = 0,
            before_registration: bool = False) -> Callable[[Handler], Handler]:
    """Declare a handler once with its metadata; ``handle_line`` checks 451/461 for all."""

    def register(fn: Handler) -> Handler:
        COMMANDS[name] = Command(fn, min_params, before_registration)
        return fn

    return register


class Server:
    """The listener, the registry and the threads around it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.reg = Registry()
        self.writer = Writer(self.reg, config.sendq)
        self.created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        self.listener: socket.socket | None = None
        self.address: tuple[str, int] = (config.host, config.port)
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self.readers: set[threading.Thread] = set()
        self._readers_lock = threading.Lock()
        self._housekeeper = threading.Thread(target=self._housekeep, name="housekeeper",
                                             daemon=True)
        self.isupport = self._isupport_tokens()

    # --- lifecycle -------------------------------------------------------------------

    def bind(self) -> tuple[str, int]:
        """Open the listening socket; returns the address actually bound (port 0 picks one)."""
        infos = socket.getaddrinfo(self.config.host, self.config.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(1024)
        self.listener = sock
        self.address = sock.getsockname()[:2]
        return self.address

    def serve_forever(self) -> None:
        """Accept connections until :meth:`shutdown`; then close everything and return."""
        if self.listener is None:
            self.bind()
        assert self.listener is not None
        threading.stack_size(THREAD_STACK)
        self.writer.start()
        self._housekeeper.start()
        log.info("listening on %s:%d", *self.address)
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select():
                    if key.fileobj is self.listener:
                        self._accept()
        finally:
            sel.close()
            self._close_all()

    def shutdown(self) -> None:
        """Ask :meth:`serve_forever` to stop; safe from any thread or a signal handler."""
        self._stop.set()
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            sock, addr = self.listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                log.error("cannot accept: out of file descriptors (%s)", exc)
                time.sleep(0.1)  # let closes catch up rather than spin on a full table
            return
        cfg = self.config
        host = addr[0]
        with self.reg.lock:
            full = len(self.reg.clients) >= cfg.max_clients
            too_many = cfg.max_per_ip > 0 and self.reg.per_ip.get(host, 0) >= cfg.max_per_ip
            if not (full or too_many):
                client = Client(sock, addr)
                self.reg.clients.add(client)
                self.reg.per_ip[host] = self.reg.per_ip.get(host, 0) + 1
        if full or too_many:
            reason = "Server full" if full else "Too many connections from your address"
            log.warning("refused %s:%d: %s", host, addr[1], reason)
            try:
                sock.send(f"ERROR :{reason}\r\n".encode(), socket.MSG_DONTWAIT)
            except OSError:
                pass
            sock.close()
            return
        log.info("connect %s:%d", host, addr[1])
        t = threading.Thread(target=self._read_loop, args=(client,), daemon=True,
                             name=f"reader-{host}:{addr[1]}")
        with self._readers_lock:
            self.readers.add(t)
        try:
            t.start()
        except RuntimeError as exc:  # can't start new thread
            log.error("cannot start a thread for %s:%d: %s", host, addr[1], exc)
            with self._readers_lock:
                self.readers.discard(t)
            with self.reg.lock:
                self._forget(client)
            sock.close()

    def _close_all(self) -> None:
        """Tell every client the server is going down, then close every socket."""
        log.info("shutting down")
        assert self.listener is not None
        self.listener.close()
        with self.delivering():
            clients = list(self.reg.clients)
            for c in clients:
                c.quit_reason = "Server shutting down"
                self.goodbye(c, c.quit_reason)
        deadline = time.monotonic() + 1.5
        for t in list(self.readers):
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        with self.delivering():
            for c in self.reg.clients:
                self.writer.doom(c, "Server shutting down")
        for t in list(self.readers):
            t.join(timeout=max(0.1, deadline + 0.5 - time.monotonic()))
        self.writer.stop()
        self._stop.set()
        self._wake_r.close()
        self._wake_w.close()

    # --- per-connection reader ---------------------------------------------------------

    def _read_loop(self, c: Client) -> None:
        splitter = P.LineSplitter()
        bucket = FloodBucket(self.config) if self.config.flood_control else None
        sock = c.sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SNDBUF)
            while c.quit_reason is None:
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
                now = time.monotonic()
                lines = splitter.feed(data)
                if lines:
                    c.last_active = now
                    c.ping_sent = None
                    if bucket is not None and not bucket.admit(len(lines), now):
                        self.kill(c, "Excess Flood")
                        break
                    self._run_lines(c, lines, bucket)
                # The unfinished-line clock runs only while this reader waits for bytes: time
                # spent throttled or held back is ours, not the client's.
                if not splitter.partial:
                    c.partial_since = None
                elif lines or c.partial_since is None:
                    c.partial_since = time.monotonic()
        except OSError as exc:
            c.quit_reason = c.quit_reason or c.doomed or _reset_reason(exc)
        except Exception:
            log.exception("reader for %s crashed", c)
            c.quit_reason = c.quit_reason or "Internal error"
        finally:
            self._disconnect(c)
            self.writer.release(c)
            with self._readers_lock:
                self.readers.discard(threading.current_thread())

    def _run_lines(self, c: Client, lines: list[bytes | object],
                   bucket: FloodBucket | None) -> None:
        writer = self.writer
        for line in lines:
            if bucket is not None:
                delay = bucket.take(time.monotonic())
                if delay:
                    if _unread_bytes(c.sock) > self.config.recvq:
                        self.kill(c, "Excess Flood")
                        return
                    # The throttle: this reader stops reading, so only the flooder's TCP
                    # window closes.  Shutdown interrupts the wait.
                    if self._stop.wait(delay):
                        return
            if writer.backlog > BACKLOG_HIGH:
                writer.wait_for_room()
            self.handle_line(c, line)
            if c.quit_reason is not None or c.doomed is not None:
                return

    def handle_line(self, c: Client, line: bytes | object) -> None:
        """Parse one line and run its handler; bad input gets one error reply here."""
        if line is P.TOO_LONG:
            self.reply(c, P.ERR_INPUTTOOLONG, "Input line was too long")
            return
        assert isinstance(line, bytes)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s:%d %s <- %r", c.host, c.addr[1], c.nick, line)
        if not line.strip(b"\r \t"):
            return  # empty lines are silently ignored, as the spec says
        try:
            msg = P.parse(line)
        except ProtocolError as exc:
            self._bad_line(c, line, exc)
            return
        cmd = COMMANDS.get(msg.command)
        if cmd is None:
            if c.registered:
                self.reply(c, P.ERR_UNKNOWNCOMMAND, msg.command, "Unknown command")
            else:
                self.reply(c, P.ERR_NOTREGISTERED, "You have not registered")
            return
        if not c.registered and not cmd.before_registration:
            self.reply(c, P.ERR_NOTREGISTERED, "You have not registered")
            return
        if len(msg.params) < cmd.min_params:
            self.reply(c, P.ERR_NEEDMOREPARAMS, msg.command, "Not enough parameters")
            return
        try:
            cmd.handler(self, c, msg)
        except Exception:
            log.exception("handler %s failed for %s on line %r", msg.command, c, line[:200])
            self.reply(c, P.ERR_UNKNOWNERROR, msg.command, "Internal error, command dropped")

    def _bad_line(self, c: Client, line: bytes, exc: ProtocolError) -> None:
        word = line.split(b" ", 1)[0].decode("ascii", "replace").upper()
        if not word.isalpha():
            word = "*"
        if exc.too_long:
            self.reply(c, P.ERR_INPUTTOOLONG, "Input line was too long")
        elif exc.reason == "not valid UTF-8":
            self.send(c, P.format_line(self.config.name, "FAIL", word, "INVALID_UTF8",
                                       "Message rejected: text must be UTF-8"))
        else:
            self.reply(c, P.ERR_UNKNOWNERROR, word, f"Malformed line: {exc.reason}")

    # --- leaving ------------------------------------------------------------------------

    def kill(self, c: Client, reason: str) -> None:
        """Disconnect ``c`` with an ERROR line telling it why (from any thread)."""
        log.info("closing %s: %s", c, reason)
        with self.delivering():
            if c.quit_reason is None:
                c.quit_reason = reason
            self.goodbye(c, reason)

    def _disconnect(self, c: Client) -> None:
        """Remove ``c`` from the registry and tell its room-mates, exactly once."""
        reason = c.quit_reason or "Connection closed"
        with self.delivering():
            if c not in self.reg.clients:
                return
            if c.registered:
                self.reg.remember(c)
                line = P.format_line(c.prefix, "QUIT", reason, truncate=True, trailing=True)
                for peer in self._peers(c):
                    self.writer.queue(peer, line)
            self._forget(c)
        log.info("quit %s %s:%d (%s)", c.nick, c.host, c.addr[1], reason)

    def _forget(self, c: Client) -> None:
        """Drop every trace of ``c`` from the registry.  Caller holds the lock."""
        if c.registered and c in self.reg.clients:
            self.reg.user_count -= 1
            if "i" in c.modes:
                self.reg.invisible_count -= 1
        for ch in list(c.channels.values()):
            self._remove_member(ch, c)
        c.channels.clear()
        key = P.casefold(c.nick)
        if self.reg.nicks.get(key) is c:
            del self.reg.nicks[key]
        self.reg.clients.discard(c)
        n = self.reg.per_ip.get(c.host, 0) - 1
        if n > 0:
            self.reg.per_ip[c.host] = n
        else:
            self.reg.per_ip.pop(c.host, None)

    def _remove_member(self, ch: Channel, c: Client) -> None:
        ch.members.pop(c, None)
        c.channels.pop(P.casefold(ch.name), None)
        if not ch.members:
            self.reg.channels.pop(P.casefold(ch.name), None)

    def _peers(self, c: Client) -> set[Client]:
        """Everyone who shares a room with ``c``, without ``c``.  Caller holds the lock."""
        peers: set[Client] = set()
        for ch in c.channels.values():
            peers.update(ch.members)
        peers.discard(c)
        return peers

    # --- output helpers ----------------------------------------------------------------

    def send(self, c: Client, data: bytes) -> None:
        with self.delivering():
            self.writer.queue(c, data)

    def numeric(self, c: Client, code: str, *params: str) -> bytes:
        # Middle parameters often echo what the client sent: make each one word, so a
        # hostile echo can never break the reply (the last one may hold spaces).
        safe = [p if p and " " not in p and p[0] != ":" and P.strip_bad(p) == p
                else P.echo_param(p) for p in params[:-1]]
        return P.format_line(self.config.name, code, c.nick, *safe, *params[-1:],
                             truncate=True)

    def reply(self, c: Client, code: str, *params: str) -> None:
        self.send(c, self.numeric(c, code, *params))

    def send_many(self, c: Client, lines: Iterable[bytes]) -> None:
        with self.delivering():
            self.to_client(c, lines)

    def to_room(self, ch: Channel, line: bytes) -> None:
        """Queue ``line`` to every member of ``ch``.  Caller holds the lock."""
        for m in ch.members:
            self.writer.queue(m, line)

    def to_client(self, c: Client, lines: Iterable[bytes]) -> None:
        """Queue ``lines`` to ``c``, in order.  Caller holds the lock."""
        for line in lines:
            self.writer.queue(c, line)

    def goodbye(self, c: Client, reason: str) -> None:
        """Queue the ERROR that ends ``c``'s connection; it goes out last.  Lock held."""
        self.writer.queue(c, P.format_line(None, "ERROR", f"Closing Link: {c.host} ({reason})",
                                           truncate=True))
        self.writer.close_after_flush(c)

    @contextmanager
    def delivering(self) -> Iterator[None]:
        """Hold the registry lock to read or change state and queue lines to clients; once
        it is released, wake the writer if it was asleep.  Every handler's unit of work."""
        with self.reg.lock:
            try:
                yield
            finally:
                wake = self.writer.needs_kick()
        if wake:
            self.writer.kick()

    # --- registration ------------------------------------------------------------------

    def _isupport_tokens(self) -> list[str]:
        cfg = self.config
        return [
            f"AWAYLEN={P.AWAYLEN}", "CASEMAPPING=ascii", f"CHANLIMIT=#:{cfg.max_channels}",
            "CHANMODES=b,k,l,imnst", f"CHANNELLEN={P.CHANNELLEN}", "CHANTYPES=#",
            f"KICKLEN={P.KICKLEN}", f"MAXLIST=b:{MAX_BANS}", "MODES=4", f"NETWORK={cfg.network}",
            f"NICKLEN={P.NICKLEN}", "PREFIX=(ov)@+", "STATUSMSG=@+",
            "TARGMAX=PRIVMSG:4,NOTICE:4,JOIN:,PART:,NAMES:10,WHOIS:1,KICK:4",
            f"TOPICLEN={P.TOPICLEN}", "UTF8ONLY", f"USERLEN={P.USERLEN}",
        ]

    def try_register(self, c: Client) -> None:
        if c.registered or c.cap_negotiating or c.nick == "*" or not c.user:
            return
        if self.config.password is not None and c.password != self.config.password:
            self.reply(c, P.ERR_PASSWDMISMATCH, "Password incorrect")
            self.kill(c, "Bad password")
            return
        cfg = self.config
        with self.delivering():
            # Registered and welcomed in one step, so no other line can reach it before 001.
            c.registered = True
            c.update_prefix()
            self.reg.user_count += 1
            self.reg.max_users = max(self.reg.max_users, self.reg.user_count)
            lines = [
                self.numeric(c, P.RPL_WELCOME, f"Welcome to the {cfg.network} Network, {c.prefix}"),
                self.numeric(c, P.RPL_YOURHOST,
                             f"Your host is {cfg.name}, running version {VERSION}"),
                self.numeric(c, P.RPL_CREATED, f"This server was created {self.created}"),
                self.numeric(c, P.RPL_MYINFO, cfg.name, VERSION, "i", "biklmnostv", "bklov"),
            ]
            lines += self.isupport_lines(c)
            lines += self.lusers_lines(c)
            lines += self.motd_lines(c)
            self.to_client(c, lines)
        log.info("registered %s as %s", f"{c.host}:{c.addr[1]}", c.prefix)

    def isupport_lines(self, c: Client) -> list[bytes]:
        toks = self.isupport
        return [self.numeric(c, P.RPL_ISUPPORT, *toks[i:i + 12], "are supported by this server")
                for i in range(0, len(toks), 12)]

    def lusers_lines(self, c: Client) -> list[bytes]:
        """The LUSERS numerics.  Caller holds the lock (the counts are kept, not counted)."""
        reg = self.reg
        total, invisible, peak = reg.user_count, reg.invisible_count, reg.max_users
        unknown = len(reg.clients) - total
        channels = len(reg.channels)
        lines = [self.numeric(c, P.RPL_LUSERCLIENT,
                              f"There are {total - invisible} users and {invisible} invisible "
                              f"on 1 servers")]
        if unknown:
            lines.append(self.numeric(c, P.RPL_LUSERUNKNOWN, str(unknown),
                                      "unknown connection(s)"))
        if channels:
            lines.append(self.numeric(c, P.RPL_LUSERCHANNELS, str(channels), "channels formed"))
        lines += [
            self.numeric(c, P.RPL_LUSERME, f"I have {total} clients and 0 servers"),
            # The optional "<u> <m>" parameters are left out: the peak is in the text.
            self.numeric(c, P.RPL_LOCALUSERS, f"Current local users {total}, max {peak}"),
            self.numeric(c, P.RPL_GLOBALUSERS, f"Current global users {total}, max {peak}"),
        ]
        return lines

    def motd_lines(self, c: Client) -> list[bytes]:
        motd = self.config.motd
        if not motd:
            return [self.numeric(c, P.ERR_NOMOTD, "MOTD File is missing")]
        lines = [self.numeric(c, P.RPL_MOTDSTART, f"- {self.config.name} Message of the day - ")]
        lines += [self.numeric(c, P.RPL_MOTD, f"- {text}") for text in motd]
        lines.append(self.numeric(c, P.RPL_ENDOFMOTD, "End of /MOTD command."))
        return lines

    # --- names -----------------------------------------------------------------------

    def names_lines(self, c: Client, ch: Channel) -> list[bytes]:
        """353 lines that each fit in 512 bytes, then 366.  Caller holds the lock."""
        multi = "multi-prefix" in c.caps
        full = "userhost-in-names" in c.caps
        entries = []
        for m, pfx in ch.members.items():
            shown = pfx if multi else pfx[:1]
            entries.append(shown + (m.prefix if full else m.nick))
        symbol = "@" if "s" in ch.modes else "="  # '@' marks a secret room
        head = P.format_line(self.config.name, P.RPL_NAMREPLY, c.nick, symbol, ch.name, "x")
        room = P.MAX_LINE - len(head) - 2
        lines: list[bytes] = []
        batch: list[str] = []
        size = 0
        for e in entries:
            n = len(e.encode()) + 1
            if batch and size + n > room:
                lines.append(self.numeric(c, P.RPL_NAMREPLY, symbol, ch.name, " ".join(batch)))
                batch, size = [], 0
            batch.append(e)
            size += n
        if batch:
            lines.append(self.numeric(c, P.RPL_NAMREPLY, symbol, ch.name, " ".join(batch)))
        lines.append(self.numeric(c, P.RPL_ENDOFNAMES, ch.name, "End of /NAMES list"))
        return lines

    def find_channel(self, name: str) -> Channel | None:
        return self.reg.channels.get(P.casefold(name))

    def find_nick(self, nick: str) -> Client | None:
        c = self.reg.nicks.get(P.casefold(nick))
        return c if c is not None and c.registered else None

    # --- timers ----------------------------------------------------------------------

    def _housekeep(self) -> None:
        cfg = self.config
        tick = max(0.05, min(1.0, cfg.register_timeout / 4, cfg.ping_interval / 4,
                             cfg.ping_timeout / 4, cfg.line_timeout / 4))
        while not self._stop.wait(tick):
            now = time.monotonic()
            with self.reg.lock:
                clients = list(self.reg.clients)
            for c in clients:
                try:
                    self._check_timers(c, now)
                except Exception:  # a bug here must not end every timer for everyone
                    log.exception("timer check failed for %s", c)

    def _check_timers(self, c: Client, now: float) -> None:
        cfg = self.config
        if c.closing and now - c.closing_since > CLOSE_GRACE:
            # Its last words could not be written (it stopped reading): cut it.
            with self.delivering():
                self.writer.doom(c, c.quit_reason or "Closing")
            return
        if c.quit_reason is not None:
            return
        # Each field is read once: the reader thread may reset it meanwhile.
        partial_since, ping_sent = c.partial_since, c.ping_sent
        if not c.registered and now - c.connected_at > cfg.register_timeout:
            self.kill(c, "Registration timed out")
        elif partial_since is not None and now - partial_since > cfg.line_timeout:
            self.kill(c, "Read timeout: line not finished")
        elif ping_sent is not None:
            if now - ping_sent > cfg.ping_timeout:
                self.kill(c, f"Ping timeout: {int(now - c.last_active)} seconds")
        elif c.registered and now - c.last_active > cfg.ping_interval:
            c.ping_sent = now
            self.send(c, P.format_line(None, "PING", cfg.name))


class FloodBucket:
    """Token bucket for commands: a burst, then a steady rate; far over it is a flood."""

    __slots__ = ("burst", "rate", "kill", "tokens", "stamp")

    def __init__(self, cfg: Config) -> None:
        self.burst = float(cfg.flood_burst)
        self.rate = cfg.flood_rate
        self.kill = cfg.flood_kill
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def admit(self, n: int, now: float) -> bool:
        """False when ``n`` more lines would put the client far beyond its allowance."""
        self._refill(now)
        return self.tokens - n >= -self.kill

    def take(self, now: float) -> float:
        """Spend one token; return how long to wait first if the bucket was empty."""
        self._refill(now)
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


def _unread_bytes(sock: socket.socket) -> int:
    """Bytes the kernel holds for us that we have not read yet (its receive queue)."""
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
    except OSError:
        return 0
    return buf[0]


def _reset_reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionResetError):
        return "Connection reset by peer"
    if isinstance(exc, TimeoutError):
        return "Connection timed out"
    return f"Connection error: {exc.strerror or exc}"


# --- handlers: registration --------------------------------------------------------------


@command("CAP", 1, before_registration=True)
def cmd_cap(srv: Server, c: Client, msg: Message) -> None:
    sub = msg.params[0].upper()
    target = c.nick
    if sub == "LS":
        if not c.registered:
            c.cap_negotiating = True
        srv.send(c, P.format_line(srv.config.name, "CAP", target, "LS", " ".join(CAPABILITIES)))
    elif sub == "LIST":
        srv.send(c, P.format_line(srv.config.name, "CAP", target, "LIST", " ".join(sorted(c.caps))))
    elif sub == "REQ":
        if not c.registered:
            c.cap_negotiating = True
        wanted = msg.params[1].split() if len(msg.params) > 1 else []
        names = [w.lstrip("-") for w in wanted]
        text = " ".join(wanted)
        if wanted and all(n in CAPABILITIES for n in names):
            for w in wanted:
                if w.startswith("-"):
                    c.caps.discard(w[1:])
                else:
                    c.caps.add(w)
            srv.send(c, P.format_line(srv.config.name, "CAP", target, "ACK", text))
        else:
            srv.send(c, P.format_line(srv.config.name, "CAP", target, "NAK", text, truncate=True))
    elif sub == "END":
        c.cap_negotiating = False
        srv.try_register(c)
    else:
        srv.reply(c, P.ERR_INVALIDCAPCMD, P.echo_param(sub, 20), "Invalid CAP command")


@command("PASS", 1, before_registration=True)
def cmd_pass(srv: Server, c: Client, msg: Message) -> None:
    if c.registered:
        srv.reply(c, P.ERR_ALREADYREGISTERED, "You may not reregister")
        return
    c.password = msg.params[0]


@command("NICK", 0, before_registration=True)
def cmd_nick(srv: Server, c: Client, msg: Message) -> None:
    if not msg.params or not msg.params[0]:
        srv.reply(c, P.ERR_NONICKNAMEGIVEN, "No nickname given")
        return
    new = msg.params[0]
    if not P.valid_nick(new):
        srv.reply(c, P.ERR_ERRONEUSNICKNAME, P.echo_param(new),
                  "Erroneous nickname")
        return
    key = P.casefold(new)
    with srv.delivering():
        holder = srv.reg.nicks.get(key)
        if holder is not None and holder is not c:
            taken = True
        else:
            taken = False
            old = c.nick
            if new == old:
                return
            if old != "*" and srv.reg.nicks.get(P.casefold(old)) is c:
                del srv.reg.nicks[P.casefold(old)]
            if c.registered:
                srv.reg.remember(c)  # under the old nick, before it changes
            srv.reg.nicks[key] = c
            c.nick = new
            if c.registered:
                line = P.format_line(c.prefix, "NICK", new)
                c.update_prefix()
                srv.writer.queue(c, line)
                for peer in srv._peers(c):
                    srv.writer.queue(peer, line)
    if taken:
        srv.reply(c, P.ERR_NICKNAMEINUSE, new, "Nickname is already in use")
    elif c.registered:
        log.info("nick %s -> %s (%s)", old, new, c.host)
    else:
        srv.try_register(c)


@command("USER", 4, before_registration=True)
def cmd_user(srv: Server, c: Client, msg: Message) -> None:
    if c.registered:
        srv.reply(c, P.ERR_ALREADYREGISTERED, "You may not reregister")
        return
    if not msg.params[0] or not msg.params[3]:
        srv.reply(c, P.ERR_NEEDMOREPARAMS, "USER", "Not enough parameters")
        return
    # Nothing usable left (all non-ASCII, say): a default, as Modern suggests, not an error.
    user = P.sanitize_user(msg.params[0], P.USERLEN - 1) or "user"
    c.user = "~" + user  # no ident lookup, so mark the user name as unverified
    c.realname = P.truncate_text(msg.params[3], 100)
    srv.try_register(c)


@command("PING", 1, before_registration=True)
def cmd_ping(srv: Server, c: Client, msg: Message) -> None:
    srv.send(c, P.format_line(srv.config.name, "PONG", srv.config.name, msg.params[0],
                              truncate=True))


@command("PONG", 0, before_registration=True)
def cmd_pong(srv: Server, c: Client, msg: Message) -> None:
    """Nothing to do: the reader counts any line as life (it resets the ping timer)."""


@command("QUIT", 0, before_registration=True)
def cmd_quit(srv: Server, c: Client, msg: Message) -> None:
    text = P.truncate_text(msg.params[0], 300) if msg.params else ""
    reason = f"Quit: {text}" if text else "Quit"
    c.quit_reason = reason
    with srv.delivering():
        srv.goodbye(c, reason)


# --- handlers: rooms ---------------------------------------------------------------------


@command("JOIN", 1)
def cmd_join(srv: Server, c: Client, msg: Message) -> None:
    if msg.params[0] == "0":
        part_all(srv, c, "Left all channels")
        return
    keys = msg.params[1].split(",") if len(msg.params) > 1 else []
    for i, name in enumerate(msg.params[0].split(",")):
        if name:
            join_one(srv, c, name, keys[i] if i < len(keys) else "")


def join_refusal(srv: Server, c: Client, ch: Channel, key: str) -> tuple[str, ...] | None:
    """Why ``c`` may not join ``ch`` (numeric, channel, text), or None.  Lock held."""
    cfg = srv.config
    if cfg.max_members and len(ch.members) >= cfg.max_members:
        return (P.ERR_CHANNELISFULL, ch.name, "Cannot join channel (+l)")
    by_op = c.invites.get(P.casefold(ch.name))
    if by_op:
        return None  # an operator's invitation gets past +i, +k, +l and bans
    if ch.banned(c):
        return (P.ERR_BANNEDFROMCHAN, ch.name, "Cannot join channel (+b)")
    if "i" in ch.modes:
        return (P.ERR_INVITEONLYCHAN, ch.name, "Cannot join channel (+i)")
    if ch.key is not None and key != ch.key:
        return (P.ERR_BADCHANNELKEY, ch.name, "Cannot join channel (+k)")
    if ch.limit and len(ch.members) >= ch.limit and by_op is None:
        # Any member's invitation gets past the limit (Modern), an outsider's nothing.
        return (P.ERR_CHANNELISFULL, ch.name, "Cannot join channel (+l)")
    return None


def join_one(srv: Server, c: Client, name: str, chankey: str = "") -> None:
    cfg = srv.config
    if not P.valid_channel(name):
        srv.reply(c, P.ERR_NOSUCHCHANNEL, P.echo_param(name), "No such channel")
        return
    key = P.casefold(name)
    error: tuple[str, ...] | None = None
    with srv.delivering():
        ch = srv.reg.channels.get(key)
        if ch is not None and c in ch.members:
            return
        if len(c.channels) >= cfg.max_channels:
            error = (P.ERR_TOOMANYCHANNELS, name, "You have joined too many channels")
        elif ch is not None:
            error = join_refusal(srv, c, ch, chankey)
        if error is None:
            if ch is None:
                ch = srv.reg.channels[key] = Channel(name)
                ch.members[c] = "@"
            else:
                ch.members[c] = ""
                c.invites.pop(key, None)
            c.channels[key] = ch
            line = P.format_line(c.prefix, "JOIN", ch.name)
            srv.to_room(ch, line)
            if ch.topic:
                srv.writer.queue(c, srv.numeric(c, P.RPL_TOPIC, ch.name, ch.topic))
                srv.writer.queue(c, srv.numeric(c, P.RPL_TOPICWHOTIME, ch.name, ch.topic_by,
                                                str(ch.topic_at)))
            srv.to_client(c, srv.names_lines(c, ch))
    if error:
        srv.reply(c, *error)
    else:
        log.info("join %s %s", c.nick, name)


def leave(srv: Server, c: Client, ch: Channel, line: bytes) -> None:
    """Tell every member (``c`` too) that ``c`` leaves ``ch``, then remove it.  Lock held."""
    srv.to_room(ch, line)
    srv._remove_member(ch, c)


def part_all(srv: Server, c: Client, reason: str) -> None:
    """JOIN 0: leave every room in one step (a KICK racing with it can't break it)."""
    with srv.delivering():
        for ch in list(c.channels.values()):
            leave(srv, c, ch, P.format_line(c.prefix, "PART", ch.name, reason, trailing=True))


@command("PART", 1)
def cmd_part(srv: Server, c: Client, msg: Message) -> None:
    reason = msg.params[1] if len(msg.params) > 1 else ""
    for name in msg.params[0].split(","):
        if name:
            part_one(srv, c, name, reason)


def part_one(srv: Server, c: Client, name: str, reason: str) -> None:
    with srv.delivering():
        ch = srv.find_channel(name)
        if ch is None:
            error: tuple[str, ...] | None = (P.ERR_NOSUCHCHANNEL, P.echo_param(name),
                                             "No such channel")
        elif c not in ch.members:
            error = (P.ERR_NOTONCHANNEL, ch.name, "You're not on that channel")
        else:
            error = None
            params = (ch.name, P.truncate_text(reason, 300)) if reason else (ch.name,)
            leave(srv, c, ch, P.format_line(c.prefix, "PART", *params, truncate=True,
                                            trailing=len(params) > 1))
    if error:
        srv.reply(c, *error)
    else:
        log.info("part %s %s", c.nick, name)


@command("TOPIC", 1)
def cmd_topic(srv: Server, c: Client, msg: Message) -> None:
    name = msg.params[0]
    with srv.delivering():
        ch = srv.find_channel(name)
        if ch is None:
            out = [srv.numeric(c, P.ERR_NOSUCHCHANNEL, P.echo_param(name), "No such channel")]
        elif len(msg.params) == 1:
            if c not in ch.members:
                out = [srv.numeric(c, P.ERR_NOTONCHANNEL, ch.name, "You're not on that channel")]
            elif not ch.topic:
                out = [srv.numeric(c, P.RPL_NOTOPIC, ch.name, "No topic is set")]
            else:
                out = [srv.numeric(c, P.RPL_TOPIC, ch.name, ch.topic),
                       srv.numeric(c, P.RPL_TOPICWHOTIME, ch.name, ch.topic_by, str(ch.topic_at))]
        elif c not in ch.members:
            out = [srv.numeric(c, P.ERR_NOTONCHANNEL, ch.name, "You're not on that channel")]
        elif "t" in ch.modes and "@" not in ch.members[c]:
            out = [srv.numeric(c, P.ERR_CHANOPRIVSNEEDED, ch.name, "You're not channel operator")]
        else:
            out = []
            ch.topic = P.truncate_text(msg.params[1], P.TOPICLEN)
            ch.topic_by = c.prefix
            ch.topic_at = int(time.time())
            line = P.format_line(c.prefix, "TOPIC", ch.name, ch.topic, truncate=True,
                                 trailing=True)
            srv.to_room(ch, line)
        srv.to_client(c, out)


@command("NAMES", 0)
def cmd_names(srv: Server, c: Client, msg: Message) -> None:
    if not msg.params:
        srv.reply(c, P.RPL_ENDOFNAMES, "*", "End of /NAMES list")
        return
    # Names of every room asked for, then one 366 naming the whole list (RFC 2812, Modern).
    with srv.delivering():
        for name in msg.params[0].split(",")[:10]:
            ch = srv.find_channel(name)
            if ch is not None and ch.visible_to(c):
                srv.to_client(c, srv.names_lines(c, ch)[:-1])
        srv.writer.queue(c, srv.numeric(c, P.RPL_ENDOFNAMES, P.echo_param(msg.params[0], 200),
                                        "End of /NAMES list"))


@command("LIST", 0)
def cmd_list(srv: Server, c: Client, msg: Message) -> None:
    wanted = {P.casefold(n) for n in msg.params[0].split(",")} if msg.params else None
    with srv.delivering():
        lines = [srv.numeric(c, P.RPL_LISTSTART, "Channel", "Users  Name")]
        for key, ch in srv.reg.channels.items():
            if (wanted is None or key in wanted) and ch.visible_to(c):
                lines.append(srv.numeric(c, P.RPL_LIST, ch.name, str(len(ch.members)),
                                         f"[+{''.join(sorted(ch.modes))}] {ch.topic}"))
        lines.append(srv.numeric(c, P.RPL_LISTEND, "End of /LIST"))
        srv.to_client(c, lines)


# --- handlers: messages ------------------------------------------------------------------


@command("PRIVMSG", 0)
def cmd_privmsg(srv: Server, c: Client, msg: Message) -> None:
    relay(srv, c, msg, notice=False)


@command("NOTICE", 0)
def cmd_notice(srv: Server, c: Client, msg: Message) -> None:
    relay(srv, c, msg, notice=True)


def relay(srv: Server, c: Client, msg: Message, notice: bool) -> None:
    """PRIVMSG/NOTICE to rooms (everyone but the sender) and nicks.  NOTICE never errors."""
    cmd = msg.command
    if not msg.params or not msg.params[0]:
        if not notice:
            srv.reply(c, P.ERR_NORECIPIENT, f"No recipient given ({cmd})")
        return
    if len(msg.params) < 2 or not msg.params[1]:
        if not notice:
            srv.reply(c, P.ERR_NOTEXTTOSEND, "No text to send")
        return
    text = msg.params[1]
    c.last_message = time.monotonic()
    errors: list[bytes] = []
    away: list[bytes] = []
    # Each line is formatted once, before taking the lock (only this thread changes c.prefix).
    targets = []
    for target in msg.params[0].split(",")[:4]:
        status = ""
        while target[:1] in "@+" and len(target) > 1:
            status, target = status + target[0], target[1:]
        if target:
            targets.append((status, target, P.format_line(c.prefix, cmd, status + target, text,
                                                          truncate=True, trailing=True)))
    # The hot path: the lock and the wake-up are spelled out rather than taken through
    # delivering(), whose generator costs about 2 us a message (10 % of a 50-member fan-out).
    with srv.reg.lock:
        q = srv.writer.queue
        for status, target, line in targets:
            if P.is_channel(target):
                ch = srv.reg.channels.get(P.casefold(target))
                if ch is None:
                    errors.append(srv.numeric(c, P.ERR_NOSUCHNICK, target, "No such nick/channel"))
                    continue
                mode = ch.members.get(c)
                if (mode is None and "n" in ch.modes) or ("m" in ch.modes and not mode) or (
                        not mode and ch.bans and ch.banned(c)):
                    errors.append(srv.numeric(c, P.ERR_CANNOTSENDTOCHAN, ch.name,
                                              "Cannot send to channel"))
                    continue
                if status:
                    for m, pfx in ch.members.items():
                        if m is not c and ("@" in pfx or ("+" in status and "+" in pfx)):
                            q(m, line)
                else:
                    for m in ch.members:
                        if m is not c:
                            q(m, line)
            else:
                peer = srv.find_nick(target)
                if peer is None:
                    errors.append(srv.numeric(c, P.ERR_NOSUCHNICK, target, "No such nick/channel"))
                    continue
                q(peer, line)
                if peer.away is not None and not notice:
                    away.append(srv.numeric(c, P.RPL_AWAY, peer.nick, peer.away))
        if not notice:
            for line in errors + away:
                q(c, line)
        wake = srv.writer.needs_kick()
    if wake:
        srv.writer.kick()


# --- handlers: queries -------------------------------------------------------------------


@command("LUSERS", 0)
def cmd_lusers(srv: Server, c: Client, msg: Message) -> None:
    with srv.reg.lock:
        lines = srv.lusers_lines(c)
    srv.send_many(c, lines)


@command("MOTD", 0)
def cmd_motd(srv: Server, c: Client, msg: Message) -> None:
    srv.send_many(c, srv.motd_lines(c))


@command("VERSION", 0)
def cmd_version(srv: Server, c: Client, msg: Message) -> None:
    lines = [srv.numeric(c, P.RPL_VERSION, VERSION, srv.config.name, "threaded IRC chat server")]
    srv.send_many(c, lines + srv.isupport_lines(c))


@command("TIME", 0)
def cmd_time(srv: Server, c: Client, msg: Message) -> None:
    now = time.strftime("%A %B %d %Y -- %H:%M:%S +00:00", time.gmtime())
    srv.reply(c, P.RPL_TIME, srv.config.name, now)


def _who_line(srv: Server, c: Client, m: Client, ch: Channel | None) -> bytes:
    flags = "G" if m.away is not None else "H"
    if ch is not None:
        pfx = ch.members.get(m, "")
        flags += pfx if "multi-prefix" in c.caps else pfx[:1]
    return srv.numeric(c, P.RPL_WHOREPLY, ch.name if ch else "*", m.user, m.host,
                       srv.config.name, m.nick, flags, f"0 {m.realname}")


@command("WHO", 0)
def cmd_who(srv: Server, c: Client, msg: Message) -> None:
    mask = msg.params[0] if msg.params else "*"
    lines: list[bytes] = []
    opers_only = len(msg.params) > 1 and "o" in msg.params[1]
    with srv.reg.lock:
        if opers_only:
            pass  # "o": server operators only, and this server has none (RFC 2812 3.6.1)
        elif P.is_channel(mask):
            ch = srv.find_channel(mask)
            if ch is not None and ch.visible_to(c):
                lines = [_who_line(srv, c, m, ch) for m in ch.members]
        else:
            folded = P.casefold(mask)
            exact = srv.find_nick(mask)
            if exact is not None:
                lines = [_who_line(srv, c, exact, None)]
            elif any(ch in folded for ch in "*?"):
                match = P.mask_matcher(folded)
                for key, m in srv.reg.nicks.items():
                    if m.registered and match(key):
                        lines.append(_who_line(srv, c, m, None))
                        if len(lines) >= 200:
                            break
    shown = P.echo_param(mask)
    srv.send_many(c, lines + [srv.numeric(c, P.RPL_ENDOFWHO, shown, "End of WHO list")])


@command("WHOIS", 1)
def cmd_whois(srv: Server, c: Client, msg: Message) -> None:
    nick = msg.params[-1].split(",")[0]
    if not nick:
        srv.reply(c, P.ERR_NONICKNAMEGIVEN, "No nickname given")
        return
    shown = P.echo_param(nick)
    with srv.reg.lock:
        m = srv.find_nick(nick)
        if m is None:
            lines = [srv.numeric(c, P.ERR_NOSUCHNICK, shown, "No such nick/channel")]
        else:
            lines = [srv.numeric(c, P.RPL_WHOISUSER, m.nick, m.user, m.host, "*", m.realname),
                     srv.numeric(c, P.RPL_WHOISSERVER, m.nick, srv.config.name,
                                 srv.config.network)]
            multi = "multi-prefix" in c.caps
            rooms = [(pfx if multi else pfx[:1]) + ch.name
                     for ch in m.channels.values() if ch.visible_to(c)
                     for pfx in (ch.members[m],)]
            if rooms:
                lines.append(srv.numeric(c, P.RPL_WHOISCHANNELS, m.nick, " ".join(rooms)))
            if m.away is not None:
                lines.append(srv.numeric(c, P.RPL_AWAY, m.nick, m.away))
            idle = int(time.monotonic() - m.last_message)
            lines.append(srv.numeric(c, P.RPL_WHOISIDLE, m.nick, str(idle), str(int(m.signon)),
                                     "seconds idle, signon time"))
            shown = m.nick
    lines.append(srv.numeric(c, P.RPL_ENDOFWHOIS, shown, "End of /WHOIS list"))
    srv.send_many(c, lines)


@command("WHOWAS", 0)
def cmd_whowas(srv: Server, c: Client, msg: Message) -> None:
    """Most recent first; a count <= 0 means all (RFC 2812 3.6.3).  Wildcards allowed."""
    if not msg.params or not msg.params[0]:
        srv.reply(c, P.ERR_NONICKNAMEGIVEN, "No nickname given")
        return
    target = msg.params[0].split(",")[0]
    try:
        count = int(msg.params[1]) if len(msg.params) > 1 else 0
    except ValueError:
        count = 0
    match = P.mask_matcher(P.casefold(target))
    lines: list[bytes] = []
    with srv.reg.lock:
        for folded, nick, user, host, real in reversed(srv.reg.whowas):
            if match(folded):
                lines.append(srv.numeric(c, P.RPL_WHOWASUSER, nick, user, host, "*", real))
                lines.append(srv.numeric(c, P.RPL_WHOISSERVER, nick, srv.config.name,
                                         srv.config.network))
                if 0 < count <= len(lines) // 2:
                    break
    if not lines:
        lines.append(srv.numeric(c, P.ERR_WASNOSUCHNICK, target, "There was no such nickname"))
    lines.append(srv.numeric(c, P.RPL_ENDOFWHOWAS, target, "End of WHOWAS"))
    srv.send_many(c, lines)


@command("USERHOST", 1)
def cmd_userhost(srv: Server, c: Client, msg: Message) -> None:
    replies = []
    with srv.reg.lock:
        for nick in msg.params[:5]:
            m = srv.find_nick(nick)
            if m is not None:
                replies.append(f"{m.nick}={'-' if m.away is not None else '+'}{m.user}@{m.host}")
    srv.reply(c, P.RPL_USERHOST, " ".join(replies))


@command("ISON", 1)
def cmd_ison(srv: Server, c: Client, msg: Message) -> None:
    words = " ".join(msg.params).split()
    with srv.reg.lock:
        online = [m.nick for w in words[:50] for m in (srv.find_nick(w),) if m is not None]
    srv.reply(c, P.RPL_ISON, " ".join(online))


@command("AWAY", 0)
def cmd_away(srv: Server, c: Client, msg: Message) -> None:
    if msg.params and msg.params[0]:
        c.away = P.truncate_text(msg.params[0], P.AWAYLEN)
        srv.reply(c, P.RPL_NOWAWAY, "You have been marked as being away")
    else:
        c.away = None
        srv.reply(c, P.RPL_UNAWAY, "You are no longer marked as being away")


# --- handlers: operators -----------------------------------------------------------------


@command("MODE", 1)
def cmd_mode(srv: Server, c: Client, msg: Message) -> None:
    target = msg.params[0]
    if P.is_channel(target):
        channel_mode(srv, c, target, msg.params[1:])
    else:
        user_mode(srv, c, target, msg.params[1:])


def user_mode(srv: Server, c: Client, nick: str, args: tuple[str, ...]) -> None:
    if P.casefold(nick) != P.casefold(c.nick):
        with srv.reg.lock:
            exists = srv.find_nick(nick) is not None
        if not exists:
            srv.reply(c, P.ERR_NOSUCHNICK, P.echo_param(nick), "No such nick/channel")
        else:
            srv.reply(c, P.ERR_USERSDONTMATCH, "Cant change mode for other users")
        return
    if not args:
        srv.reply(c, P.RPL_UMODEIS, "+" + "".join(sorted(c.modes)))
        return
    adding, changed, unknown = True, [], False
    for ch in args[0]:
        if ch in "+-":
            adding = ch == "+"
        elif ch == "i":
            if adding != ("i" in c.modes):
                with srv.reg.lock:
                    (c.modes.add if adding else c.modes.discard)("i")
                    srv.reg.invisible_count += 1 if adding else -1
                changed.append(("+" if adding else "-") + "i")
        else:
            unknown = True
    if changed:
        srv.send(c, P.format_line(c.prefix, "MODE", c.nick, "".join(changed)))
    if unknown:
        srv.reply(c, P.ERR_UMODEUNKNOWNFLAG, "Unknown MODE flag")


FLAG_MODES = "imnst"
LIST_MODES = {"e": (P.RPL_ENDOFEXCEPTLIST, "End of channel exception list"),
              "I": (P.RPL_ENDOFINVEXLIST, "End of channel invite exception list")}


def channel_mode(srv: Server, c: Client, name: str, args: tuple[str, ...]) -> None:
    out: list[bytes] = []
    with srv.delivering():
        ch = srv.find_channel(name)
        if ch is None:
            out.append(srv.numeric(c, P.ERR_NOSUCHCHANNEL, name, "No such channel"))
        elif not args:
            out.append(srv.numeric(c, P.RPL_CHANNELMODEIS, ch.name,
                                   *ch.mode_string(show_key=c in ch.members)))
            out.append(srv.numeric(c, P.RPL_CREATIONTIME, ch.name, str(ch.created)))
        else:
            out += ModeChange(srv, c, ch).apply(args[0], list(args[1:]))
        srv.to_client(c, out)


class ModeChange:
    """One MODE command on a room: apply what is allowed, broadcast it as one line.

    Lives only while the registry lock is held.  Unknown modes get 472, bad parameters
    696, a non-operator 482 (once); list queries (``MODE #a b``) are answered in place.
    """

    def __init__(self, srv: Server, c: Client, ch: Channel) -> None:
        self.srv, self.c, self.ch = srv, c, ch
        self.is_op = "@" in ch.members.get(c, "")
        self.replies: list[bytes] = []
        self.applied: list[tuple[str, str, str | None]] = []  # (sign, mode, argument)
        self.denied = False

    def apply(self, modestr: str, params: list[str]) -> list[bytes]:
        adding = True
        for mch in modestr:
            if mch in "+-":
                adding = mch == "+"
            elif mch == "b":
                self._ban(adding, params.pop(0) if params else None)
            elif mch in LIST_MODES:
                if params:
                    params.pop(0)
                    self._unknown(mch)
                else:
                    code, text = LIST_MODES[mch]
                    self.replies.append(self._num(code, self.ch.name, text))
            elif mch in FLAG_MODES:
                if self._allowed():
                    self._flag(adding, mch)
            elif mch == "k":
                arg = params.pop(0) if params and (adding or params) else None
                if self._allowed():
                    self._key(adding, arg)
            elif mch == "l":
                arg = params.pop(0) if adding and params else None
                if self._allowed():
                    self._limit(adding, arg)
            elif mch in "ov":
                arg = params.pop(0) if params else None
                if self._allowed() and arg is not None:
                    self._member(adding, mch, arg)
            else:
                self._unknown(mch)
        if self.denied:
            self.replies.append(self._num(P.ERR_CHANOPRIVSNEEDED, self.ch.name,
                                          "You're not channel operator"))
        self._broadcast()
        return self.replies

    def _num(self, code: str, *params: str) -> bytes:
        return self.srv.numeric(self.c, code, *params)

    def _allowed(self) -> bool:
        if not self.is_op:
            self.denied = True
        return self.is_op

    def _unknown(self, mch: str) -> None:
        self.replies.append(self._num(P.ERR_UNKNOWNMODE, mch, "is unknown mode char to me"))

    def _invalid(self, mch: str, arg: str, why: str) -> None:
        self.replies.append(self._num(P.ERR_INVALIDMODEPARAM, self.ch.name, mch, arg, why))

    def _flag(self, adding: bool, mch: str) -> None:
        if adding != (mch in self.ch.modes):
            (self.ch.modes.add if adding else self.ch.modes.discard)(mch)
            self.applied.append(("+" if adding else "-", mch, None))

    def _key(self, adding: bool, arg: str | None) -> None:
        if not adding:
            if self.ch.key is not None:
                self.ch.key = None
                self.applied.append(("-", "k", "*"))
            return
        if arg is None:
            return  # +k with no key: nothing to set, as established servers do
        if not arg or len(arg) > 23 or any(ch in arg for ch in " ,:") or not arg.isprintable():
            self._invalid("k", "*", "Key must be 1-23 printable characters, no spaces")
            return
        self.ch.key = arg
        self.applied.append(("+", "k", arg))

    def _limit(self, adding: bool, arg: str | None) -> None:
        if not adding:
            if self.ch.limit:
                self.ch.limit = 0
                self.applied.append(("-", "l", None))
            return
        if arg is None:
            return
        if not arg.isdigit() or not 0 < int(arg) <= 1_000_000:
            self._invalid("l", P.echo_param(arg, 20), "Limit must be a positive number")
            return
        self.ch.limit = int(arg)
        self.applied.append(("+", "l", str(self.ch.limit)))

    def _ban(self, adding: bool, arg: str | None) -> None:
        ch = self.ch
        if arg is None:  # a query of the list, allowed to anyone who can see the room
            for b in ch.bans:
                self.replies.append(self._num(P.RPL_BANLIST, ch.name, b.mask, b.by, str(b.at)))
            self.replies.append(self._num(P.RPL_ENDOFBANLIST, ch.name, "End of channel ban list"))
            return
        if not self._allowed():
            return
        mask = ban_mask(P.echo_param(arg, 100))
        known = next((b for b in ch.bans if b.mask == mask), None)
        if adding and known is None:
            if len(ch.bans) >= MAX_BANS:
                self.replies.append(self._num(P.ERR_BANLISTFULL, ch.name, "b",
                                              "Channel ban list is full"))
                return
            ch.bans.append(Ban(mask, self.c.prefix, int(time.time()), P.mask_matcher(mask)))
            self.applied.append(("+", "b", mask))
        elif not adding and known is not None:
            ch.bans.remove(known)
            self.applied.append(("-", "b", mask))

    def _member(self, adding: bool, mch: str, nick: str) -> None:
        srv, ch = self.srv, self.ch
        member = srv.find_nick(nick)
        if member is None:
            self.replies.append(self._num(P.ERR_NOSUCHNICK, nick, "No such nick/channel"))
            return
        if member not in ch.members:
            self.replies.append(self._num(P.ERR_USERNOTINCHANNEL, member.nick, ch.name,
                                          "They aren't on that channel"))
            return
        sym = "@" if mch == "o" else "+"
        pfx = ch.members[member]
        if adding and sym not in pfx:
            ch.members[member] = "".join(s for s in "@+" if s in pfx or s == sym)
            self.applied.append(("+", mch, member.nick))
        elif not adding and sym in pfx:
            ch.members[member] = pfx.replace(sym, "")
            self.applied.append(("-", mch, member.nick))

    def _broadcast(self) -> None:
        if not self.applied:
            return
        modes, margs, sign = "", [], ""
        for s, m, a in self.applied:
            if s != sign:
                modes += s
                sign = s
            modes += m
            if a is not None:
                margs.append(a)
        line = P.format_line(self.c.prefix, "MODE", self.ch.name, modes, *margs)
        self.srv.to_room(self.ch, line)


@command("KICK", 2)
def cmd_kick(srv: Server, c: Client, msg: Message) -> None:
    """KICK #a user[,user] or KICK #a,#b ua,ub (channels paired with users, RFC 2812)."""
    rooms = [r for r in msg.params[0].split(",") if r][:4]
    nicks = [n for n in msg.params[1].split(",") if n][:4]
    if len(rooms) == 1:
        pairs = [(rooms[0], n) for n in nicks]
    elif len(rooms) == len(nicks):
        pairs = list(zip(rooms, nicks))
    else:
        srv.reply(c, P.ERR_NEEDMOREPARAMS, "KICK", "Not enough parameters")
        return
    reason = msg.params[2] if len(msg.params) > 2 and msg.params[2] else c.nick
    reason = P.truncate_text(reason, P.KICKLEN)
    with srv.delivering():
        for room, nick in pairs:
            error = kick_one(srv, c, room, nick, reason)
            if error:
                srv.writer.queue(c, error)


def kick_one(srv: Server, c: Client, room: str, nick: str, reason: str) -> bytes | None:
    """Remove ``nick`` from ``room``; the error reply if not allowed.  Caller holds the lock."""
    ch = srv.find_channel(room)
    if ch is None:
        return srv.numeric(c, P.ERR_NOSUCHCHANNEL, room, "No such channel")
    if c not in ch.members:
        return srv.numeric(c, P.ERR_NOTONCHANNEL, ch.name, "You're not on that channel")
    if "@" not in ch.members[c]:
        return srv.numeric(c, P.ERR_CHANOPRIVSNEEDED, ch.name, "You're not channel operator")
    victim = srv.find_nick(nick)
    if victim is None or victim not in ch.members:
        return srv.numeric(c, P.ERR_USERNOTINCHANNEL, nick, ch.name,
                           "They aren't on that channel")
    line = P.format_line(c.prefix, "KICK", ch.name, victim.nick, reason, truncate=True,
                         trailing=True)
    srv.to_room(ch, line)
    srv._remove_member(ch, victim)
    return None


@command("INVITE", 2)
def cmd_invite(srv: Server, c: Client, msg: Message) -> None:
    nick, name = msg.params[0], msg.params[1]
    out: list[bytes] = []
    with srv.delivering():
        target = srv.find_nick(nick)
        ch = srv.find_channel(name)
        if ch is None:
            out.append(srv.numeric(c, P.ERR_NOSUCHCHANNEL, P.echo_param(name),
                                   "No such channel"))
        elif c not in ch.members:
            out.append(srv.numeric(c, P.ERR_NOTONCHANNEL, ch.name, "You're not on that channel"))
        elif "i" in ch.modes and "@" not in ch.members[c]:
            out.append(srv.numeric(c, P.ERR_CHANOPRIVSNEEDED, ch.name,
                                   "You're not channel operator"))
        elif target is None:
            out.append(srv.numeric(c, P.ERR_NOSUCHNICK, P.echo_param(nick),
                                   "No such nick/channel"))
        elif target in ch.members:
            out.append(srv.numeric(c, P.ERR_USERONCHANNEL, target.nick, ch.name,
                                   "is already on channel"))
        else:
            target.invites[P.casefold(ch.name)] = "@" in ch.members[c]
            out.append(srv.numeric(c, P.RPL_INVITING, target.nick, ch.name))
            srv.writer.queue(target, P.format_line(c.prefix, "INVITE", target.nick, ch.name))
        srv.to_client(c, out)


# --- command line ------------------------------------------------------------------------


def raise_fd_limit() -> None:
    """Raise the open-file soft limit as far as the hard limit allows, and say so."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft >= want:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        log.info("open-file limit raised from %d to %d", soft, want)
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-file limit from %d: %s", soft, exc)


def parse_args(argv: list[str] | None = None) -> tuple[Config, str]:
    d = Config()
    p = argparse.ArgumentParser(
        description="Threaded chat server speaking a subset of the IRC client protocol.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default=d.host, help="address to listen on (0.0.0.0 for the LAN)")
    p.add_argument("--port", type=int, default=d.port, help="TCP port to listen on")
    p.add_argument("--name", default=d.name, help="server name shown in replies")
    p.add_argument("--network", default=d.network, help="network name shown on welcome")
    p.add_argument("--motd", metavar="FILE", help="message-of-the-day text file")
    p.add_argument("--password", help="server password clients must send with PASS")
    p.add_argument("--max-clients", type=int, default=d.max_clients,
                   help="most connections at once; more get 'ERROR :Server full'")
    p.add_argument("--max-per-ip", type=int, default=d.max_per_ip,
                   help="most connections from one address (0: no limit)")
    p.add_argument("--sendq", type=int, default=d.sendq,
                   help="bytes queued for a client before it is disconnected")
    p.add_argument("--register-timeout", type=float, default=d.register_timeout,
                   help="seconds a new connection has to register")
    p.add_argument("--ping-interval", type=float, default=d.ping_interval,
                   help="seconds of silence before the server sends PING")
    p.add_argument("--ping-timeout", type=float, default=d.ping_timeout,
                   help="seconds to wait for the answer to PING")
    p.add_argument("--line-timeout", type=float, default=d.line_timeout,
                   help="seconds a started line may take to finish")
    p.add_argument("--max-channels", type=int, default=d.max_channels,
                   help="rooms one user may be in")
    p.add_argument("--max-members", type=int, default=d.max_members,
                   help="members one room may hold (0: no limit)")
    p.add_argument("--flood-burst", type=int, default=d.flood_burst,
                   help="commands a client may send at once before it is slowed")
    p.add_argument("--flood-rate", type=float, default=d.flood_rate,
                   help="commands per second a client may send after the burst")
    p.add_argument("--flood-kill", type=int, default=d.flood_kill,
                   help="commands beyond the allowance that disconnect with 'Excess Flood'")
    p.add_argument("--recvq", type=int, default=d.recvq,
                   help="unread bytes a throttled client may have waiting before 'Excess Flood'")
    p.add_argument("--no-flood-control", action="store_true",
                   help="turn flood control off (benchmarks, conformance runs)")
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging threshold")
    a = p.parse_args(argv)
    motd = None
    if a.motd:
        try:
            with open(a.motd, encoding="utf-8", errors="replace") as f:
                motd = [P.strip_bad(line.rstrip("\r\n")) for line in f][:200]
        except OSError as exc:
            p.error(f"cannot read --motd {a.motd}: {exc.strerror}")
    for opt in ("max_clients", "sendq", "max_channels", "flood_burst", "recvq"):
        if getattr(a, opt) < 1:
            p.error(f"--{opt.replace('_', '-')} must be at least 1")
    for opt in ("register_timeout", "ping_interval", "ping_timeout", "line_timeout",
                "flood_rate"):
        if getattr(a, opt) <= 0:
            p.error(f"--{opt.replace('_', '-')} must be positive")
    if not 0 <= a.port <= 65535:
        p.error("--port must be 0-65535")
    if " " in a.name or not a.name:
        p.error("--name must be one word")
    return Config(
        host=a.host, port=a.port, name=a.name, network=a.network, motd=motd,
        password=a.password, max_clients=a.max_clients, max_per_ip=a.max_per_ip,
        sendq=a.sendq, register_timeout=a.register_timeout, ping_interval=a.ping_interval,
        ping_timeout=a.ping_timeout, line_timeout=a.line_timeout, max_channels=a.max_channels,
        max_members=a.max_members, flood_control=not a.no_flood_control,
        flood_burst=a.flood_burst, flood_rate=a.flood_rate, flood_kill=a.flood_kill,
        recvq=a.recvq,
    ), a.log_level


def main(argv: list[str] | None = None) -> int:
    config, level = parse_args(argv)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s")
    raise_fd_limit()
    server = Server(config)
    try:
        server.bind()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, exc.strerror or exc)
        return 1

    def on_signal(signum: int, frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        server.shutdown()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    server.serve_forever()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
