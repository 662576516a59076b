"""The file host: HTTP (HTTPS when TLS is on) in the server process, soju's filehost extension.

What it speaks (soju.im/FILEHOST, as gamja, Goguma and senpai use it):

* ``OPTIONS /upload``: what the upload URL takes (``Allow``, ``Accept-Post``, CORS).
* ``POST /upload``: ``Authorization: Basic`` with an account's name and password, checked
  exactly as SASL PLAIN checks them (:func:`chatroom.login.check_password`: the accounts
  store's hashing threads, the per-account and per-address throttles); ``Content-Length``
  (411 without); ``Content-Disposition`` for the name (``filename*=UTF-8''...`` too);
  ``Content-Type``.  ``201 Created`` with ``Location``.  A size over ``max_upload``, or
  over the account's quota, is refused (413) before a byte of the body is read; with
  ``Expect: 100-continue`` the client is only asked for the body once every check passed.
  The body is streamed to disk in 1 MiB reads and the connection closed after it, so bytes
  past ``Content-Length`` are never read as anything.
* ``GET`` / ``HEAD /files/<id>[/<name>]``: no login (the id is 128 random bits), one
  ``Range`` (206, 416 when unsatisfiable).  Plain HTTP sends with :meth:`socket.sendfile`;
  over TLS (where the kernel can't encrypt) a 256 KiB copy loop.  Only PNG, JPEG, GIF,
  WebP and UTF-8 plain text are shown inline; everything else is an attachment.  Every
  response carries ``X-Content-Type-Options: nosniff`` and a sandboxing
  ``Content-Security-Policy``.

Threads: one accept thread, and one thread per connection, at most ``files_connections``
of them (a quarter of that per address); past that a connection gets a 503 at once.  Each
socket has a timeout of ``files_timeout`` for every read and write, and a request's line
and headers must all arrive within that time too, so a peer that trickles them, or stops
sending its body, or stops reading a download, is cut without holding a thread for long.
The TLS handshake runs on the connection's thread with the same deadline, with the context
the chat uses at that moment (a SIGHUP reload is picked up by the next connection).
Handler threads never touch the registry or its lock: they use the accounts and files
stores and the login throttles, which are safe from any thread.  :meth:`FileHost.stop`
(main thread) closes the listener and every open connection and joins the threads.

Logged: each upload (account, size, id, address), each refusal (why, address, the name
tried), never a password or an ``Authorization`` header.
"""

from __future__ import annotations

import base64
import binascii
import errno
import io
import ipaddress
import logging
import math
import mimetypes
import os
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from typing import Any, BinaryIO, cast

from chatroom import protocol as P
from chatroom.accounts import Accounts, Throttle
from chatroom.config import Config
from chatroom.files import (
    FileRecord,
    Files,
    FilesError,
    NoSpace,
    QuotaExceeded,
    megabytes,
)
from chatroom.login import check_password
from chatroom.transport import listen, shutdown

log = logging.getLogger(__name__)

UPLOAD_PATH = "/upload"
FILES_PATH = "/files/"
CHUNK = 1 << 20  # bytes read from an upload's body at a time
COPY_CHUNK = 256 << 10  # bytes per send when a download can't use sendfile (TLS)
LINGER_BYTES = 4 << 20  # unread body drained after a refusal, so the answer isn't reset away
LINGER_SECONDS = 2.0
TRANSFER_NICE = 10  # niceness of connection threads (Linux sets it per thread)
REALM = "chat file upload"
CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp",
                          "text/plain; charset=utf-8"})
_TOKEN = P.HTTP_TOKEN
_QUOTED = P.HTTP_QUOTED
_MEDIA_TYPE = re.compile(rf"\s*({_TOKEN})/({_TOKEN})\s*((?:;.*)?)\Z", re.DOTALL)
_MEDIA_PARAM = re.compile(rf"\s*;\s*({_TOKEN})\s*=\s*({_TOKEN}|{_QUOTED})", re.DOTALL)
_RANGE = re.compile(r"\s*bytes\s*=\s*([0-9]*)\s*-\s*([0-9]*)\s*\Z", re.IGNORECASE)
_HOST_HEADER = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?\Z")


# --- what a request says (pure) ------------------------------------------------------------


