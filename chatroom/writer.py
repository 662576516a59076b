"""The writer thread: every ``send``, ``shutdown`` and ``close`` of a client socket.

Readers and handlers never touch a socket for output.  Under the registry lock they append
already formatted lines to a client's buffer with :meth:`Writer.queue`; after releasing it
they call :meth:`Writer.wake` if :meth:`Writer.needs_wake` said so.  The writer takes every
dirty buffer in one lock acquisition and writes each as one non-blocking send, waiting with
``selectors`` only on peers that are slow.  A peer whose buffer passes the send-queue limit
is cut; nobody else waits for it.

With history on, nothing leaves before it is durable: the writer notes how many events the
history store had been given when it took the buffers (the same lock hold in which every
line in them was queued with its event), and waits for the store to commit that many before
it sends (:meth:`History.wait_durable`; a group commit, usually already done).

A reader can :meth:`Writer.hold` its own client's output while it prepares a reply that
must go out whole (a labeled response, a join and its replay): lines queued to that client
meanwhile wait in ``held``, in order, each marked with whether the holding thread queued
it, until :meth:`Writer.unhold` and :meth:`Writer.put` let them go.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable

from chatroom.history import History
from chatroom.registry import Client, Registry
from chatroom.transport import os_reason, shutdown

log = logging.getLogger(__name__)

# Bytes queued since the writer last collected.  Past this, readers wait for the writer before
# handling more lines: producers can't outrun the one writer, and memory stays bounded.
BACKLOG_HIGH = 4 * 1024 * 1024


class Writer:
    """The one thread that writes to, shuts down and closes client sockets.

    For the caller, with the registry lock held: :meth:`queue` (append a line),
    :meth:`doom` and :meth:`close_after_flush` (the two ways to end a connection, below),
    :meth:`needs_wake`.  Without the lock: :meth:`wake`, :meth:`release`,
    :meth:`wait_for_room`, :meth:`start`, :meth:`stop`.

    Ending a connection, from the writer's side:

    * ``doom``: cut it now and drop whatever is queued (send queue full, reset, shutdown).
    * ``close_after_flush``: write what is queued (an ERROR, last), then shut it down.
    * ``release``: the reader is done with the socket; flush what is left and close it.

    A shutdown wakes the reader (its ``recv`` returns b""), which removes the client from
    the registry and releases the socket; only then is it closed, so a file descriptor is
    never reused while a thread still holds it.
    """

    def __init__(self, registry: Registry, sendq: int) -> None:
        self.reg = registry
        self.history: History | None = None  # set before start() when history is on
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
        if client.diverted:  # one test on the hot path for the three rare cases
            if client.doomed is not None or client.closing:
                return  # ERROR was its last line; nothing may follow it
            assert client.held is not None
            client.held.append((threading.get_ident() == client.held_by, data))
            return
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

    # Called with the registry lock held.
    def queue_aside(self, client: Client, data: bytes) -> None:
        """:meth:`queue`, but while ``client`` is held the line counts as someone else's
        (a message to yourself is delivered as well as echoed; only the echo is the reply)."""
        if client.held is not None and not (client.doomed is not None or client.closing):
            client.held.append((False, data))
        else:
            self.queue(client, data)

    # Called with the registry lock held.
    def hold(self, client: Client) -> bool:
        """Keep ``client``'s lines back from now on; False if they already are (the outer
        holder lets them go)."""
        if client.held is not None:
            return False
        client.held = []
        client.held_by = threading.get_ident()
        client.diverted = True
        return True

    # Called with the registry lock held.
    def insert_after_own(self, client: Client, lines: list[bytes]) -> None:
        """Add ``lines`` to the holder's own reply, right after its last line so far (what
        others said meanwhile stays after them); queue them if nothing is held."""
        if client.held is None:
            for line in lines:
                self.queue(client, line)
            return
        held = client.held
        at = next((i + 1 for i in range(len(held) - 1, -1, -1) if held[i][0]), 0)
        held[at:at] = [(True, line) for line in lines]

    # Called with the registry lock held.
    def unhold(self, client: Client) -> list[tuple[bool, bytes]]:
        """Stop holding ``client``'s lines; what was held, (queued by the holder?, line)."""
        held, client.held = client.held or [], None
        client.diverted = client.doomed is not None or client.closing
        return held

    # Called with the registry lock held.
    def put(self, client: Client, lines: list[bytes]) -> None:
        """Queue held lines, in order; an ERROR among them, last, still goes out."""
        if client.doomed is not None:
            return
        was_empty = client.outlen == 0
        for data in lines:
            client.out.append(data)
            client.outlen += len(data)
            self.backlog += len(data)
        if was_empty and (client.outlen or client.closing):
            self.dirty.append(client)

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
            client.diverted = True
            client.out = []
            client.outlen = 0
            self.dirty.append(client)

    # Called with the registry lock held.
    def poke(self, client: Client) -> None:
        """Have the writer look at ``client`` again: TLS produced output on its own (an
        answer made while reading), or its handshake is done and lines may be waiting."""
        if not client.blocked:
            self.dirty.append(client)  # a duplicate entry costs one empty pass, no more

    # Called with the registry lock held.
    def close_after_flush(self, client: Client) -> None:
        if not client.closing:
            client.closing = True
            client.diverted = True
            client.closing_since = time.monotonic()
        if client.outlen == 0 and client.held is None:  # held: put() hands it over
            self.dirty.append(client)

    # Called with the registry lock held: True if the caller must wake() after unlocking.
    def needs_wake(self) -> bool:
        if self.sleeping and (self.dirty or self.releases):
            self.sleeping = False
            return True
        return False

    def wake(self) -> None:
        """Wake the writer thread (cheap when it is already awake)."""
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full or closed: the writer is awake or gone either way

    def release(self, client: Client) -> None:
        """The reader is done with ``client``: flush what is left, then close the socket."""
        with self.reg.lock:
            self.releases.append(client)
            wake = self.needs_wake()
        if wake:
            self.wake()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with self.reg.lock:
            self.running = False
            self.drained.notify_all()
        self.wake()
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
                mark = self.history.appended if self.history is not None else 0
            if not running and idle:
                break
            if jobs or releases:
                self._durable(mark)
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

    def _durable(self, mark: int) -> None:
        """Wait until the events behind the lines about to go out are committed."""
        if self.history is not None:
            self.history.wait_durable(mark)

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
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if c.tls is not None:
            encrypted = self._encrypt(c, data, closing)
            if encrypted is None:
                return
            data = encrypted
        if data and not self._send(c, memoryview(data)):
            return
        if closing:
            self._shutdown(c)

    def _encrypt(self, c: Client, data: bytes, closing: bool) -> bytes | None:
        """``data`` as TLS records (and close_notify when closing); None if nothing can go."""
        assert c.tls is not None
        if not c.tls.established:
            # Still in the handshake, whose socket I/O is the reader's: nothing can be sent
            # yet.  Last words meant for it are dropped and the socket shut, which ends the
            # handshake (and so the reader) at once; anything else waits in its buffer
            # until the reader, done with the handshake, pokes us.
            if closing:
                self._shutdown(c)
            elif data:
                with self.reg.lock:
                    c.out.insert(0, data)
                    c.outlen += len(data)
            return None
        try:
            out = c.tls.encrypt(data)
            return out + c.tls.close_notify() if closing else out
        except ssl.SSLError as exc:
            with self.reg.lock:
                self.doom(c, os_reason(exc))
            self._shutdown(c)
            return None

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
                self.doom(c, os_reason(exc))
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
            mark = self.history.appended if self.history is not None else 0
        self._durable(mark)
        c.blocked = False
        self.selector.unregister(c.fd)
        self._flush(c, chunks, doomed, closing)

    def _shutdown(self, c: Client) -> None:
        # Wakes the reader (its recv returns b""), which then cleans up and releases.
        if not c.released:
            shutdown(c.sock)

    def _close(self, c: Client) -> None:
        with self.reg.lock:
            chunks, c.out, c.outlen = c.out, [], 0
            mark = self.history.appended if self.history is not None else 0
        if chunks:
            self._durable(mark)
        if c.blocked:
            self.selector.unregister(c.fd)
            c.blocked = False
        elif chunks and c.doomed is None:
            # Best effort: the last words (ERROR, say) go if the socket takes them now.
            try:
                data = b"".join(chunks)
                if c.tls is not None:
                    data = c.tls.encrypt(data) if c.tls.established else b""
                if data:
                    c.sock.send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except OSError:  # ssl.SSLError included
                pass
        self._shutdown(c)
        c.released = True
        c.sock.close()
