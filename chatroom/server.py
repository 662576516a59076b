"""The server's lifecycle: bind, accept, start a reader per connection, shut down; ``main``.

Threads and who owns what:

* The main thread runs :meth:`Server.serve_forever`: it accepts connections and starts one
  reader thread (:class:`~chatroom.connection.Connection`) for each.  Accepting never does
  more than one ``accept`` and a few counts under the registry lock.
* One registry lock (``chatroom.registry``) guards nick -> client, room -> members and every
  client's outbound buffer.  Handlers hold it only to read or change that state and to append
  already formatted lines to recipients' buffers.  No socket I/O ever happens under it.
* One writer thread (``chatroom.writer``) does every send, shutdown and close.
* One housekeeper thread (``chatroom.housekeeper``) runs the timers, and the files
  store's retention purge.
* The file host (``chatroom.filehost``), unless ``--files-port 0``: its own accept thread
  and one thread per HTTP connection; it shares the accounts store and login throttles with
  the chat, never the registry lock.
* :meth:`Server.shutdown` may be called from any thread or a signal handler: every client is
  told, every socket closed, and :meth:`Server.serve_forever` returns.

``python server.py --help`` (or ``chat-server --help``) lists the options.
"""

from __future__ import annotations

import errno
import logging
import selectors
import signal
import socket
import ssl
import sys
import threading
import time
from collections import deque

from chatroom import admin, certs
from chatroom.accounts import AccountError
from chatroom.config import Config, parse_args
from chatroom.connection import Connection
from chatroom.filehost import FileHost
from chatroom.files import PURGE_CHUNK, Files, FilesError
from chatroom.history import HistoryError
from chatroom.housekeeper import Housekeeper
from chatroom.hub import Hub
from chatroom.registry import Client, Registry
from chatroom.transport import TLSStream, listen
from chatroom.writer import Writer

log = logging.getLogger(__name__)

THREAD_STACK = 256 * 1024  # readers keep shallow stacks; small stacks let 10,000 threads fit