def served_type(declared: str | None, name: str) -> str:
    """The media type a file is stored and served with: the declared one, cleaned (lower
    case, parameters dropped but a text type's charset), else a guess from the name, else
    ``application/octet-stream``.  Plain text in UTF-8 (or ASCII, or no charset said)
    becomes ``text/plain; charset=utf-8``."""
    match = _MEDIA_TYPE.match(declared or "")
    if match is None:
        guess = mimetypes.guess_type(name, strict=False)[0]
        match = _MEDIA_TYPE.match(guess or "application/octet-stream")
        assert match is not None
    essence = f"{match.group(1)}/{match.group(2)}".lower()
    params = {m.group(1).lower(): P.http_unquote(m.group(2)).lower()
              for m in _MEDIA_PARAM.finditer(match.group(3))}
    charset = params.get("charset")
    if essence == "text/plain" and charset in (None, "utf-8", "utf8", "us-ascii"):
        return "text/plain; charset=utf-8"
    if essence.startswith("text/") and charset and re.fullmatch(_TOKEN, charset):
        return f"{essence}; charset={charset}"
    return essence


def content_disposition(record: FileRecord) -> str:
    """``inline`` for the few safe types, else ``attachment``, with the name."""
    return P.content_disposition("inline" if record.type in INLINE_TYPES else "attachment",
                                 record.name)


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(name, password) from ``Authorization: Basic``, or None if there is none readable."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    name, sep, password = decoded.partition(":")
    return (name, password) if sep else None


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The (first, last) byte a single ``Range`` asks for, clipped to ``size``; None if it
    can't be satisfied.  Raises ValueError for a header to ignore (several ranges, junk)."""
    match = _RANGE.match(header)
    if match is None:
        raise ValueError("not a single byte range")
    first_text, last_text = match.groups()
    if not first_text:
        if not last_text:
            raise ValueError("an empty range")
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            return None
        return max(0, size - suffix), size - 1
    first = int(first_text)
    if last_text and int(last_text) < first:
        raise ValueError("a backwards range")
    if first >= size:
        return None
    return first, min(int(last_text), size - 1) if last_text else size - 1


