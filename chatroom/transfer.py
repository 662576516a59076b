"""Uploads to and downloads from a chat server's file host (soju.im/FILEHOST), without Tk.

:func:`upload` sends a file from disk to the upload URL the server advertises, logged in
with the account's name and password (HTTP Basic, as the spec pairs it with SASL PLAIN),
and returns the file's URL; :func:`download` saves a file's URL to disk (under a ``.part``
name, renamed when complete; a ``.part`` left by an earlier try is resumed with
``Range``); :func:`file_info` asks for a file's name, size and type (``HEAD``);
:func:`is_file_link` tells a link to the file host from any other URL.  All speak
:mod:`http.client`; bytes go in 256 KiB chunks, so memory does not grow with the file.

Following the spec, a plain ``http`` upload URL is refused when the chat connection is
encrypted (``chat_tls``): the password and the file would cross the network in clear.
Uploads send ``Expect: 100-continue`` and wait a moment for the server's verdict before
the body, so a refusal (too large, wrong password) arrives before any of the file is sent.

Every failure is a :class:`TransferError` whose message is plain words for the user ("the
file is larger than the server accepts (50 MB)", "wrong name or password"); a cancel is
its subclass :class:`Cancelled`.

Threads: each call runs wholly on the caller's thread (the app gives each transfer its
own); ``progress(sent, total)`` is called on that thread after each chunk, and ``cancel``
(a :class:`threading.Event`) may be set from any thread: it is checked between chunks, so
a transfer stops within one chunk or one socket timeout.  A client module: it imports
only the shared ones.
"""

from __future__ import annotations

import base64
import http.client
import io
import mimetypes
import os
import re
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chatroom import protocol as P
from chatroom.transport import fingerprint

CHUNK = 256 << 10  # bytes per read from disk or from the socket
TIMEOUT = 30.0  # seconds a socket may stay silent
CONTINUE_WAIT = 3.0  # seconds to wait for "100 Continue" before sending the body anyway
ERROR_BODY_MAX = 4096  # bytes of an error response read for its text
PART_SUFFIX = ".part"

Progress = Callable[[int, int], None]