class Server:
    """The listener and the threads around it.

    For the caller: :meth:`bind`, :meth:`serve_forever` (on the thread that will accept),
    :meth:`shutdown` (from anywhere), :meth:`kill`; ``reg`` and ``writer`` for inspection.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.hub = Hub(config)
        self.listener: socket.socket | None = None  # plaintext
        self.tls_listener: socket.socket | None = None
        self.tls_context: ssl.SSLContext | None = None  # swapped whole by reload_tls()
        self.address: tuple[str, int] = (config.host, config.port or 0)
        self.tls_address: tuple[str, int] | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)  # a full pipe already means "wake up"
        self._signals: deque[int] = deque()
        self.readers: set[threading.Thread] = set()
        self._readers_lock = threading.Lock()
        self._housekeeper = Housekeeper(self.hub)
        self.files: Files | None = None  # bind(), unless there is no file host
        self.filehost: FileHost | None = None

    @property
    def reg(self) -> Registry:
        return self.hub.reg

    @property
    def writer(self) -> Writer:
        return self.hub.writer

    def kill(self, c: Client, reason: str) -> None:
        """End ``c``'s connection, telling it why (see :meth:`Hub.kill`)."""
        self.hub.kill(c, reason)

    def bind(self) -> tuple[str, int]:
        """Open the listening sockets (and load the certificate); the address of the
        plaintext one, or of the TLS one if there is no plaintext port.  Port 0 picks one.
        Raises :class:`OSError` if a port can't be had, :class:`CertificateError` if the
        certificate can't be used."""
        cfg = self.config
        if self.hub.accounts is None:
            self.hub.open_stores()
        if cfg.tls_self_signed and not cfg.tls:
            names = [cfg.name, "localhost", "127.0.0.1"]
            if cfg.host not in ("0.0.0.0", "::", ""):
                names.insert(1, cfg.host)
            cfg.tls_cert, cfg.tls_key = certs.ensure_self_signed(cfg.data_dir, names)
        if cfg.tls:
            assert cfg.tls_cert is not None and cfg.tls_key is not None
            self.tls_context, info = certs.load_context(cfg.tls_cert, cfg.tls_key)
            certs.log_certificate(info)
            self.tls_listener = self._listen(cfg.tls_port)
            self.tls_address = self.tls_listener.getsockname()[:2]
            self.hub.tls_port = self.tls_address[1]
        if cfg.port is not None:
            self.listener = self._listen(cfg.port)
            self.address = self.listener.getsockname()[:2]
        elif self.tls_address is not None:
            self.address = self.tls_address
        if cfg.files_port is not None and self.filehost is None:
            self._bind_files()
        return self.address

    def _bind_files(self) -> None:
        """Open the files store and the file host's listener; advertise it in ISUPPORT."""
        cfg = self.config
        assert self.hub.accounts is not None
        self.files = Files(cfg.data_dir, quota=cfg.files_quota, retention_days=cfg.files_days)
        host = FileHost(cfg, self.files, self.hub.accounts, self.hub.login_throttle,
                        self.hub.address_throttle, lambda: self.tls_context)
        host.bind()
        self.filehost = host

        def upload_url(c: Client) -> str | None:
            try:
                return host.upload_url(c.sock.getsockname()[0])
            except OSError:  # the connection is already gone
                return None

        self.hub.filehost_url = upload_url

    def _listen(self, port: int) -> socket.socket:
        return listen(self.config.host, port, 1024)

    def serve_forever(self) -> None:
        """Accept connections until :meth:`shutdown`; then close everything and return."""
        if self.listener is None and self.tls_listener is None:
            self.bind()
        threading.stack_size(THREAD_STACK)
        if self.hub.history is not None:
            self.hub.history.start()
        self.writer.start()
        if self.files is not None and self.files.retention:
            files = self.files
            self._housekeeper.every(min(3600.0, max(0.2, files.retention / 10)),
                                    lambda: files.purge() == PURGE_CHUNK)
        self._housekeeper.start()
        if self.filehost is not None:
            self.filehost.start()
        sel = selectors.DefaultSelector()
        for listener, what in ((self.listener, "plaintext"), (self.tls_listener, "TLS")):
            if listener is not None:
                sel.register(listener, selectors.EVENT_READ, listener is self.tls_listener)
                log.info("listening on %s:%d (%s)", *listener.getsockname()[:2], what)
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            while not self.hub.stopping.is_set():
                for key, _ in sel.select():
                    if key.data is None:
                        self._woken()
                    else:
                        assert isinstance(key.fileobj, socket.socket)
                        self._accept(key.fileobj, tls=key.data)
        finally:
            sel.close()
            self._close_all()

    def signal_received(self, signum: int) -> None:
        """For a signal handler: SIGHUP reloads the certificate, any other signal stops.

        It takes no lock and logs nothing: a handler runs between two bytecodes of whatever
        the main thread was doing, possibly inside this very handler for an earlier signal,
        and a lock taken there could be held already.  The accepting loop does the work.
        """
        self._signals.append(signum)  # deque.append: atomic, lock-free
        self._wake()

    def reload_tls(self) -> bool:
        """Load the certificate and key again (a renewal); keep the old pair if the new one
        is broken.  Connections already open keep their session.  True if swapped."""
        cfg = self.config
        if not cfg.tls:
            log.info("SIGHUP: TLS is off, nothing to reload")
            return False
        assert cfg.tls_cert is not None and cfg.tls_key is not None
        try:
            context, info = certs.load_context(cfg.tls_cert, cfg.tls_key)
        except (certs.CertificateError, OSError) as exc:
            log.error("TLS reload refused, keeping the certificate in use: %s", exc)
            return False
        self.tls_context = context
        certs.log_certificate(info, "reloaded")
        return True

    def _woken(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        while self._signals:
            signum = self._signals.popleft()
            log.info("received %s", signal.Signals(signum).name)
            if signum == signal.SIGHUP:
                self.reload_tls()
            else:
                self.hub.stopping.set()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def shutdown(self) -> None:
        """Ask :meth:`serve_forever` to stop; from any thread (a signal handler uses
        :meth:`signal_received`)."""
        self.hub.stopping.set()
        self._wake()

    def _accept(self, listener: socket.socket, tls: bool) -> None:
        try:
            sock, addr = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                log.error("cannot accept: out of file descriptors (%s)", exc)
                time.sleep(0.1)  # let closes catch up rather than spin on a full table
            return
        cfg = self.config
        host = addr[0]
        # Making the TLS session is CPU only, and done outside the lock; its handshake runs
        # on the reader's thread.
        stream = None
        if tls:
            assert self.tls_context is not None
            stream = TLSStream(self.tls_context, server_side=True)
        with self.reg.lock:
            full = len(self.reg.clients) >= cfg.max_clients
            too_many = cfg.max_per_ip > 0 and self.reg.per_ip.get(host, 0) >= cfg.max_per_ip
            if not (full or too_many):
                client = Client(sock, addr, stream)
                self.reg.clients.add(client)
                self.reg.per_ip[host] = self.reg.per_ip.get(host, 0) + 1
        if full or too_many:
            reason = "Server full" if full else "Too many connections from your address"
            log.warning("refused %s:%d: %s", host, addr[1], reason)
            try:  # in clear only: a TLS peer could not read it before a handshake
                if not tls:
                    sock.send(f"ERROR :{reason}\r\n".encode(), socket.MSG_DONTWAIT)
            except OSError:
                pass
            sock.close()
            return
        log.info("connect %s:%d%s", host, addr[1], " (TLS)" if tls else "")
        t = threading.Thread(target=self._serve, args=(client,), daemon=True,
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
                self.reg.forget(client)
            sock.close()

    def _close_all(self) -> None:
        """Tell every client the server is going down, then close every socket."""
        log.info("shutting down")
        for listener in (self.listener, self.tls_listener):
            if listener is not None:
                listener.close()
        if self.filehost is not None:
            self.filehost.stop()  # before the stores it uses close
        with self.hub.delivering():
            clients = list(self.reg.clients)
            for c in clients:
                c.quit_reason = "Server shutting down"
                self.hub.goodbye(c, c.quit_reason)
        deadline = time.monotonic() + 1.5
        for t in list(self.readers):
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        with self.hub.delivering():
            for c in self.reg.clients:
                self.writer.doom(c, "Server shutting down")
        for t in list(self.readers):
            t.join(timeout=max(0.1, deadline + 0.5 - time.monotonic()))
        self.writer.stop()
        if self.hub.history is not None:
            self.hub.history.close()  # everything anyone received is committed by now
        if self.hub.accounts is not None:
            self.hub.accounts.close()
        if self.hub.moderation is not None:
            self.hub.moderation.close()
        if self.hub.markers is not None:
            self.hub.markers.close()
        if self.files is not None:
            self.files.close()
        self.hub.stopping.set()
        self._wake_r.close()
        self._wake_w.close()

    # --- per-connection reader ---------------------------------------------------------

    def _serve(self, client: Client) -> None:
        try:
            Connection(self.hub, client).run()
        finally:
            with self._readers_lock:
                self.readers.discard(threading.current_thread())


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


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGINT or SIGTERM; the exit status (1: cannot listen).
    ``account ...`` runs the admin command line instead (see :mod:`chatroom.admin`)."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["account"]:
        return admin.main(args)
    config, level = parse_args(argv)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s")
    raise_fd_limit()
    server = Server(config)
    try:
        server.bind()
    except OSError as exc:
        log.error("cannot listen on %s: %s", exc.filename or config.host, exc.strerror or exc)
        return 1
    except certs.CertificateError as exc:
        log.error("cannot start TLS: %s", exc)
        return 1
    except HistoryError as exc:
        log.error("cannot keep history: %s", exc)
        return 1
    except AccountError as exc:
        log.error("cannot open the accounts: %s", exc)
        return 1
    except FilesError as exc:
        log.error("cannot keep files: %s", exc)
        return 1

    def on_signal(signum: int, frame: object) -> None:
        server.signal_received(signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    server.serve_forever()
    log.info("stopped")
    return 0