def url_host(address: str) -> str:
    """An address as a URL's host: IPv6 in brackets (a zone's % escaped), IPv4 mapped into
    IPv6 as plain IPv4."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return "[" + address.replace("%", "%25") + "]"
    return address


# --- reading with a deadline -----------------------------------------------------------------


class _DeadlineReader(io.RawIOBase):
    """A socket's bytes, each read bounded by the socket's timeout and, while a deadline
    is set (a request's line and headers), by that deadline too."""

    def __init__(self, sock: socket.socket, idle: float) -> None:
        self.sock, self.idle = sock, idle
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        timeout = self.idle
        if self.deadline is not None:
            timeout = min(timeout, self.deadline - time.monotonic())
            if timeout <= 0:
                raise TimeoutError("the request took too long to arrive")
        self.sock.settimeout(timeout)
        return self.sock.recv_into(buffer)


class _Writer(io.BufferedIOBase):
    """Whole writes to a socket (``sendall``), which is what http.server expects."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.sock.sendall(data)
        return len(data)


# --- one connection --------------------------------------------------------------------------


class _Refused(Exception):
    """A request answered with an error; the handler sends it and logs why."""

    def __init__(self, status: int, text: str, headers: dict[str, str] | None = None,
                 log_as: str | None = None) -> None:
        super().__init__(text)
        self.status, self.text, self.headers = status, text, headers or {}
        self.log_as = log_as


class Handler(BaseHTTPRequestHandler):
    """One connection's requests (its own thread).  Set up by :class:`FileHost`."""

    protocol_version = "HTTP/1.1"
    server_version = "chatroom-files"
    sys_version = ""
    host: FileHost  # what the class is made for (see FileHost._handler_class)

    def setup(self) -> None:
        self.connection = self.request
        self.reader = _DeadlineReader(self.connection, self.host.config.files_timeout)
        self.rfile = io.BufferedReader(self.reader, 65536)
        self.wfile = _Writer(self.connection)
        self._unread_body = False

    def finish(self) -> None:
        if self._unread_body:
            self._linger()

    # --- framing --------------------------------------------------------------------------

    def handle_one_request(self) -> None:
        self.reader.deadline = time.monotonic() + self.host.config.files_timeout
        self._expects_continue = False
        self._unread_body = False
        super().handle_one_request()

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self.reader.deadline = None  # the headers are in; the body has the idle timeout
        return ok

    def handle_expect_100(self) -> bool:
        # Asked for only once every check has passed (see _upload), not straight away.
        self._expects_continue = True
        return True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("files: %s %s", self.address_string(), format % args)

    def log_error(self, format: str, *args: Any) -> None:
        log.debug("files: %s %s", self.address_string(), format % args)

    def end_headers(self) -> None:
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Expose-Headers",
                         "Location, Content-Disposition, Content-Range, Content-Length")
        super().end_headers()

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """http.server's own refusals (a bad request line, an unknown method), as plain
        text with our headers instead of its HTML page."""
        self._reply(code, message or self.responses.get(code, ("error",))[0], close=True)

    def _reply(self, status: int, text: str, headers: dict[str, str] | None = None,
               close: bool = False) -> None:
        body = (text + "\n").encode("utf-8")
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if status >= 200 and status not in (204, 304):
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD" and status >= 200 and status not in (204, 304):
            self.wfile.write(body)

    def _refuse(self, refusal: _Refused) -> None:
        if refusal.log_as:
            log.info("files: %s %s from %s", self.command, refusal.log_as, self.client_address[0])
        # The body of a refused upload is never read: the connection can't go on after it.
        self._unread_body = self.command == "POST"
        self._reply(refusal.status, refusal.text, refusal.headers, close=self._unread_body)

    def _linger(self) -> None:
        """After refusing an upload without reading its body: stop sending, then read and
        drop what is still coming for a moment, so the peer reads the refusal instead of
        a reset (closing on unread bytes sends RST, which can discard the answer)."""
        sock = self.connection
        try:
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            left = LINGER_BYTES
            while left > 0 and (wait := deadline - time.monotonic()) > 0:
                sock.settimeout(wait)
                data = sock.recv(min(left, 65536))
                if not data:
                    return
                left -= len(data)
        except (OSError, ValueError):
            pass

    # --- routes ------------------------------------------------------------------------------

    def _route(self) -> tuple[str, str | None]:
        """("upload", None), ("file", id) or ("none", None) for the request's path."""
        path = urllib.parse.urlsplit(self.path).path
        prefix = self.host.path_prefix
        if prefix and (path == prefix or path.startswith(prefix + "/")):
            path = path[len(prefix):]
        if path == UPLOAD_PATH:
            return "upload", None
        if path.startswith(FILES_PATH):
            file_id = path[len(FILES_PATH):].split("/", 1)[0]
            return "file", file_id
        return "none", None

    def _dispatch(self, allowed: dict[str, tuple[str, ...]]) -> str | None:
        """The route if this method is allowed on it, else answer 404/405 and None."""
        route, _ = self._route()
        methods = allowed.get(route)
        if route == "none" or methods is None:
            if route == "none":
                self._refuse(_Refused(404, "no such file"))
            else:
                self._refuse(_Refused(405, "not allowed here",
                                      {"Allow": ", ".join(ALLOWED[route])}))
            return None
        return route

    def do_OPTIONS(self) -> None:
        route = self._dispatch({"upload": ("OPTIONS",), "file": ("OPTIONS",)})
        if route is None:
            return
        headers = {"Allow": ", ".join(ALLOWED[route]),
                   "Access-Control-Allow-Methods": ", ".join(ALLOWED[route]),
                   "Access-Control-Allow-Headers":
                       "Authorization, Content-Type, Content-Disposition, Range",
                   "Access-Control-Max-Age": "86400"}
        if route == "upload":
            headers["Accept-Post"] = "*/*"
        self.send_response(204)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def do_POST(self) -> None:
        if self._dispatch({"upload": ("POST",)}) is None:
            return
        try:
            self._upload()
        except _Refused as refusal:
            self._refuse(refusal)

    def do_GET(self) -> None:
        self._download()

    def do_HEAD(self) -> None:
        self._download()

    def do_PUT(self) -> None:
        self._dispatch({})

    def do_DELETE(self) -> None:
        self._dispatch({})

    def do_PATCH(self) -> None:
        self._dispatch({})

    # --- upload --------------------------------------------------------------------------------

    def _declared_size(self) -> int:
        if self.headers.get("Transfer-Encoding") is not None:
            raise _Refused(411, "send the file with a Content-Length (no chunked uploads)",
                           log_as="refused: chunked upload")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            raise _Refused(411, "Content-Length is required", log_as="refused: no length")
        if len(set(lengths)) != 1 or not lengths[0].strip().isdigit():
            raise _Refused(400, "a bad Content-Length", log_as="refused: bad length")
        return int(lengths[0])

    def _account(self) -> tuple[str, str]:
        """The uploader's account (key, name), or a refusal: 401 without credentials or
        with wrong ones (a guest has none), 413 for a size over the limit (before any
        password is hashed), 429 while throttled."""
        challenge = {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}
        credentials = basic_credentials(self.headers.get("Authorization"))
        if credentials is None:
            raise _Refused(401, "log in with your account's name and password to upload "
                                "(guests can't upload)", challenge,
                           log_as="refused: no credentials")
        size = self._declared_size()
        limit = self.host.config.max_upload
        if size > limit:
            raise _Refused(413, f"the file is larger than the server accepts "
                                f"({megabytes(limit)})",
                           log_as=f"refused: {size} bytes is over the limit")
        name, password = credentials
        host = self.host
        check = check_password(host.accounts, host.login_throttle, host.address_throttle, name,
                               password, self.client_address[0])
        if check.wait > 0:
            seconds = max(1, math.ceil(check.wait))
            raise _Refused(429, f"too many failed attempts: try again in {seconds} s",
                           {"Retry-After": str(seconds)},
                           log_as=f"refused: throttled login as {name!r}")
        if check.account is None:
            raise _Refused(401, "wrong name or password", challenge,
                           log_as=f"refused: wrong password for {name!r}")
        return check.account.key, check.account.name

    def _upload(self) -> None:
        host = self.host
        key, account = self._account()
        size = self._declared_size()
        name = P.disposition_filename(self.headers.get("Content-Disposition")) or "file"
        media_type = served_type(self.headers.get("Content-Type"), name)
        try:
            upload = host.files.begin(key, account, name, media_type, size)
        except QuotaExceeded as exc:
            raise _Refused(413, str(exc), log_as=f"refused: {account} is over quota") from None
        except NoSpace as exc:
            raise _Refused(507, str(exc), log_as="refused: disk full") from None
        except FilesError as exc:
            log.error("files: upload by %s could not start: %s", account, exc)
            raise _Refused(500, "the file could not be stored") from None
        if self._expects_continue:
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            self._receive(upload, size)
            record = upload.commit()
        except FilesError as exc:
            log.error("files: upload by %s failed: %s", account, exc)
            raise _Refused(500, "the file could not be stored") from None
        finally:
            upload.abort()  # nothing once committed; otherwise the partial file goes
        self._unread_body = False
        log.info("files: %s uploaded %s (%d bytes, %s) from %s", account, record.id,
                 record.size, record.type, self.client_address[0])
        url = host.file_url(record, self._base_url())
        # The connection ends here: whatever follows the body is not read as a request.
        self._reply(201, url, {"Location": url}, close=True)

    def _receive(self, upload: Any, size: int) -> None:
        """Stream ``size`` bytes of body into ``upload``, never more."""
        buffer = bytearray(min(CHUNK, max(size, 1)))
        view = memoryview(buffer)
        left = size
        while left:
            n = self.rfile.readinto1(view[:min(left, len(buffer))])  # what has come, at once
            if not n:
                raise FilesError(f"the client went away after {size - left} of {size} bytes")
            upload.write(view[:n])
            left -= n

    def _base_url(self) -> str:
        """Where this request was sent, for the Location: the public URL, else the Host
        header (if it is a plain host[:port]), else the address it reached."""
        host = self.host
        if host.config.public_url:
            return host.config.public_url.rstrip("/")
        given = (self.headers.get("Host") or "").strip()
        if given and _HOST_HEADER.match(given):
            return f"{host.scheme}://{given}"
        return host.base_url(self.connection.getsockname()[0])

    # --- download ------------------------------------------------------------------------------

    def _download(self) -> None:
        route = self._dispatch({"file": ("GET", "HEAD")})
        if route is None:
            return
        _, file_id = self._route()
        host = self.host
        record = host.files.get(file_id or "")
        if record is None:
            self._reply(404, "no such file")
            return
        try:
            f = open(host.files.path(record), "rb")
        except OSError:  # purged meanwhile
            self._reply(404, "no such file")
            return
        with f:
            self._send_file(record, f)

    def _send_file(self, record: FileRecord, f: BinaryIO) -> None:
        etag = f'"{record.id}"'
        headers = {"Content-Type": record.type,
                   "Content-Disposition": content_disposition(record),
                   "Accept-Ranges": "bytes", "ETag": etag,
                   "Last-Modified": formatdate(record.created, usegmt=True),
                   "Cache-Control": "private, max-age=86400"}
        if self.headers.get("If-None-Match", "").strip() == etag:
            self.send_response(304)
            for key in ("ETag", "Cache-Control"):
                self.send_header(key, headers[key])
            self.end_headers()
            return
        size = record.size
        first, last, status = 0, size - 1, 200
        asked = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if asked and (if_range is None or if_range.strip() == etag):
            try:
                span = byte_range(asked, size)
            except ValueError:
                span = (0, size - 1)  # a range we don't serve: the whole file, as 200
            else:
                if span is None:
                    self._reply(416, "that range is outside the file",
                                {"Content-Range": f"bytes */{size}"})
                    return
                status = 206
            first, last = span
        count = max(0, last - first + 1)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if status == 206:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Content-Length", str(count))
        self.end_headers()
        if self.command == "HEAD" or count == 0:
            return
        self._send_bytes(f, first, count)

    def _send_bytes(self, f: BinaryIO, offset: int, count: int) -> None:
        sock = self.connection
        sock.settimeout(self.host.config.files_timeout)
        if not isinstance(sock, ssl.SSLSocket):
            sock.sendfile(f, offset, count)  # the kernel copies: no bytes pass through us
            return
        f.seek(offset)
        buffer = bytearray(COPY_CHUNK)
        view = memoryview(buffer)
        while count > 0:
            n = f.readinto(view[:min(count, COPY_CHUNK)])  # type: ignore[attr-defined]
            if not n:
                raise OSError(errno.EIO, "the file is shorter than its record")
            sock.sendall(view[:n])
            count -= n