class TransferError(Exception):
    """A transfer failed; ``str()`` says why in plain words.  ``status`` is the HTTP status
    when the server answered (None for a network failure)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Cancelled(TransferError):
    """The transfer was cancelled (a download's ``.part`` stays, to be resumed)."""

    def __init__(self) -> None:
        super().__init__("cancelled")


@dataclass(frozen=True)
class FileInfo:
    """What a file host says about a file before it is downloaded."""

    url: str
    name: str
    size: int | None
    type: str
    inline: bool  # the server would show it in a browser (a safe image or plain text)


# --- URLs ------------------------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str, int] | None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return parts.scheme, parts.hostname.lower(), port


def is_file_link(url: str, filehost_url: str | None) -> bool:
    """Is ``url`` a file on the file host whose upload URL is ``filehost_url`` (same
    scheme, host and port, and not the upload URL itself)?"""
    if not filehost_url:
        return False
    origin = _origin(url)
    if origin is None or origin != _origin(filehost_url):
        return False
    path = urllib.parse.urlsplit(url).path.rstrip("/")
    return path not in ("", urllib.parse.urlsplit(filehost_url).path.rstrip("/"))


def check_upload_url(url: str, chat_tls: bool) -> None:
    """Raise :class:`TransferError` unless ``url`` may be used to upload: http or https,
    and https whenever the chat connection is encrypted (the spec's rule)."""
    origin = _origin(url)
    if origin is None:
        raise TransferError("the server's file host address is not a web address this "
                            "client can use")
    if chat_tls and origin[0] != "https":
        raise TransferError("the server offers file sharing only unencrypted (http) while "
                            "your chat connection is encrypted: not sending your password "
                            "and file in clear")


def name_in(url: str) -> str:
    """The file's name as its URL gives it (the last part of the path, decoded)."""
    return _filename_of(url)


def _filename_of(url: str) -> str:
    last = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    return last or "file"


# --- connections -----------------------------------------------------------------------------


def _connect(url: str, tls_context: ssl.SSLContext | None, pin: str | None,
             timeout: float) -> tuple[http.client.HTTPConnection, str]:
    """An open connection for ``url`` and the request target (path and query).  With
    ``pin``, the server's certificate must have that SHA-256 fingerprint instead of being
    checked against the context's authorities (a self-signed certificate the user
    trusted)."""
    parts = urllib.parse.urlsplit(url)
    origin = _origin(url)
    if origin is None:
        raise TransferError("not a web address this client can use")
    scheme, host, port = origin
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    if scheme == "https":
        context = tls_context
        if pin is not None:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # the pin below is the check
        elif context is None:
            context = ssl.create_default_context()
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.connect()
    except OSError as exc:
        conn.close()
        raise TransferError(_network_words(exc)) from None
    if pin is not None:
        assert isinstance(conn.sock, ssl.SSLSocket)
        der = conn.sock.getpeercert(binary_form=True)
        if der is None or fingerprint(der).upper() != pin.upper():
            conn.close()
            raise TransferError("the file host's certificate is not the one you trusted for "
                                "this server")
    return conn, target


def _network_words(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ("the file host's certificate could not be verified "
                f"({exc.verify_message or exc.reason})")
    if isinstance(exc, ssl.SSLError):
        return f"the encrypted connection to the file host failed ({exc.reason or exc})"
    if isinstance(exc, socket.gaierror):
        return "the file host's name could not be found"
    if isinstance(exc, ConnectionRefusedError):
        return "the file host is not running (connection refused)"
    if isinstance(exc, TimeoutError):
        return "the file host stopped responding"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return "the file host closed the connection"
    if isinstance(exc, http.client.HTTPException):
        return "the file host sent an answer this client can't read"
    if isinstance(exc, OSError):
        return f"the connection to the file host failed ({exc.strerror or exc})"
    return f"the transfer failed ({exc})"


def _server_text(content_type: str | None, body: bytes) -> str | None:
    """A short plain-text reason the server gave, if it gave one that is fit to show."""
    if not (content_type or "").lower().startswith("text/plain") or len(body) > 300:
        return None
    text = body.decode("utf-8", "replace").strip()
    if not text or any(not ch.isprintable() for ch in text):
        return None
    return text


def _status_words(status: int, content_type: str | None, body: bytes,
                  retry_after: str | None, uploading: bool) -> str:
    text = _server_text(content_type, body)
    if status == 401:
        return "wrong name or password" if uploading else "the file host wants a login"
    if status == 403:
        return "the server refused" + (f": {text}" if text else " the transfer")
    if status == 404:
        return "the file is not on the server (any more)"
    if status == 411:
        return "the server wants the file's size first"
    if status == 413:
        return text or "the file is larger than the server accepts"
    if status == 429:
        wait = retry_after.strip() if retry_after else ""
        return (f"too many failed attempts: try again in {wait} s" if wait.isdigit()
                else text or "too many failed attempts: try again later")
    if status == 503:
        return "the file host is busy: try again in a moment"
    if status == 507:
        return "the server's disk is full"
    if status >= 500:
        return f"the server could not {'store' if uploading else 'send'} the file (HTTP {status})"
    return f"the server answered HTTP {status}" + (f": {text}" if text else "")


def _fail(response: http.client.HTTPResponse, uploading: bool) -> TransferError:
    try:
        body = response.read(ERROR_BODY_MAX)
    except (OSError, http.client.HTTPException):
        body = b""
    return TransferError(_status_words(response.status, response.getheader("Content-Type"),
                                       body, response.getheader("Retry-After"), uploading),
                         response.status)


# --- upload ------------------------------------------------------------------------------------


def _basic(account: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{account}:{password}".encode()).decode("ascii")


def _early_answer(conn: http.client.HTTPConnection, wait: float) -> TransferError | None:
    """After the headers of an ``Expect: 100-continue`` request: None once the server says
    100 (or says nothing within ``wait``: it may not know the header), else the refusal it
    sent instead.  Reads exactly the interim answer's bytes, one at a time, so nothing of
    what follows is taken from http.client."""
    sock = conn.sock
    assert sock is not None
    sock.settimeout(wait)
    try:
        first = sock.recv(1)
    except TimeoutError:
        return None
    finally:
        sock.settimeout(conn.timeout)
    if not first:
        return TransferError("the file host closed the connection")
    raw = sock.makefile("rb", buffering=0)
    status_line = first + raw.readline(1024)
    match = re.match(rb"HTTP/1\.[01] ([0-9]{3})", status_line)
    if match is None:
        return TransferError("the file host sent an answer this client can't read")
    status = int(match.group(1))
    headers = http.client.parse_headers(raw)
    if status == 100:
        return None
    length = headers.get("Content-Length", "0")
    body = raw.read(min(int(length), ERROR_BODY_MAX)) if length.isdigit() else b""
    return TransferError(_status_words(status, headers.get("Content-Type"), body or b"",
                                       headers.get("Retry-After"), True), status)


def upload(url: str, path: str | os.PathLike[str], account: str, password: str, *,
           progress: Progress | None = None, cancel: threading.Event | None = None,
           tls_context: ssl.SSLContext | None = None, chat_tls: bool = False,
           pin: str | None = None, name: str | None = None,
           content_type: str | None = None, timeout: float = TIMEOUT) -> str:
    """Upload the file at ``path`` to the upload URL ``url``; the file's URL.

    ``name`` (default: the file's own) is what others see; ``content_type`` defaults to a
    guess from the name.  ``chat_tls``: the chat connection is encrypted, so a plain-http
    ``url`` is refused.  ``pin``: the SHA-256 fingerprint the server's certificate must
    have (see :func:`download`).  Raises :class:`TransferError` (:class:`Cancelled`)."""
    check_upload_url(url, chat_tls)
    source = Path(path)
    shown = name or source.name or "file"
    kind = content_type or mimetypes.guess_type(shown)[0] or "application/octet-stream"
    try:
        f = open(source, "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise TransferError(f"can't read {source.name}: {exc.strerror or exc}") from None
    with f:
        total = os.fstat(f.fileno()).st_size
        conn, target = _connect(url, tls_context, pin, timeout)
        try:
            return _post(conn, url, target, f, total, shown, kind, account, password,
                         progress, cancel)
        except (OSError, http.client.HTTPException) as exc:
            raise TransferError(_network_words(exc)) from None
        finally:
            conn.close()


def _post(conn: http.client.HTTPConnection, url: str, target: str, f: io.BufferedReader,
          total: int,
          name: str, kind: str, account: str, password: str, progress: Progress | None,
          cancel: threading.Event | None) -> str:
    conn.putrequest("POST", target, skip_accept_encoding=True)
    conn.putheader("Authorization", _basic(account, password))
    conn.putheader("Content-Type", kind)
    conn.putheader("Content-Disposition", P.content_disposition("attachment", name))
    conn.putheader("Content-Length", str(total))
    conn.putheader("Expect", "100-continue")
    conn.endheaders()
    refused = _early_answer(conn, CONTINUE_WAIT)
    if refused is not None:
        raise refused
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    sent = 0
    if progress is not None:
        progress(0, total)
    while sent < total:
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        n = f.readinto(view[:min(CHUNK, total - sent)])
        if not n:
            raise TransferError("the file got shorter while it was being sent")
        try:
            conn.send(view[:n])
        except (BrokenPipeError, ConnectionResetError):
            break  # the server stopped reading: its answer says why
        sent += n
        if progress is not None:
            progress(sent, total)
    response = conn.getresponse()
    if response.status != 201:
        raise _fail(response, uploading=True)
    location = response.getheader("Location")
    response.read(ERROR_BODY_MAX)
    if sent < total:
        raise TransferError("the file host closed the connection during the upload")
    if not location:
        raise TransferError("the server stored the file but did not say where")
    return urllib.parse.urljoin(url, location.strip())


# --- download ---------------------------------------------------------------------------------


_CONTENT_RANGE = re.compile(r"bytes ([0-9]+)-([0-9]+)/([0-9]+|\*)\Z")


def file_info(url: str, *, tls_context: ssl.SSLContext | None = None,
              pin: str | None = None, timeout: float = TIMEOUT) -> FileInfo:
    """Name, size and type of the file at ``url`` (one ``HEAD``)."""
    conn, target = _connect(url, tls_context, pin, timeout)
    try:
        conn.request("HEAD", target)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise TransferError(_status_words(response.status, None, b"", None, False),
                                response.status)
        disposition = response.getheader("Content-Disposition")
        length = response.getheader("Content-Length", "")
        return FileInfo(url=url,
                        name=P.disposition_filename(disposition) or _filename_of(url),
                        size=int(length) if length.isdigit() else None,
                        type=response.getheader("Content-Type") or "application/octet-stream",
                        inline=(disposition or "").strip().lower().startswith("inline"))
    except (OSError, http.client.HTTPException) as exc:
        raise TransferError(_network_words(exc)) from None
    finally:
        conn.close()


def fetch(url: str, limit: int, *, tls_context: ssl.SSLContext | None = None,
          pin: str | None = None, timeout: float = TIMEOUT) -> bytes:
    """The file at ``url`` in memory (a small image to preview): at most ``limit`` bytes,
    refused (TransferError) if the server says or sends more."""
    conn, target = _connect(url, tls_context, pin, timeout)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        if response.status != 200:
            raise _fail(response, uploading=False)
        length = response.getheader("Content-Length", "")
        if length.isdigit() and int(length) > limit:
            raise TransferError("the file is too large to preview")
        body = response.read(limit + 1)
        if len(body) > limit:
            raise TransferError("the file is too large to preview")
        return body
    except (OSError, http.client.HTTPException) as exc:
        raise TransferError(_network_words(exc)) from None
    finally:
        conn.close()


def part_path(dest_path: str | os.PathLike[str]) -> Path:
    """Where :func:`download` keeps a file while it arrives."""
    dest = Path(dest_path)
    return dest.with_name(dest.name + PART_SUFFIX)


def download(url: str, dest_path: str | os.PathLike[str], *,
             progress: Progress | None = None, cancel: threading.Event | None = None,
             tls_context: ssl.SSLContext | None = None, pin: str | None = None,
             resume: bool = True, timeout: float = TIMEOUT) -> Path:
    """Save the file at ``url`` as ``dest_path`` (replacing it once complete); the path.

    It arrives as ``<dest>.part``, fsynced and renamed when whole.  With ``resume``, a
    ``.part`` left by an earlier try is continued from where it stopped (``Range``); a
    server that sends the whole file instead starts it over.  A cancel leaves the
    ``.part`` for the next try.  Raises :class:`TransferError` (:class:`Cancelled`)."""
    dest = Path(dest_path)
    part = part_path(dest)
    have = part.stat().st_size if resume and part.exists() else 0
    conn, target = _connect(url, tls_context, pin, timeout)
    try:
        headers = {"Range": f"bytes={have}-"} if have else {}
        conn.request("GET", target, headers=headers)
        response = conn.getresponse()
        if response.status == 416 and have:
            return _finish_or_restart(response, url, dest, part, have, progress, cancel,
                                      tls_context, pin, timeout)
        if response.status not in (200, 206):
            raise _fail(response, uploading=False)
        start, total = _span(response, have)
        _receive(response, part, start, total, progress, cancel)
    except (OSError, http.client.HTTPException) as exc:
        raise TransferError(_network_words(exc)) from None
    finally:
        conn.close()
    os.replace(part, dest)
    return dest


def _span(response: http.client.HTTPResponse, have: int) -> tuple[int, int | None]:
    """(where the body starts in the file, the file's size if known)."""
    length = response.getheader("Content-Length", "")
    if response.status == 206:
        match = _CONTENT_RANGE.match(response.getheader("Content-Range", "").strip())
        if match is None or int(match.group(1)) != have:
            raise TransferError("the file host sent a part of the file that was not asked for")
        size = match.group(3)
        return have, int(size) if size.isdigit() else None
    return 0, int(length) if length.isdigit() else None


def _finish_or_restart(response: http.client.HTTPResponse, url: str, dest: Path, part: Path,
                       have: int, progress: Progress | None, cancel: threading.Event | None,
                       tls_context: ssl.SSLContext | None, pin: str | None,
                       timeout: float) -> Path:
    """The server says the ``.part`` already reaches the end: done if it is exactly the
    file's size, else it is not this file's start: begin again."""
    response.read(ERROR_BODY_MAX)
    match = re.fullmatch(r"bytes \*/([0-9]+)", response.getheader("Content-Range", "").strip())
    if match is not None and int(match.group(1)) == have:
        if progress is not None:
            progress(have, have)
        os.replace(part, dest)
        return dest
    part.unlink()
    return download(url, dest, progress=progress, cancel=cancel, tls_context=tls_context,
                    pin=pin, resume=False, timeout=timeout)


def _receive(response: http.client.HTTPResponse, part: Path, start: int, total: int | None,
             progress: Progress | None, cancel: threading.Event | None) -> None:
    """Write the body into ``part`` from ``start`` on; fsync; TransferError if short."""
    mode = "r+b" if start and part.exists() else "wb"
    with open(part, mode) as out:
        out.seek(start)
        out.truncate()
        got = start
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        if progress is not None:
            progress(got, total or 0)
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            try:
                n = response.readinto(view)
            except http.client.IncompleteRead:
                break  # the connection ended early: said below, and the .part is kept
            if not n:
                break
            out.write(view[:n])
            got += n
            if progress is not None:
                progress(got, total or got)
        out.flush()
        os.fsync(out.fileno())
    if total is not None and got != total:
        raise TransferError(f"the download stopped after {got} of {total} bytes: try again "
                            "to resume it")
