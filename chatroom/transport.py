"""Socket concerns both sides share: OSError reasons, a quiet shutdown, and TLS over memory BIOs.

TLS is done with :class:`ssl.SSLObject` and two memory BIOs (:class:`TLSStream`) rather
than :class:`ssl.SSLSocket`, for two reasons: the server's reader waits on the raw socket
with a 1-byte ``MSG_PEEK`` and its writer sends with ``MSG_DONTWAIT``, neither of which an
``SSLSocket`` allows; and an OpenSSL object must never be entered by two threads at once,
while each side has one thread that reads and another that writes.  So the socket I/O stays
with whoever does it today, and only the short, CPU-only calls into OpenSSL go through the
stream, under its own lock.

Any thread may call anything here; :class:`TLSStream` serialises itself.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import ssl
import threading
import time

_CHUNK = 16384  # bytes read from a socket or a BIO at a time
# Plaintext encrypted per call: one full TLS record.  An outgoing memory BIO keeps the size
# of the most it ever held, and every connection has one, so a 256 KiB burst written whole
# would stay with the connection for good (measured in process: a 60 KB burst left 60 KB
# behind written whole, 22 KB in 16 KiB slices).  4 KiB slices left 6 KB, but saved only
# 3 KB per idle connection in the bench's 2,000-client room, for more calls per burst.
_SLICE = 16384


def os_reason(exc: OSError) -> str:
    """Why a connection ended, in the words IRC servers and clients use for it."""
    if isinstance(exc, ConnectionResetError):
        return "Connection reset by peer"
    if isinstance(exc, TimeoutError):
        return "Connection timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    return f"Connection error: {exc.strerror or exc}"


def shutdown(sock: socket.socket) -> None:
    """Shut both directions down, ignoring a socket that is already closed or reset.

    A ``shutdown`` from another thread is how a blocked ``recv`` is woken: it returns b"".
    """
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def listen(host: str, port: int, backlog: int, what: str = "") -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0 picks a port).  An :class:`OSError`
    names the address (and ``what`` it is for): with several listeners, "address in use"
    alone is ambiguous."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, exc.strerror or str(exc),
                      f"{host}:{port}{f' ({what})' if what else ''}") from None
    return sock


def is_loopback(host: str) -> bool:
    """True for an address on this machine (127.0.0.0/8, ::1, and IPv4 mapped into IPv6)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def fingerprint(der: bytes) -> str:
    """A certificate's SHA-256 fingerprint as IRC clients show it: ``AB:CD:...``."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


class TLSClosed(ConnectionError):
    """The peer ended the TLS session (close_notify): an orderly end, like b"" from recv."""


class TLSStream:
    """One TLS session over memory BIOs: ciphertext in from the socket, ciphertext out to it.

    The caller owns the socket.  Bytes read from it go to :meth:`feed`, which returns the
    plaintext they carried; plaintext to send goes through :meth:`encrypt`, which returns
    the ciphertext to write.  Reading can make OpenSSL want to write (handshake records, a
    key update answer); :meth:`take_output` collects that.  Every call holds :attr:`lock`.
    """

    __slots__ = ("lock", "obj", "incoming", "outgoing", "established")

    # ``established`` is written once, by the thread that ran the handshake, after its last
    # flight went out; others read it without the lock (a bool, and it only ever turns on).

    def __init__(self, context: ssl.SSLContext, *, server_side: bool,
                 server_hostname: str | None = None) -> None:
        self.lock = threading.Lock()
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                    server_hostname=server_hostname)
        self.established = False

    def handshake_step(self, data: bytes) -> tuple[bool, bytes]:
        """Feed handshake bytes; (done, bytes to send).  Raises :class:`ssl.SSLError`.

        Done does not make the stream :attr:`established`: the caller sets that once it
        has sent the bytes, so nothing can be encrypted and sent ahead of them.
        """
        with self.lock:
            if data:
                self.incoming.write(data)
            try:
                self.obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            return done, self.outgoing.read()

    def feed(self, data: bytes) -> bytes:
        """Ciphertext from the socket in, the plaintext it completes out (maybe b"").

        Raises :class:`TLSClosed` when the peer closed the session, :class:`ssl.SSLError`
        on a protocol error.
        """
        chunks = []
        with self.lock:
            self.incoming.write(data)
            while True:
                try:
                    chunk = self.obj.read(_CHUNK)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:
                    raise TLSClosed("TLS session closed by the peer") from None
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks)

    def encrypt(self, data: bytes) -> bytes:
        """Plaintext in, the ciphertext to send out (with anything reading left pending).

        Written a slice at a time, taking the output after each: a memory BIO keeps the
        size of the most it ever held, so one 256 KiB burst written whole would stay with
        an idle connection for good (see ``_SLICE``).
        """
        with self.lock:
            if len(data) <= _SLICE:
                if data:
                    self.obj.write(data)
                return self.outgoing.read()
            out = [self.outgoing.read()]
            view = memoryview(data)
            for i in range(0, len(data), _SLICE):
                self.obj.write(view[i:i + _SLICE])
                out.append(self.outgoing.read())
            return b"".join(out)

    def take_output(self) -> bytes:
        """Ciphertext OpenSSL produced on its own (while reading), to send as it is."""
        with self.lock:
            return self.outgoing.read()

    @property
    def has_output(self) -> bool:
        return self.outgoing.pending > 0  # a racy peek is fine: take_output() decides

    def close_notify(self) -> bytes:
        """The close_notify alert to send last, or b"" if the session never started."""
        with self.lock:
            if not self.established:
                return b""
            try:
                self.obj.unwrap()
            except (ssl.SSLWantReadError, ssl.SSLError):
                pass
            return self.outgoing.read()

    def peer_certificate(self) -> bytes | None:
        """The peer's certificate, DER-encoded (None before the handshake, or none sent)."""
        with self.lock:
            return self.obj.getpeercert(binary_form=True)

    def describe(self) -> str:
        """``TLSv1.3 TLS_AES_256_GCM_SHA384``, for logs."""
        with self.lock:
            cipher = self.obj.cipher()
            return f"{self.obj.version()} {cipher[0] if cipher else ''}".strip()


def handshake(sock: socket.socket, stream: TLSStream, timeout: float) -> None:
    """Run the TLS handshake on a blocking socket within ``timeout`` seconds in all.

    For the one thread that owns the socket until the session is established (the server's
    reader, the client's network thread).  Raises :class:`TimeoutError` past the deadline,
    :class:`ssl.SSLError` if the peer speaks bad TLS, :class:`ConnectionError` if it goes.
    The socket's own timeout is restored afterwards.
    """
    deadline = time.monotonic() + timeout
    before = sock.gettimeout()
    try:
        data = b""
        while True:
            done, out = stream.handshake_step(data)
            if out:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                sock.sendall(out)
            if done:
                stream.established = True  # after the last flight: records follow it
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("TLS handshake timed out")
            sock.settimeout(left)
            data = sock.recv(_CHUNK)
            if not data:
                raise ConnectionResetError("connection closed during the TLS handshake")
    except TimeoutError as exc:  # the socket's own timeout says only "timed out"
        raise TimeoutError("TLS handshake timed out") from exc
    finally:
        sock.settimeout(before)