ALLOWED = {"upload": ("OPTIONS", "POST"), "file": ("OPTIONS", "GET", "HEAD")}


def _lower_priority() -> None:
    """A transfer gives way to the chat: its thread (and the kernel's copying and disk
    work done on its behalf) runs at niceness :data:`TRANSFER_NICE`, as password hashes do."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), TRANSFER_NICE)
    except (AttributeError, OSError) as exc:
        log.debug("files: transfer threads keep their priority: %s", exc)


# --- the host ----------------------------------------------------------------------------------


class FileHost:
    """The listener, its accept thread and the connection threads.

    For the caller (main thread): :meth:`bind`, :meth:`start`, :meth:`stop`; for the
    chat's reader threads: :meth:`upload_url`.  ``tls_context`` is asked for the context
    to use each time a connection is accepted (None: plain HTTP).
    """

    def __init__(self, config: Config, files: Files, accounts: Accounts,
                 login_throttle: Throttle, address_throttle: Throttle,
                 tls_context: Callable[[], ssl.SSLContext | None]) -> None:
        self.config = config
        self.files, self.accounts = files, accounts
        self.login_throttle, self.address_throttle = login_throttle, address_throttle
        self._tls_context = tls_context
        self.scheme = "https" if tls_context() is not None else "http"
        self.path_prefix = ""
        if config.public_url:
            self.path_prefix = urllib.parse.urlsplit(config.public_url).path.rstrip("/")
        self.listener: socket.socket | None = None
        self.address: tuple[str, int] = (config.host, config.files_port or 0)
        self._lock = threading.Lock()  # the two counts and the open connections
        self._open: dict[socket.socket, str] = {}  # connection -> peer address
        self._per_address: dict[str, int] = {}
        self._threads: set[threading.Thread] = set()
        self._stopping = False
        self._accepter: threading.Thread | None = None
        handler = type("BoundHandler", (Handler,), {"host": self})
        self._handler: type[Handler] = handler

    # --- addresses ----------------------------------------------------------------------------

    def base_url(self, local_address: str) -> str:
        """``scheme://host:port`` for a client that reached this machine at ``local_address``
        (or the public URL)."""
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        return f"{self.scheme}://{url_host(local_address)}:{self.address[1]}"

    def upload_url(self, local_address: str) -> str:
        """The URL the chat advertises (soju.im/FILEHOST) to a client that connected to
        ``local_address``."""
        return self.base_url(local_address) + UPLOAD_PATH

    def file_url(self, record: FileRecord, base: str) -> str:
        return f"{base}{FILES_PATH}{record.id}/{urllib.parse.quote(record.name, safe='')}"

    # --- lifecycle ------------------------------------------------------------------------------

    def bind(self) -> tuple[str, int]:
        """Listen on the chat's host and ``files_port`` (0 picks one); :class:`OSError`
        naming the address if it can't be had."""
        sock = listen(self.config.host, self.config.files_port or 0, 128, "the file host")
        self.listener = sock
        self.address = sock.getsockname()[:2]
        return self.address

    def start(self) -> None:
        assert self.listener is not None, "bind() first"
        self._accepter = threading.Thread(target=self._accept_loop, name="files-accept",
                                          daemon=True)
        self._accepter.start()
        log.info("file host on %s:%d (%s), uploads up to %s", *self.address,
                 self.scheme.upper(), megabytes(self.config.max_upload))

    def stop(self, timeout: float = 2.0) -> None:
        """Close the listener and every connection (an upload in progress is dropped, its
        partial file removed) and wait for the threads."""
        with self._lock:
            self._stopping = True
            open_now = list(self._open)
        if self.listener is not None:
            shutdown(self.listener)  # wakes the accept() on Linux
            self.listener.close()
        for sock in open_now:
            shutdown(sock)
        deadline = time.monotonic() + timeout
        if self._accepter is not None:
            self._accepter.join(max(0.0, deadline - time.monotonic()))
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))

    def active(self) -> int:
        """Connections being served now."""
        with self._lock:
            return len(self._open)

    # --- accepting --------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self.listener is not None
        while True:
            try:
                sock, addr = self.listener.accept()
            except OSError as exc:
                if self._stopping or exc.errno in (errno.EBADF, errno.EINVAL):
                    return
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    log.error("files: cannot accept: out of file descriptors (%s)", exc)
                    time.sleep(0.1)  # let closes catch up rather than spin on a full table
                continue
            self._admit(sock, addr[0])

    def _admit(self, sock: socket.socket, peer: str) -> None:
        cfg = self.config
        per_address = max(2, cfg.files_connections // 4)
        with self._lock:
            busy = (self._stopping or len(self._open) >= cfg.files_connections
                    or self._per_address.get(peer, 0) >= per_address)
            if not busy:
                self._open[sock] = peer
                self._per_address[peer] = self._per_address.get(peer, 0) + 1
        if busy:
            self._turn_away(sock, peer)
            return
        t = threading.Thread(target=self._serve, args=(sock, peer), daemon=True,
                             name=f"files-{peer}")
        with self._lock:
            self._threads.add(t)
        try:
            t.start()
        except RuntimeError as exc:  # can't start new thread
            log.error("files: cannot start a thread for %s: %s", peer, exc)
            self._forget(sock, peer, t)
            sock.close()

    def _turn_away(self, sock: socket.socket, peer: str) -> None:
        """Too many connections: a 503 in clear, sent without waiting (over TLS there is
        no way to say it before a handshake, so just close)."""
        log.warning("files: too many connections, turned %s away", peer)
        if self._tls_context() is None:
            try:
                sock.send(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n"
                          b"Content-Length: 0\r\nConnection: close\r\n\r\n", socket.MSG_DONTWAIT)
            except OSError:
                pass
        sock.close()

    def _forget(self, sock: socket.socket, peer: str, thread: threading.Thread) -> None:
        with self._lock:
            self._open.pop(sock, None)
            left = self._per_address.get(peer, 0) - 1
            if left > 0:
                self._per_address[peer] = left
            else:
                self._per_address.pop(peer, None)
            self._threads.discard(thread)

    def _serve(self, sock: socket.socket, peer: str) -> None:
        conn: socket.socket = sock
        _lower_priority()
        try:
            sock.settimeout(self.config.files_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            context = self._tls_context()
            if context is not None:
                conn = context.wrap_socket(sock, server_side=True,
                                           do_handshake_on_connect=False)
                with self._lock:  # stop() must shut down what is really being read
                    self._open.pop(sock, None)
                    self._open[conn] = peer
                conn.do_handshake()
            # http.server wants a socketserver as the third argument and never uses it.
            self._handler(conn, (peer, 0), cast(Any, self))
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.debug("files: connection from %s ended: %s", peer, exc)
        except Exception:
            log.exception("files: a request from %s failed", peer)
        finally:
            self._forget(conn, peer, threading.current_thread())
            self._forget_sock(sock)
            try:
                conn.close()
            except OSError:
                pass

    def _forget_sock(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.pop(sock, None)
