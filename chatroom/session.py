"""ChatSession: one user on one server, with no Tk: connecting, registering, events, sending.

Threads and who owns what:

* The session is the only client code that speaks the protocol, through
  :mod:`chatroom.protocol`.  Its *network* thread connects, registers (PASS/NICK/USER),
  joins the room and then reads: every server line becomes a typed event
  (:mod:`chatroom.events`) on ``session.events``, a bounded :class:`queue.Queue`.
  Incoming bytes are decoded leniently (invalid UTF-8 becomes U+FFFD, over-long lines are
  still read), because a line we drop can leave a member list wrong for good.  It answers
  PING itself, sends PING when the server goes quiet, and when a registered connection
  drops it reconnects with exponential backoff and jitter, under the same name, into the
  same room.  What the server's RPL_ISUPPORT (005) says is kept in a
  :class:`~chatroom.serverinfo.ServerInfo`, with the spec's defaults for what it leaves out.
  The line handlers (``_on_*``, the ``_HANDLERS`` table) run only on this thread, and so
  does everything in ``_Conn``.
* Registration starts with ``CAP LS 302`` and asks for the IRCv3 capabilities of
  :data:`WANTED_CAPS` that the server offers (a server without CAP just registers us).
  With ``draft/chathistory`` (and ``batch`` and ``message-tags``) the session fetches
  history itself: after each join of a room (its NAMES list in), ``CHATHISTORY LATEST``
  the first time, ``AFTER`` the newest line seen once it has been in the room before (a
  reconnect), in pages until caught up.  Until that reply is in, the room's live events
  are held back, so the :class:`~chatroom.events.History` event comes first and the live
  lines follow, in order.  Lines of a ``chathistory`` batch never reach the live handlers
  (an old JOIN must not change the member list).  Every line shown is remembered by
  ``msgid`` (a bounded set per room), so none is shown twice: not the live line that is
  also in the fetched history, not one seen before a reconnect.  :meth:`load_older` asks
  for the page before the oldest line shown (``CHATHISTORY BEFORE``).
* With an account (:class:`Credentials`) registration also logs in: after CAP LS the
  session asks for ``sasl`` (and ``draft/account-registration`` to create the account)
  and, before CAP END, runs ``AUTHENTICATE PLAIN`` or ``REGISTER * * :<password>``; the
  outcome is a :class:`~chatroom.events.LoggedIn` or a
  :class:`~chatroom.events.LoginFailed` whose kind says what to fix.  The password lives
  in the :class:`Credentials` (left out of its repr) and in the network thread's locals
  while a line is made, until the session ends; it is never logged.  A guest on a
  registered name gets a :class:`~chatroom.events.RenameWarning` (from the server's
  notice) and later a ``forced`` :class:`~chatroom.events.UserRenamed`.
* With ``tls`` the network thread also does the TLS handshake (within ``connect_timeout``)
  and decides whether to trust the certificate before anything is sent: verified against
  the system's CAs, or matching the pin the user saved for this host:port (see
  :meth:`ChatSession._secure`).  The TLS session is a :class:`~chatroom.transport.TLSStream`
  over memory BIOs, not an ``ssl.SSLSocket``, because two threads use the connection and
  must never be inside one OpenSSL object at once: the stream serialises its calls, and
  every ``encrypt`` + ``sendall`` (and every send of what reading produced) happens under
  ``_wlock``, so records leave in the order they were made.
* Its *sender* thread does the writes the caller asks for.  The public ``send_*`` methods
  only format a line and put it on a bounded outgoing queue, so the caller (the Tk thread)
  never waits for the network; a full queue is refused, not waited on.  ``_wlock`` keeps
  the two threads' writes to the socket whole (and, over TLS, in record order).
* State is kept per room, in a :class:`RoomState` (its name, its members, its topic,
  whether we are in it) held by folded room name; today the session joins one room, the
  one it was made for (``room``), and its public API speaks of that room.  Room states,
  our nick, the connection state and the current socket are guarded by ``_lock``, which
  no one holds across I/O.  Member lists are kept exact from NAMES (353...366) and every
  JOIN/PART/QUIT/NICK/KICK/MODE; each event that changes one carries a snapshot, so the
  reader of the queue never reads shared state.

Any thread may call the public methods and properties; none of them blocks on the network
(only :meth:`ChatSession.close` and :func:`close_sessions` wait, for the threads to end).
With ``echo-message`` (:attr:`ChatSession.echoes`) the server sends our own lines back, with
its msgid and time, as :class:`~chatroom.events.Echo` events; without it (an older server)
IRC does not echo them, and the caller shows its own lines itself.
"""

from __future__ import annotations

import base64
import enum
import errno
import logging
import queue
import random
import re
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from chatroom import protocol as P
from chatroom import wording
from chatroom.events import (
    Away,
    AwayChanged,
    AwayStates,
    BanList,
    Closed,
    Disconnected,
    Echo,
    Event,
    History,
    HistoryKind,
    Joined,
    Left,
    LoggedIn,
    LoginFailed,
    LoginKind,
    Message,
    Names,
    Notice,
    OperChanged,
    Presence,
    ReadMarker,
    Reconnecting,
    Registered,
    RenameWarning,
    RoomInfo,
    RoomLine,
    RoomList,
    Sending,
    ServerError,
    Topic,
    UserJoined,
    UserLeft,
    UserQuit,
    UserRenamed,
    Whois,
)
from chatroom.pins import PinFileError, PinStore
from chatroom.protocol import ProtocolError
from chatroom.serverinfo import Members, ServerInfo
from chatroom.transport import (
    TLSClosed,
    TLSStream,
    fingerprint,
    handshake,
    os_reason,
    shutdown,
)

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1027
TLS_PORT = 6697  # IRC's port for TLS (RFC 7194)
DEFAULT_ROOM = "#chat"
QUIT_REASON = "Goodbye"
LEAVE_REASON = "Left the chat"

# Until we have seen our own ``nick!user@host`` (in 001 or the echo of our JOIN), guess
# what a relayed line adds in front of our text beyond our nick and the target:
# ":" nick "!" user "@" host " PRIVMSG " target " :" ... "\r\n", with room for a long host.
_RELAY_OVERHEAD = 1 + 1 + 12 + 1 + 64 + len(" PRIVMSG ") + 2 + 2
# The most we buffer of one incoming line (other servers send longer lines than 512 bytes).
_MAX_INCOMING = 64 * 1024
# Server replies that mean "the thing you just asked for was refused" for a nick change.
NICK_ERRORS = frozenset({"400", "432", "433", "436", "437", "484"})
ERR_UNAVAILRESOURCE = "437"  # nick (or room) temporarily unavailable
RPL_VISIBLEHOST = "396"  # "<nick> <host> :is now your displayed host"
# Our server's notice to a plaintext connection when it also listens for TLS:
# "This connection is not encrypted. Connect with TLS to port 6697 to keep ...".
_TLS_OFFER = re.compile(r"\bnot encrypted\b.*\bTLS\b.*\bport (\d{1,5})\b", re.IGNORECASE)

# The IRCv3 capabilities we ask for, when the server offers them.
WANTED_CAPS = ("message-tags", "server-time", "echo-message", "batch", "labeled-response",
               "draft/chathistory", "draft/event-playback", "standard-replies", "cap-notify",
               "draft/multiline", "away-notify", "extended-monitor", "draft/read-marker")
READ_MARKER_CAP = "draft/read-marker"
MULTILINE_CAP = "draft/multiline"
CONCAT_TAG = "draft/multiline-concat"
# Fetching history needs all three: the command, batches to tell history from live lines,
# and msgids to page by and to recognise lines already shown.
HISTORY_CAPS = frozenset({"draft/chathistory", "batch", "message-tags"})
SEND_BURST = 5  # lines sent at once; then SEND_RATE per second (see _send_loop)
SEND_RATE = 2.0
HISTORY_PAGE = 100  # lines per CHATHISTORY request (fewer if the server's limit is lower)
CATCH_UP_PAGES = 5  # after a reconnect, AFTER pages fetched at most before going live
MAX_OPEN_BATCHES = 50  # batches open at once that we keep track of (a server is trusted,
# but a broken one must not grow our memory without end)
HOSTS_KEPT = 5000  # people whose user@host we remember (for a server ban)
LIST_MAX = 5000  # rooms of a LIST reply kept (a big network has more; the rest are dropped)
SEEN_PER_ROOM = 5000  # msgids remembered per room (more than a window's scrollback)

# Accounts (IRCv3 sasl-3.1 with PLAIN, draft/account-registration before-connect).
SASL_CAP = "sasl"
REGISTRATION_CAP = "draft/account-registration"
PASSWORD_MAX = 300  # bytes of UTF-8, as servers of this project accept
NAME_FALLBACKS = 3  # other names tried while logging in when ours is in use
# Our server's words (the numerics and FAIL codes carry no more than that):
# "The nick bob is registered. Log in to it within 30 s, or you will be renamed ...".
_RENAME_WARNING = re.compile(r"^The nick (\S+) is registered\. Log in to it within "
                             r"(\d+(?:\.\d+)?) s\b", re.IGNORECASE)
_TRY_AGAIN = re.compile(r"\btry again in (\d+) ?s\b", re.IGNORECASE)
# Many servers (ours, InspIRCd, Solanum) start a LIST topic with the room's modes.
_LIST_MODES = re.compile(r"^\[\+[A-Za-z]*(?: [^\]]*)?\] ?")
_ROOM_BAD = re.compile(r"[\x00-\x20,:\x7f]")  # what a room's name may not hold (RFC 2812)
_TLS_PORT_WORDS = re.compile(r"\bport (\d{1,5})\b", re.IGNORECASE)


class AccountMode(str, enum.Enum):
    """The three ways in: as a guest, logging in to an account, creating one."""

    GUEST = "guest"
    LOGIN = "login"
    CREATE = "create"


@dataclass(frozen=True)
class Credentials:
    """An account name and its password, for the session that logs in with them.

    ``create`` asks the server to make the account first (REGISTER); once it exists the
    session logs in to it (SASL PLAIN) on every later connection.  The password is left out
    of the repr (and so of any log line or traceback that shows the object).
    """

    name: str
    password: str = field(repr=False)
    create: bool = False

    @property
    def mode(self) -> AccountMode:
        return AccountMode.CREATE if self.create else AccountMode.LOGIN


def password_problem(password: str, confirm: str | None = None) -> tuple[str, str] | None:
    """Why ``password`` (and, creating an account, its ``confirm``) will not do, checked
    before anything is sent: (the field at fault, "password" or "confirm"; words), or None."""
    if not password:
        return "password", "Enter the password."
    if len(password.encode("utf-8", "surrogatepass")) > PASSWORD_MAX:
        return "password", (f"The password must be 1 to {PASSWORD_MAX} bytes (most characters "
                            f"take one; accented letters and emoji two to four).")
    if any(ch in password for ch in "\0\r\n"):
        return "password", "The password cannot contain line breaks."
    if confirm is not None and confirm != password:
        return "confirm", ("The two passwords are not the same. Type the password again in "
                           "“Confirm”.")
    return None


def sasl_plain_lines(name: str, password: str) -> bytes:
    """The AUTHENTICATE lines of a PLAIN response (RFC 4616: no authzid, name, password),
    in 400-byte chunks; a response that fills its last chunk is ended with ``+``."""
    raw = b"\0" + name.encode("utf-8") + b"\0" + password.encode("utf-8")
    encoded = base64.b64encode(raw).decode("ascii")
    chunks = [encoded[i:i + P.SASL_CHUNK] for i in range(0, len(encoded), P.SASL_CHUNK)]
    if len(encoded) % P.SASL_CHUNK == 0:
        chunks.append("+")
    return b"".join(P.format_line(None, "AUTHENTICATE", chunk) for chunk in chunks)

def clean_text(text: str) -> str:
    """Text from Tk made safe to encode: surrogate pairs joined, lone surrogates to U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


@dataclass
class Backoff:
    """Exponential backoff with jitter: attempt n waits about initial * factor**(n-1).

    The defaults suit a chat: the first retry within a second, never more than 15 s
    between attempts once the server is back.
    """

    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 15.0
    jitter: float = 0.5  # up to this fraction of each delay is randomly taken off

    def delay(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))
        return base * (1.0 - self.jitter * random.random())


class Seen:
    """The msgids of the last ``size`` lines shown (live or fetched): to show none twice.

    Bounded, because a session may run for weeks.  The first to go are those shown
    longest ago; a fetch after the newest line seen cannot bring those back, and a page of
    older lines ends before anything shown.
    Not thread-safe: the session holds its lock.
    """

    def __init__(self, size: int = SEEN_PER_ROOM) -> None:
        self.size = size
        self._ids: set[str] = set()
        self._order: deque[str] = deque()

    def __contains__(self, msgid: object) -> bool:
        return msgid in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, msgid: str) -> bool:
        """Remember ``msgid``; False if it was there already (the line was shown)."""
        if msgid in self._ids:
            return False
        self._ids.add(msgid)
        self._order.append(msgid)
        if len(self._order) > self.size:
            self._ids.discard(self._order.popleft())
        return True


@dataclass(frozen=True)
class Mark:
    """Where a stored line is in a room's history: its msgid and its server time text."""

    msgid: str | None
    time: str | None

    @staticmethod
    def of(msg: P.Message) -> Mark | None:
        msgid, stamp = msg.tags.get("msgid"), msg.tags.get("time")
        return Mark(msgid, stamp) if msgid or stamp else None


@dataclass
class RoomState:
    """What the session knows of one room.  Guarded by the session's ``_lock``.

    The history fields say what of the room's history is shown: ``newest`` and ``oldest``
    mark the two ends (a fetch after a reconnect starts at the first, a page of older lines
    ends at the second), ``seen`` every line shown.  ``held`` collects the room's live
    events while a LATEST/MISSED fetch is on its way (None when none is); ``synced`` says
    this connection has caught up, so live lines move ``newest`` on.
    """

    name: str  # as the session was asked to join it
    members: Members
    topic: str = ""
    joined: bool = False  # we are in it (our JOIN came back, no PART/KICK since)
    user_join: bool = False  # the user asked to join it (new, or again after a kick)
    ever_joined: bool = False  # joined once in this session: a later join is a return
    leaving: bool = False  # we sent PART: forget the room when it comes back
    removed: bool = False  # kicked: kept to join again, but only when the user asks
    seen: Seen = field(default_factory=Seen)
    newest: Mark | None = None
    oldest: Mark | None = None
    start: bool = False  # the start of the conversation has been fetched: nothing older
    fetched: bool = False  # history has been fetched once (later fetches are MISSED)
    synced: bool = False
    held: list[tuple[Event, Mark | None]] | None = None
    older_pending: bool = False  # a page of older lines is on its way


@dataclass
class _Request:
    """A CHATHISTORY request on its way (guarded by the session's ``_lock``)."""

    room: str  # folded
    kind: HistoryKind
    limit: int
    label: str | None  # its labeled-response label
    page: int = 1  # MISSED: which page of the catch-up this is
    abandoned: bool = False  # gave up waiting (the room went live); the reply is dropped
    replay: bool = False  # not asked for: a server's replay on join


@dataclass
class _Batch:
    """An open batch (network thread): a ``chathistory`` or ``draft/multiline`` one keeps
    its lines until it ends."""

    kind: str
    label: str | None
    target: str = ""
    request: _Request | None = None
    lines: list[P.Message] = field(default_factory=list)
    opener: P.Message | None = None  # the BATCH +ref line (a multiline one's tags are on it)
    parent: str | None = None  # the reference of the batch this one is inside


class _Outcome(enum.Enum):
    FATAL = "fatal"  # told the user (LoginFailed); do not retry
    RETRY = "retry"  # did not get in, or not for long: try again after a longer wait
    DROPPED = "dropped"  # was in the room a good while: start the backoff afresh


class _Failure(Exception):
    """Why this connection could not get (or stay) in: raised into ``_Conn.failure``."""

    def __init__(self, kind: LoginKind, message: str, retry: bool = False, *,
                 fingerprint: str = "", pinned: str = "", wait: int = 0,
                 tls_port: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry = retry  # worth another connection (a timeout, not a refusal)
        self.fingerprint = fingerprint  # the certificate the server showed (TLS kinds)
        self.pinned = pinned  # the certificate we had pinned (CERT_CHANGED)
        self.wait = wait  # THROTTLED: seconds the server wants us to wait
        self.tls_port = tls_port  # INSECURE: where the server offers TLS


class _Cancelled(OSError):
    """quit() was called while connecting."""


class _Conn:
    """What one connection has seen so far (the network thread's private state)."""

    def __init__(self, sock: socket.socket, first: bool, stream: TLSStream | None) -> None:
        self.sock = sock
        self.first = first
        self.stream = stream  # the TLS session over ``sock``; None in clear
        self.registered = False
        self.join_sent = False
        self.join_deadline: float | None = None  # set while our automatic JOINs are pending
        self.join_waiting: set[str] = set()  # folded rooms of those JOINs with no answer yet
        self.listing: list[RoomInfo] | None = None  # a LIST reply so far (None: none asked)
        self.list_cut = False  # the LIST reply so far had more rooms than LIST_MAX
        self.joined_at: float | None = None  # monotonic time our JOIN came back
        self.error: str | None = None  # text of the server's ERROR line
        self.failure: _Failure | None = None
        self.names: dict[str, dict[str, tuple[str, str]]] = {}  # folded room -> NAMES so far
        self.offered: set[str] = set()  # what CAP LS listed so far
        self.cap_asked = False  # CAP REQ (or END) sent after the last LS line
        self.cap_ended = False
        self.batches: dict[str, _Batch] = {}  # open batches by reference
        self.sync_due: set[str] = set()  # folded rooms to fetch history for at their 366
        self.sync_by: dict[str, float] = {}  # folded room -> when to stop waiting for it
        self.cap_values: dict[str, str] = {}  # CAP 302 values: "sasl" -> "PLAIN", ...
        self.cap_retried = False  # after a NAK, asked again for the account caps alone
        # Accounts: "" (guest, or not yet), "sasl" (AUTHENTICATE sent), "register"
        # (REGISTER sent), "done" (logged in: CAP END sent).
        self.auth = ""
        self.account: str | None = None  # what 900 (or REGISTER SUCCESS) says we are
        self.name_tries = 0  # fallback names tried while logging in (ours in use)
        self.mechanisms: str | None = None  # 908: the SASL mechanisms the server has
        self.whois: dict[str, list[str]] = {}  # folded nick -> facts of a WHOIS so far
        self.who: dict[str, list[tuple[str, bool]]] = {}  # folded room -> WHO so far
        self.bans: dict[str, list[tuple[str, str]]] = {}  # folded room -> ban list so far
        self.away_shown: dict[str, str] = {}  # folded nick -> the away text last shown


def _nick_of(source: str | None) -> str:
    return (source or "").split("!", 1)[0]


def _from_server(source: str) -> bool:
    """Is ``source`` the server itself (no ``nick!user@host``), not a user?"""
    return "!" not in source and ("." in source or not source)


def _userhost_of(source: str | None) -> str | None:
    """'nick!user@host' -> 'user@host' (None when the source is not a full prefix)."""
    if source and "!" in source and "@" in source:
        return source.split("!", 1)[1]
    return None


def split_text(text: str, limit: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``limit`` UTF-8 bytes, at spaces where possible."""
    limit = max(limit, 4)  # one character of any size always fits
    pieces: list[str] = []
    while len(text.encode("utf-8")) > limit:
        head = P.truncate_text(text, limit) or text[0]
        cut = head.rfind(" ")
        if cut > len(head) // 2:
            head = head[:cut + 1]
        pieces.append(head)
        text = text[len(head):]
    if text or not pieces:
        pieces.append(text)
    return pieces


def message_pieces(text: str, budget: int) -> list[str]:
    """``text`` as the messages it goes out as: one per non-blank line, each line cut into
    pieces of at most ``budget`` bytes (IRC has no multi-line message)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [piece for ln in lines if ln.strip()
            for piece in split_text(ln.replace("\x00", ""), budget)]


@dataclass(frozen=True)
class MultilineLimits:
    """What a server's ``draft/multiline`` value allows in one batch."""

    max_bytes: int
    max_lines: int | None

    @staticmethod
    def parse(value: str) -> MultilineLimits | None:
        """``max-bytes=4096,max-lines=100`` (max-bytes is required); None if unusable."""
        keys = dict(token.partition("=")[::2] for token in value.split(",") if token)
        try:
            max_bytes = int(keys.get("max-bytes", ""))
            lines = keys.get("max-lines")
            max_lines = int(lines) if lines else None
        except ValueError:
            return None
        if max_bytes < 1 or (max_lines is not None and max_lines < 1):
            return None
        return MultilineLimits(max_bytes, max_lines)


Batch = list[tuple[str, bool]]  # one multiline message: (piece, joined to the one before)


def multiline_batches(text: str, budget: int, limits: MultilineLimits) -> list[Batch]:
    """``text`` as multiline messages within ``limits``: its lines, blank lines kept
    inside, a long line cut into pieces of ``budget`` bytes joined by the concat tag.  A
    text too big for one batch goes as several, cut between lines where possible."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    batches: list[Batch] = []
    current: Batch = []
    size = 0
    for line in lines:
        pieces = split_text(line, budget) if line else [""]
        for i, piece in enumerate(pieces):
            concat = i > 0
            cost = len(piece.encode("utf-8")) + (0 if concat or not current else 1)
            full = (size + cost > limits.max_bytes
                    or (limits.max_lines is not None and len(current) >= limits.max_lines))
            if current and full:
                batches.append(current)
                current, size, concat = [], 0, False
                cost = len(piece.encode("utf-8"))
            current.append((piece, concat))
            size += cost
    if current:
        batches.append(current)
    # A batch of blank lines alone is not allowed; nor a blank line at either end.
    out = []
    for batch in batches:
        while batch and not batch[0][0].strip():
            batch.pop(0)
        while batch and not batch[-1][0].strip():
            batch.pop()
        if batch:
            batch[0] = (batch[0][0], False)
            out.append(batch)
    return out


def joined(batch: Batch) -> str:
    """What a multiline message says: its pieces joined (a new line between lines)."""
    return "".join(("" if concat or i == 0 else "\n") + piece
                   for i, (piece, concat) in enumerate(batch))


def _combine(batch: _Batch) -> P.Message | None:
    """A ``draft/multiline`` batch as the one PRIVMSG (or NOTICE) it stands for: its lines
    joined by new lines (directly, for one with the concat tag), with the batch's tags
    (msgid, time, account) and source.  None for a malformed batch."""
    lines = [m for m in batch.lines if m.command in ("PRIVMSG", "NOTICE") and len(m.params) >= 2]
    if not lines or batch.opener is None:
        return None
    command = lines[0].command
    text = ""
    for i, m in enumerate(lines):
        if m.command != command:
            return None
        text += ("" if i == 0 or CONCAT_TAG in m.tags else "\n") + m.params[1]
    tags = {k: v for k, v in batch.opener.tags.items() if k != "batch"}
    for k, v in lines[0].tags.items():  # a server may put them on the first line instead
        if k not in ("batch", CONCAT_TAG):
            tags.setdefault(k, v)
    target = batch.target or lines[0].params[0]
    return P.Message(command, (target, text), batch.opener.source or lines[0].source, tags)


def parse_incoming(raw: bytes) -> P.Message | None:
    """Parse one line from the server leniently: bad UTF-8 becomes U+FFFD, long lines pass.

    A server is more trusted than a client: a line we drop (a QUIT with a Latin-1 reason, a
    long NAMES line) would leave the member list wrong for good.  None for lines with no
    command at all.
    """
    text = P.strip_bad(raw.decode("utf-8", "replace").rstrip("\r\n"))
    try:
        return P.parse(text, limits=False)
    except ProtocolError:
        return None


def describe_connect_error(exc: OSError, host: str, port: int) -> tuple[LoginKind, str]:
    """Turn a failed connect into words and what to do about it."""
    where = f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        return LoginKind.UNREACHABLE, (f"Cannot find the server “{host}”. Check the host name "
                                       f"(for this computer use 127.0.0.1).")
    if isinstance(exc, ConnectionRefusedError):
        return LoginKind.REFUSED, (f"Nothing is answering at {where}: the connection was "
                                   f"refused. Is the server running? Check the host and port.")
    if isinstance(exc, TimeoutError):
        return LoginKind.UNREACHABLE, (f"No answer from {where}. Check the host and port, and "
                                       f"that your network can reach the server.")
    if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL):
        return LoginKind.UNREACHABLE, (f"Cannot reach {where} ({exc.strerror}). Check the "
                                       f"host name and your network.")
    return LoginKind.UNREACHABLE, (f"Cannot connect to {where}: {exc.strerror or exc}. "
                                   f"Check the host and port.")


_NO_ACCOUNTS = ("This server has no accounts: join as a guest (choose “Guest”).")
_NO_PLAIN = ("This server does not accept passwords the way this program sends them, so you "
             "cannot log in to it here: join as a guest.")
_REGISTRATION_CLOSED = ("Registration is closed on this server: ask its administrator for an "
                        "account, or join as a guest.")
_WRONG_PASSWORD = "Wrong name or password. Check both and try again."
_PASSWORD_SIZE = (f"The password must be 1 to {PASSWORD_MAX} bytes (most characters take one; "
                  f"accented letters and emoji two to four).")


def _throttled(seconds: int) -> str:
    return f"Too many tries: wait {seconds} s, then try again."


def _friendly_error(code: str, params: tuple[str, ...]) -> str:
    """An error numeric (``params`` without our nick) in words."""
    text = params[-1] if params else ""
    arg = params[0] if len(params) > 1 else ""
    if code == P.ERR_NOSUCHNICK:
        return f"No one called “{arg}” is online."
    if code == P.ERR_CANNOTSENDTOCHAN:
        return f"You cannot send to {arg} right now ({text})."
    if code == P.ERR_CHANOPRIVSNEEDED:
        return f"Only room operators can do that in {arg}."
    if code == P.ERR_NICKNAMEINUSE:
        return f"The name “{arg}” is already taken; keep your name or pick another."
    if code == ERR_UNAVAILRESOURCE:
        return f"The name “{arg}” is not available right now; keep your name or pick another."
    if code == P.ERR_ERRONEUSNICKNAME:
        return f"The server does not accept the name “{arg}”."
    if code == P.ERR_NOTONCHANNEL:
        return f"You are not in {arg}."
    if code in (P.ERR_BANNEDFROMCHAN, P.ERR_INVITEONLYCHAN, P.ERR_BADCHANNELKEY,
                P.ERR_CHANNELISFULL):
        return f"You could not join {arg}: {wording.join_refused(code, arg, text)}."
    if arg:
        return f"{arg}: {text}"
    return text or f"Error {code}"


RPL_WHOISOPERATOR, RPL_WHOISSECURE, RPL_WHOISACTUALLY = "313", "671", "338"
WHOIS_PARTS = (P.RPL_WHOISUSER, P.RPL_WHOISSERVER, P.RPL_WHOISIDLE, P.RPL_WHOISCHANNELS,
               P.RPL_WHOISACCOUNT, RPL_WHOISOPERATOR, RPL_WHOISSECURE, RPL_WHOISACTUALLY)
_RANKS = {"~": "owner", "&": "administrator", "@": "operator", "%": "half-operator",
          "+": "voice"}


class ChatSession:
    """One user in one room on one server: connection, registration, events, sending.

    Create it, call :meth:`start`, then read events from :attr:`events` (one thread
    reads them: the Tk thread in the app).  Every public method and property may be called
    from any thread; each takes ``_lock`` briefly itself, so callers hold no lock.  The ``send_*``
    methods return True when the line was queued and False when it cannot be sent now
    (not in the room, or too much already waiting); they never block.  :meth:`quit`
    says goodbye; :meth:`close` also waits for the threads to end (:func:`close_sessions`
    does that for several sessions at once).

    With ``account`` (:class:`Credentials`) the session logs in to that account (SASL
    PLAIN), or first creates it (REGISTER), while registering, before CAP END; a
    :class:`~chatroom.events.LoggedIn` event says it worked, a
    :class:`~chatroom.events.LoginFailed` of an account kind why not (WRONG_PASSWORD,
    THROTTLED with ``wait``, NAME_REGISTERED, REGISTRATION_CLOSED, INSECURE,
    BAD_ACCOUNT_PASSWORD, NO_ACCOUNTS...).  ``nick`` should be the account's name.  Every
    reconnect logs in again with the same credentials, which the session keeps in memory
    until it ends, and nowhere else: no log line, repr or exception holds the password.
    As a guest on a name that is registered, a :class:`~chatroom.events.RenameWarning`
    comes with the server's deadline, and a forced :class:`~chatroom.events.UserRenamed`
    when it passes.

    With ``tls`` the connection is encrypted: the certificate is checked against the
    system's certificate authorities (and those in ``cafile``), unless ``pins`` holds a
    fingerprint for this ``host:port``, in which case that certificate and no other is
    accepted, on every connection including reconnects.  A certificate that cannot be
    checked and is not pinned, or that differs from the pin, ends the attempt with a
    :class:`~chatroom.events.LoginFailed` that carries its fingerprint (UNTRUSTED_CERT,
    CERT_CHANGED); the session never waits for the user's answer.

    History (a server with draft/chathistory): a History event follows each join, before
    the room's live events; :meth:`load_older` asks for the page before it;
    ``history_page`` is the page size (capped by the server's CHATHISTORY limit) and
    ``history_timeout`` how long the room's live lines wait for a fetch before they go on
    without it.
    """

    STABLE_AFTER = 30.0  # seconds in the room after which a drop restarts the backoff
    NAME_TRIES = 3  # reconnect attempts that find our name taken before we give up
    CTCP_BURST = 3  # CTCP replies we send at once; then one per CTCP_EVERY seconds
    CTCP_EVERY = 2.0

    def __init__(self, host: str, port: int, nick: str, room: str = DEFAULT_ROOM,
                 password: str | None = None, *, reconnect: bool = True,
                 backoff: Backoff | None = None, connect_timeout: float = 8.0,
                 register_timeout: float = 20.0, join_timeout: float = 20.0,
                 keepalive: float = 60.0, username: str | None = None,
                 realname: str = "Chat desktop client",
                 max_events: int = 20000, max_outgoing: int = 1000, tls: bool = False,
                 cafile: str | None = None, pins: PinStore | None = None,
                 history_page: int = HISTORY_PAGE, history_timeout: float = 20.0,
                 account: Credentials | None = None, send_burst: int = SEND_BURST,
                 send_rate: float = SEND_RATE, rooms: Iterable[str] = ()) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.cafile = cafile
        self.pins = pins  # None: nothing is pinned, and nothing can be
        self._contexts: tuple[ssl.SSLContext, ssl.SSLContext] | None = None  # network thread
        self.room = room
        self.password = password or None  # the server's password (PASS), not an account's
        # The account to log in to (or create) on every connection; None: a guest.  Dropped
        # when the session ends (the network thread's ``finally``).
        self._account = account
        self.account_name = account.name if account is not None else None
        self.reconnect = reconnect
        self.backoff = backoff or Backoff()
        self.connect_timeout = connect_timeout
        self.register_timeout = register_timeout
        self.join_timeout = join_timeout
        self.keepalive = keepalive
        self.history_page = history_page
        self.history_timeout = history_timeout  # then the room goes live without history
        self.username = P.sanitize_user(username or nick, P.USERLEN - 1) or "chat"
        self.realname = realname
        self.events: queue.Queue[Event] = queue.Queue(maxsize=max_events)
        # Items of lines for the sender: (connection number, the lines, whom they are to).
        self._out: queue.Queue[tuple[int, tuple[bytes, ...], str] | None] = queue.Queue(
            maxsize=max_outgoing)
        self.send_burst = send_burst
        self.send_rate = send_rate
        self._lock = threading.Lock()  # guards the fields below
        self._nick = nick
        self._state = "idle"
        self._sock: socket.socket | None = None
        self._stream: TLSStream | None = None  # the TLS session over _sock, if any
        self._gen = 0  # connection number; queued lines of an older connection are dropped
        self._info = ServerInfo()  # replaced (never changed) as 005 lines arrive
        self._home = RoomState(room, Members(self._info))  # the room we were made for
        # Folded name -> state, in the order joined: the rooms we are in or want to be in
        # (joined again on every reconnect).  Copy on write, under ``_lock``: the network
        # thread reads and iterates it without the lock, while join() and part() on the
        # caller's thread add and remove rooms.
        self._rooms = {self._info.fold(room): self._home}
        for extra in rooms:
            if P.valid_channel(extra) and self._info.fold(extra) not in self._rooms:
                self._rooms[self._info.fold(extra)] = RoomState(extra, Members(self._info))
        self._userhost: str | None = None  # our "user@host" as the server relays it
        self._caps: frozenset[str] = frozenset()  # what this connection's server granted
        self._multiline: MultilineLimits | None = None  # draft/multiline granted: its limits
        self._logged_in_as: str | None = None  # the account this connection is logged in to
        self._watch: dict[str, str] = {}  # folded nick -> nick: the notify list (MONITOR)
        # Folded nick -> "user@host" as the server last showed it (a server ban needs the
        # host); the newest HOSTS_KEPT only.
        self._hosts: dict[str, str] = {}
        self._oper = False  # this connection is a server operator
        self._batches = 0  # batch references given out (m1, m2, ...)
        self._requests: list[_Request] = []  # CHATHISTORY requests on their way, in order
        self._labels = 0  # labels given out (h1, h2, ...)
        self._private_seen = Seen()  # msgids of private messages shown (echo to self: 2)
        self._wlock = threading.Lock()  # one writer on the socket at a time
        self._stop = threading.Event()
        self._ever_registered = False
        self._ever_joined = False
        self._motd_shown = False
        self._started = False
        self._taken_tries = 0
        self._asked_nick: str | None = None  # the name change the user asked for, if any
        self._renamed_to: str | None = None  # forced rename: the server's notice follows
        # Network thread only: a flood of CTCP requests must not make us flood the server.
        self._ctcp = P.TokenBucket(self.CTCP_BURST, 1.0 / self.CTCP_EVERY, time.monotonic())
        self._net = threading.Thread(target=self._run, name=f"chat-net-{nick}", daemon=True)
        self._sender = threading.Thread(target=self._send_loop, name=f"chat-send-{nick}",
                                        daemon=True)

    # --- state for callers ----------------------------------------------------------

    @property
    def nick(self) -> str:
        with self._lock:
            return self._nick

    @property
    def state(self) -> str:
        """idle, connecting, registering, joining, joined, reconnecting or closed."""
        with self._lock:
            return self._state

    @property
    def in_room(self) -> bool:
        """Are we in the room the session was made for?  (:meth:`is_in` for any room.)"""
        return self.is_in(self.room)

    @property
    def members(self) -> tuple[str, ...]:
        """The home room's members as shown (highest prefix first: ``@``, ``+``, ...)."""
        return self.members_of(self.room)

    @property
    def count(self) -> int:
        return len(self.members_of(self.room))

    @property
    def rooms(self) -> tuple[str, ...]:
        """The rooms we are in or are joining (and join again after a reconnect), in the
        order they were joined; not the ones being left."""
        with self._lock:
            return tuple(r.name for r in self._rooms.values()
                         if not r.leaving and not r.removed)

    def _state_of(self, room: str) -> RoomState | None:
        """Any thread; caller holds ``_lock``."""
        return self._rooms.get(self._info.fold(room))

    def is_in(self, room: str) -> bool:
        """Are we in ``room`` now (our JOIN came back, no PART or KICK since)?"""
        with self._lock:
            state = self._state_of(room)
            return state is not None and state.joined

    def members_of(self, room: str) -> tuple[str, ...]:
        """``room``'s members as shown (empty when we are not in it)."""
        with self._lock:
            state = self._state_of(room)
            return state.members.snapshot() if state is not None else ()

    def topic_of(self, room: str) -> str:
        with self._lock:
            state = self._state_of(room)
            return state.topic if state is not None else ""

    @property
    def server_info(self) -> ServerInfo:
        """What this connection's server announced (defaults before its 005 lines)."""
        return self._info

    @property
    def nicklen(self) -> int:
        return self._info.nicklen or P.NICKLEN

    @property
    def topiclen(self) -> int | None:
        """The longest topic (in bytes) the server keeps, if it said."""
        return self._info.topiclen

    @property
    def alive(self) -> bool:
        return self._net.is_alive() or self._sender.is_alive()

    def nick_problem(self, nick: str) -> str | None:
        """Why ``nick`` will not do as a name on this server, in words (None if it will)."""
        return P.nick_problem(nick, self.nicklen)

    @property
    def caps(self) -> frozenset[str]:
        """The IRCv3 capabilities this connection has (empty before and between them)."""
        with self._lock:
            return self._caps

    @property
    def echoes(self) -> bool:
        """Does the server send our own lines back (echo-message)?  Then they arrive as
        Echo events, and the caller must not show them itself."""
        return "echo-message" in self.caps

    @property
    def has_history(self) -> bool:
        """Does this connection fetch the room's history from the server?"""
        return HISTORY_CAPS <= self.caps

    @property
    def can_load_older(self) -> bool:
        """Would :meth:`load_older` ask for something now (in the home room)?"""
        return self.older_available(self.room)

    def older_available(self, room: str) -> bool:
        """Would :meth:`load_older` of ``room`` ask for something now?"""
        with self._lock:
            state = self._state_of(room)
            return state is not None and self._older_ref(state) is not None

    def _older_ref(self, room: RoomState) -> str | None:
        """The reference a page of ``room``'s older lines ends at, if one may be asked for
        now.  Caller holds ``_lock``."""
        if (not HISTORY_CAPS <= self._caps or self._stop.is_set() or not room.joined
                or not room.synced or room.start or room.older_pending
                or room.oldest is None):
            return None
        return self._info.reference(room.oldest.msgid, room.oldest.time)

    def load_older(self, room: str | None = None) -> bool:
        """Ask for the page of ``room``'s history (the home room's by default) just before
        the oldest line shown; a History event (OLDER) follows.  False when there is
        nothing to ask for: no history on this server, the start is shown already, or a
        page is on its way."""
        with self._lock:
            state = self._state_of(room or self.room)
            ref = self._older_ref(state) if state is not None else None
            if state is None or ref is None:
                return False
            state.older_pending = True
        req, line = self._history_request(state, HistoryKind.OLDER, "BEFORE", ref)
        if line is not None and self._queue_bytes(line):
            return True
        with self._lock:
            state.older_pending = False
            if req in self._requests:
                self._requests.remove(req)
        return False

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Connect, register and join in the background; progress arrives as events."""
        self._started = True
        self._net.start()
        self._sender.start()

    def quit(self, reason: str = QUIT_REASON) -> None:
        """Leave the server (QUIT) and stop reconnecting.  Returns at once.

        Whatever the network thread is doing stops soon: a pending connect is aborted
        (the socket is shut down), a registration in progress is cut off, a wait between
        attempts ends.
        """
        if self._stop.is_set():
            return
        self._stop.set()
        with self._lock:
            registered = self._state in ("joining", "joined")
        if not (registered and self._queue_line("QUIT", P.truncate_text(clean_text(reason),
                                                                         300))):
            self._shutdown_socket()

    def leave(self, reason: str = LEAVE_REASON) -> None:
        """Leave every room (PART, so room-mates see you leave) and then the server."""
        if not self._stop.is_set():
            with self._lock:
                joined = [r.name for r in self._rooms.values() if r.joined]
            why = P.truncate_text(clean_text(reason), 300)
            for names in self._join_chunks(joined, len(why.encode()) + 8):
                self._queue_line("PART", names, why)
        self.quit(reason)

    def close(self, timeout: float = 2.0) -> None:
        """Quit if not done yet, wait for the server to close, then end both threads."""
        close_sessions([self], timeout)

    # --- sending (any thread; never blocks) ------------------------------------------

    def send_message(self, text: str, room: str | None = None) -> bool:
        """Say ``text`` in ``room`` (the home room by default).  Long text goes as several
        lines; newlines split it."""
        return self._say(room or self.room, text, action=False)

    def send_action(self, text: str, target: str | None = None) -> bool:
        """``/me text``: a CTCP ACTION to ``target``, a room we are in (the home room by
        default) or a name."""
        target = target or self.room
        if not (P.is_channel(target) or P.valid_nick(target, max(self.nicklen, P.NICKLEN))):
            return False
        return self._say(target, text, action=True)

    def send_private(self, nick: str, text: str) -> bool:
        """A private message to ``nick``."""
        if not P.valid_nick(nick, max(self.nicklen, P.NICKLEN)):
            return False
        return self._say(nick, text, action=False)

    def join(self, room: str) -> bool:
        """Join ``room`` (created by the server if nobody is in it): a Joined event follows,
        or a Left with ``refused`` and the reason.  The room is joined again after every
        reconnect until :meth:`part`.  False when not connected, or ``room`` is not a room
        name (:meth:`room_problem` says why)."""
        if self.room_problem(room) is not None:
            return False
        with self._lock:
            if self._state not in ("joining", "joined") or self._stop.is_set():
                return False
            key = self._info.fold(room)
            state = self._rooms.get(key)
            if state is not None and state.joined and not state.leaving:
                return True  # in it already
            if state is None or state.leaving:
                state = RoomState(room, Members(self._info))
                rooms = dict(self._rooms)
                rooms[key] = state
                self._rooms = rooms
            state.user_join = True
            state.removed = False
        return self._queue_line("JOIN", state.name)

    def part(self, room: str, reason: str = LEAVE_REASON) -> bool:
        """Leave ``room`` (PART) and stop joining it after a reconnect: a Left event with
        ``parted`` follows.  False when we keep no such room."""
        with self._lock:
            state = self._state_of(room)
            if state is None or state.leaving:
                return False
            state.leaving = True
            joined = state.joined and self._sock is not None
            if not joined:  # nothing to tell the server: forget it now
                self._forget_room(state)
        if not joined:
            self._emit(Left(state.name, reason, parted=True))
            return True
        if not self._queue_line("PART", state.name, P.truncate_text(clean_text(reason), 300)):
            with self._lock:
                state.leaving = False
            return False
        return True

    def _forget_room(self, state: RoomState) -> None:
        """Stop keeping ``state``'s room.  Caller holds ``_lock``."""
        self._rooms = {k: r for k, r in self._rooms.items() if r is not state}

    def room_problem(self, room: str) -> str | None:
        """Why ``room`` is not a room name on this server, in words (None if it is)."""
        prefixes = self._info.chantypes
        limit = self._info.channellen or P.CHANNELLEN
        if not prefixes:
            return "this server has no rooms"
        if not room or room[0] not in prefixes:
            return f"a room's name starts with {' or '.join(prefixes)}, like #chat"
        if len(room) < 2:
            return "a room's name needs more than its first character"
        if len(room) > limit:
            return f"a room's name has at most {limit} characters here"
        if _ROOM_BAD.search(room):
            return "a room's name has no spaces, commas or control characters"
        return None

    def set_member_mode(self, room: str, change: str, nick: str) -> bool:
        """``MODE room +o nick`` and the like (``change`` is one sign and one letter of
        the server's member modes: o, v...); a Notice in words (or a ServerError)
        follows."""
        if (len(change) != 2 or change[0] not in "+-"
                or change[1] not in self._info.prefix_modes or not P.valid_nick(nick, 64)):
            return False
        return self._in_room_now(room) and self._queue_line("MODE", room, change, nick)

    def kick(self, room: str, nick: str, reason: str = "") -> bool:
        """Remove ``nick`` from ``room`` (a room operator's right)."""
        if not P.valid_nick(nick, 64):
            return False
        why = P.truncate_text(P.strip_bad(clean_text(reason)), 300) or "Removed"
        return self._in_room_now(room) and self._queue_line("KICK", room, nick, why)

    def ban(self, room: str, nick: str) -> bool:
        """Ban ``nick`` from ``room`` (the mask ``nick!*@*``: whoever takes that name)."""
        if not P.valid_nick(nick, 64):
            return False
        return self._in_room_now(room) and self._queue_line("MODE", room, "+b", f"{nick}!*@*")

    def watch(self, nick: str) -> bool:
        """Put ``nick`` on the notify list: a Presence event says when they come online
        or go (MONITOR; kept for every reconnect).  False for a name that can't be one."""
        if not P.valid_nick(nick, max(self.nicklen, P.NICKLEN)):
            return False
        with self._lock:
            self._watch[self._info.fold(nick)] = nick
        if self._connected():
            self._queue_line("MONITOR", "+", nick)
        return True

    def unwatch(self, nick: str) -> bool:
        with self._lock:
            gone = self._watch.pop(self._info.fold(nick), None)
        if gone is not None and self._connected():
            self._queue_line("MONITOR", "-", gone)
        return gone is not None

    @property
    def watching(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._watch.values())

    @property
    def is_oper(self) -> bool:
        with self._lock:
            return self._oper

    def oper(self, name: str, password: str) -> bool:
        """Ask to be a server operator (OPER); an OperChanged event (or a ServerError)
        follows.  The password goes on the wire only, never in a log."""
        if not name or " " in name or not password or any(c in password for c in "\r\n\0"):
            return False
        try:  # the password last, as trailing text: it may hold spaces
            line = P.format_line(None, "OPER", name, password, trailing=True)
        except (ProtocolError, UnicodeError):
            return False
        return self._connected() and self._queue_bytes(line)

    def mark_read(self, target: str, when: float) -> bool:
        """Tell the server (so the user's other devices) that ``target`` is read up to the
        line of server time ``when`` (draft/read-marker).  False without the cap."""
        if READ_MARKER_CAP not in self.caps or when <= 0:
            return False
        return self._queue_line("MARKREAD", target, f"timestamp={_stamp(when)}")

    def ask_read_marker(self, target: str) -> bool:
        """Ask where ``target`` (a person: rooms come by themselves on join) is read to."""
        return READ_MARKER_CAP in self.caps and self._queue_line("MARKREAD", target)

    def request_bans(self, room: str) -> bool:
        """Ask for ``room``'s ban list; a BanList event follows."""
        return self._in_room_now(room) and self._queue_line("MODE", room, "+b")

    def unban(self, room: str, mask: str) -> bool:
        if not mask or " " in mask:
            return False
        return self._in_room_now(room) and self._queue_line("MODE", room, "-b", mask)

    def host_of(self, nick: str) -> str | None:
        """``user@host`` of ``nick`` as the server last showed it, if it did."""
        with self._lock:
            return self._hosts.get(self._info.fold(nick))

    def server_ban(self, nick: str, duration: str, reason: str) -> bool:
        """Ban ``nick``'s address from the server for ``duration`` (KLINE; operators only):
        everyone connected from it is disconnected.  False when we never saw their host."""
        seen = self.host_of(nick)
        if seen is None or not re.fullmatch(r"[0-9]{1,9}[smhdw]?", duration):
            return False
        why = P.truncate_text(P.strip_bad(clean_text(reason)), 300) or "Banned"
        return self._connected() and self._queue_line(
            "KLINE", duration, f"*@{seen.split('@', 1)[-1]}", why)

    def kill(self, nick: str, reason: str) -> bool:
        """Disconnect ``nick`` from the server (operators only)."""
        why = P.truncate_text(P.strip_bad(clean_text(reason)), 300) or "Disconnected"
        return (P.valid_nick(nick, 64) and self._connected()
                and self._queue_line("KILL", nick, why))

    def list_rooms(self) -> bool:
        """Ask the server for its rooms (LIST); a RoomList event follows."""
        return self._connected() and self._queue_line("LIST")

    def _join_chunks(self, names: list[str], spare: int) -> list[str]:
        """``names`` joined by commas in as few pieces as fit in one line each, with
        ``spare`` bytes for what else the line carries."""
        budget = P.MAX_LINE - 2 - len("JOIN ") - spare
        chunks: list[str] = []
        for name in names:
            if chunks and len(chunks[-1].encode()) + 1 + len(name.encode()) <= budget:
                chunks[-1] += "," + name
            else:
                chunks.append(name)
        return chunks

    def change_nick(self, new: str) -> bool:
        """Ask for a new name; a UserRenamed event (or a ServerError) follows."""
        if not (self._connected() and P.valid_nick(new, self.nicklen)):
            return False
        with self._lock:
            self._asked_nick = new
        return self._queue_line("NICK", new)

    def set_topic(self, text: str, room: str | None = None) -> bool:
        """Set ``room``'s topic (cut to the server's TOPICLEN, as the server would)."""
        text = P.strip_bad(clean_text(text))
        room = room or self.room
        return self._in_room_now(room) and self._queue_line(
            "TOPIC", room, P.truncate_text(text, self.topiclen or P.TOPICLEN))

    def request_topic(self, room: str | None = None) -> bool:
        room = room or self.room
        return self._in_room_now(room) and self._queue_line("TOPIC", room)

    def request_names(self, room: str | None = None) -> bool:
        """Ask for ``room``'s member list again; a Names event follows."""
        room = room or self.room
        return self._in_room_now(room) and self._queue_line("NAMES", room)

    def set_away(self, text: str = "") -> bool:
        """Mark ourselves away with ``text`` (or back, when empty); AwayChanged follows."""
        text = P.strip_bad(clean_text(text)).strip()
        if not self._connected():
            return False
        if not text:
            return self._queue_line("AWAY")
        limit = self._info.awaylen or P.AWAYLEN
        return self._queue_line("AWAY", P.truncate_text(text, limit))

    def whois(self, nick: str) -> bool:
        """Ask the server about ``nick``; a Whois event (or a ServerError) follows."""
        return (self._connected() and P.valid_nick(nick, max(self.nicklen, P.NICKLEN))
                and self._queue_line("WHOIS", nick))

    def rejoin(self, room: str | None = None) -> bool:
        """Join ``room`` (the home room by default) again after being removed; a Joined
        event (or ServerError) follows.  False if we are in it."""
        room = room or self.room
        with self._lock:
            state = self._state_of(room)
            if state is not None and state.joined:
                return False
        return self.join(room)

    def _connected(self) -> bool:
        with self._lock:
            return self._state in ("joining", "joined") and not self._stop.is_set()

    def _in_room_now(self, room: str) -> bool:
        with self._lock:
            state = self._state_of(room)
            return (state is not None and state.joined and not state.leaving
                    and not self._stop.is_set())

    def _relay_budget(self, target: str, action: bool) -> int:
        """How many bytes of text fit in one PRIVMSG as the server relays it to others."""
        with self._lock:
            nick, userhost = self._nick, self._userhost
        tail = len(f" PRIVMSG {target} :".encode()) + 2
        if userhost:
            budget = P.MAX_LINE - len(f":{nick}!{userhost}".encode()) - tail
        else:
            budget = (P.MAX_LINE - _RELAY_OVERHEAD - len(nick.encode())
                      - len(target.encode()))
        if action:
            budget -= len("\x01ACTION \x01")
        return budget

    def _say(self, target: str, text: str, action: bool) -> bool:
        if not (self._in_room_now(target) if P.is_channel(target) else self._connected()):
            return False
        text = clean_text(text)
        budget = self._relay_budget(target, action)
        batches = self._batches_for(text, budget, action)
        out: list[bytes] = []
        try:
            if batches is not None:
                out = [self._batch_bytes(target, batch) for batch in batches]
            else:
                for piece in message_pieces(text, budget):
                    body = f"\x01ACTION {piece}\x01" if action else piece
                    out.append(P.format_line(None, "PRIVMSG", target, body))
        except (ProtocolError, UnicodeError):
            return False
        return bool(out) and self._queue_lines(tuple(out), target)

    def _batches_for(self, text: str, budget: int, action: bool) -> list[Batch] | None:
        """``text`` as multiline batches, when the server takes them and the text has
        more than one line (or a line too long for one message); else None."""
        limits = self.multiline
        if limits is None or action:
            return None
        batches = multiline_batches(text, budget, limits)
        if not batches or (len(batches) == 1 and len(batches[0]) == 1):
            return None  # one plain message says it
        return batches

    def _batch_bytes(self, target: str, batch: Batch) -> bytes:
        """One multiline batch as the lines that carry it (sent together: one unit)."""
        with self._lock:
            self._batches += 1
            ref = f"m{self._batches}"
        out = [P.format_line(None, "BATCH", f"+{ref}", MULTILINE_CAP, target)]
        for piece, concat in batch:
            tags = {"batch": ref, CONCAT_TAG: ""} if concat else {"batch": ref}
            out.append(P.format_line(None, "PRIVMSG", target, piece, tags=tags,
                                     trailing=True))
        out.append(P.format_line(None, "BATCH", f"-{ref}"))
        return b"".join(out)

    def file_login(self) -> tuple[str, str] | None:
        """(account, password) to upload files with (HTTP Basic, as the file host pairs it
        with SASL PLAIN), while this session is logged in; None for a guest."""
        with self._lock:
            account, name = self._account, self._logged_in_as
        if account is None or name is None:
            return None
        return name, account.password

    @property
    def multiline(self) -> MultilineLimits | None:
        """The server's draft/multiline limits, if this connection may send batches."""
        with self._lock:
            return self._multiline

    def pieces(self, target: str, text: str, action: bool = False) -> list[str]:
        """The messages ``text`` goes out as to ``target``: with draft/multiline, one per
        batch (its lines joined by new lines); without, one per line, long lines cut where
        the server's relay would cut them.  What others will see, so a client without the
        server's echo can show exactly that."""
        text = clean_text(text)
        budget = self._relay_budget(target, action)
        batches = self._batches_for(text, budget, action)
        if batches is not None:
            return [joined(batch) for batch in batches]
        return message_pieces(text, budget)

    def line_count(self, text: str) -> int:
        """How many lines ``text`` has that say something (what a paste is counted in)."""
        return sum(1 for ln in clean_text(text).splitlines() if ln.strip())

    def _queue_line(self, command: str, *params: str) -> bool:
        try:
            data = P.format_line(None, command, *params)
        except (ProtocolError, UnicodeError):
            return False
        return self._queue_bytes(data)

    def _queue_bytes(self, data: bytes) -> bool:
        return self._queue_lines((data,), "")

    def _queue_lines(self, lines: tuple[bytes, ...], target: str) -> bool:
        """Queue ``lines`` for the sender, all or none (a paste never goes out in part)."""
        with self._lock:
            if self._sock is None or self._state not in ("joining", "joined"):
                return False
            gen = self._gen
        try:
            self._out.put_nowait((gen, lines, target))
        except queue.Full:
            return False
        return True

    def _send_loop(self) -> None:
        # Sender thread only.  Servers cut a client that sends faster than their flood
        # limit (ours after a burst of 10 and 60 more waiting, at 2 lines/s); no server
        # says its limit, so lines go out at a rate the common defaults all take.
        bucket = P.TokenBucket(self.send_burst, self.send_rate, time.monotonic())
        while True:
            item = self._out.get()
            if item is None:
                return
            gen, lines, target = item
            paced = len(lines) > self.send_burst  # shown as it goes: it takes a while
            for i, data in enumerate(lines):
                wait = bucket.take(time.monotonic())
                if wait > 0 and self._stop.wait(wait):
                    # Quitting: the goodbye (PART, QUIT) goes at once; messages still
                    # waiting for their turn would only delay it, and go unread.
                    if target:
                        break
                with self._lock:
                    sock = self._sock if gen == self._gen else None
                    stream = self._stream
                if sock is None:
                    if paced:  # the connection this paste was for is gone
                        self._emit(Sending(target, i, len(lines), gave_up=True))
                    break
                self._transmit(sock, stream, data)
                if paced:
                    self._emit(Sending(target, i + 1, len(lines)))

    def _stop_sender(self) -> None:
        while True:
            try:
                self._out.put_nowait(None)
                return
            except queue.Full:
                try:
                    self._out.get_nowait()
                except queue.Empty:
                    pass

    def _write_now(self, conn: _Conn, data: bytes) -> None:
        """Write from the network thread (registration, PONG, PING)."""
        self._transmit(conn.sock, conn.stream, data)

    def _write_tls_output(self, conn: _Conn) -> None:
        """Send what reading made OpenSSL want to send (a key update answer, an alert)."""
        if conn.stream is not None and conn.stream.has_output:
            self._transmit(conn.sock, conn.stream, b"")  # encrypt(b"") takes what is pending

    def _transmit(self, sock: socket.socket, stream: TLSStream | None, data: bytes) -> None:
        """Send ``data`` (through ``stream`` if TLS), from either thread.  Encrypting and
        sending under one lock keeps TLS records in the order of their sequence numbers,
        whichever thread writes.  A failed send shuts the socket: the network thread sees
        it and reconnects."""
        try:
            with self._wlock:
                out = stream.encrypt(data) if stream is not None else data
                if out:
                    sock.sendall(out)
        except OSError:  # ssl.SSLError too
            shutdown(sock)

    def _shutdown_socket(self) -> None:
        with self._lock:
            sock = self._sock
        if sock is not None:
            shutdown(sock)

    # --- events ---------------------------------------------------------------------

    def _emit(self, ev: Event) -> None:
        """Queue an event; if the reader of the queue has stalled, wait, unless stopping."""
        while True:
            try:
                self.events.put(ev, timeout=0.25)
                return
            except queue.Full:
                if self._stop.is_set():
                    return

    def _set_state(self, state: str) -> None:
        with self._lock:
            self._state = state

    def _fold(self, name: str) -> str:
        return self._info.fold(name)

    def _room(self, name: str) -> RoomState | None:
        """The state of room ``name`` if we keep one.  Network thread (the only one that
        replaces ``_rooms``)."""
        return self._rooms.get(self._fold(name))

    def _set_info(self, info: ServerInfo, keep_members: bool) -> None:
        """Fold and order everything by ``info`` from now on.  Caller holds ``_lock``."""
        self._info = info
        for room in self._rooms.values():
            room.members.replace(room.members.entries() if keep_members else (), info)
        self._rooms = {info.fold(r.name): r for r in self._rooms.values()}

    # --- the network thread ---------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        reason = ""
        name_in_use = False
        try:
            while not self._stop.is_set():
                if attempt:
                    delay = self.backoff.delay(attempt)
                    self._set_state("reconnecting")
                    self._emit(Reconnecting(attempt, delay, reason, name_in_use))
                    if self._stop.wait(delay):
                        break
                outcome, reason = self._connect_once()
                name_in_use = self._taken_tries > 0
                if outcome is _Outcome.FATAL or not self.reconnect:
                    break
                attempt = 1 if outcome is _Outcome.DROPPED else attempt + 1
        except Exception:  # a bug must not leave the window waiting for events forever
            log.exception("chat session %s: network thread failed", self.host)
        finally:
            self._account = None  # the password goes with the session
            self._set_state("closed")
            self._stop.set()
            self._stop_sender()
            self._emit_final(Closed())

    def _emit_final(self, ev: Event) -> None:
        try:
            self.events.put_nowait(ev)
        except queue.Full:
            pass

    def _connect_once(self) -> tuple[_Outcome, str]:
        first = not self._ever_registered
        self._set_state("connecting")
        try:
            sock = self._open()
        except OSError as exc:
            if self._stop.is_set():
                return _Outcome.FATAL, "cancelled"
            kind, text = describe_connect_error(exc, self.host, self.port)
            if first:
                # Refused: something is at that address, just not on that port.
                field = "port" if isinstance(exc, ConnectionRefusedError) else "host"
                self._emit(LoginFailed(kind, text, field=field))
                return _Outcome.FATAL, text
            return _Outcome.RETRY, text
        stream: TLSStream | None = None
        if self.tls:
            try:
                sock, stream = self._secure(sock)
            except _Failure as failure:
                if self._stop.is_set():
                    return _Outcome.FATAL, "cancelled"
                if failure.retry and not first:
                    return _Outcome.RETRY, failure.message
                self._emit(LoginFailed(failure.kind, failure.message, failure.fingerprint,
                                       failure.pinned, self.host, self.port))
                return _Outcome.FATAL, failure.message
        conn = _Conn(sock, first, stream)
        with self._lock:
            self._stream = stream
            self._state = "registering"
            self._set_info(ServerInfo(), keep_members=False)  # this server's 005 will say
            self._userhost = None
            self._caps = frozenset()  # this server's CAP ACK will say
            self._multiline = None
            self._logged_in_as = None
            self._oper = False
            self._requests.clear()  # their answers died with the old connection
            for room in self._rooms.values():
                room.user_join = False
                room.synced = room.older_pending = False
        try:
            return self._serve(conn)
        finally:
            with self._lock:
                self._sock = None
                self._stream = None
                gone = [r for r in self._rooms.values() if r.leaving]
                for room in self._rooms.values():
                    room.joined = False
                    room.topic = ""
                    room.members.replace(())
                for room in gone:  # its PART went with the connection: it is left
                    self._forget_room(room)
            for room in gone:
                self._emit(Left(room.name, LEAVE_REASON, parted=True))
            self._close_tls(conn)
            shutdown(sock)
            sock.close()

    # --- TLS (network thread) -----------------------------------------------------------

    def _tls_contexts(self) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        """(checking, not checking): made once, here, because loading the system's CA
        certificates takes a moment that the Tk thread (which made us) must not wait."""
        if self._contexts is None:
            check = ssl.create_default_context()  # system CAs, host name checked
            check.minimum_version = ssl.TLSVersion.TLSv1_2
            if self.cafile:
                try:
                    check.load_verify_locations(cafile=self.cafile)  # in addition to them
                except (OSError, ValueError) as exc:
                    raise _Failure(LoginKind.TLS_FAILED, (
                        f"Cannot use the CA certificates in {self.cafile}: "
                        f"{getattr(exc, 'strerror', None) or exc}.")) from None
            # For a pinned server (the pin is the trust) and for a look at a certificate
            # the first context refused.  OpenSSL still checks that the server holds the
            # certificate's key; only the chain to a CA and the name go unchecked.
            look = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            look.check_hostname = False
            look.verify_mode = ssl.CERT_NONE
            look.minimum_version = ssl.TLSVersion.TLSv1_2
            self._contexts = (check, look)
        return self._contexts

    def _secure(self, sock: socket.socket) -> tuple[socket.socket, TLSStream]:
        """The TLS handshake on the fresh ``sock``, and the decision whether to trust it.

        Returns the socket to go on with (a second one when the first certificate needed a
        look) and its TLS session.  Raises :class:`_Failure` (having closed its sockets)
        when the certificate is not trusted or TLS fails.  Nothing has been sent in clear.
        """
        where = f"{self.host}:{self.port}"
        try:
            check, look = self._tls_contexts()
        except _Failure:
            self._drop(sock)
            raise
        try:
            pin = self.pins.get(self.host, self.port) if self.pins is not None else None
        except PinFileError as exc:
            self._drop(sock)
            raise _Failure(LoginKind.TLS_FAILED, (
                f"The list of certificates you trust cannot be used: {exc}. Fix or remove "
                f"that file, then try again; nothing was sent to {where}.")) from None
        if pin is not None:
            # Pinned: that certificate and no other, checked on every connection.
            stream = self._handshake(sock, look)
            seen = self._fingerprint(sock, stream)
            if seen == pin:
                log.info("TLS to %s: %s, pinned certificate %s", where, stream.describe(),
                         seen)
                return sock, stream
            self._drop(sock, stream)
            log.warning("TLS to %s: certificate %s is not the pinned %s", where, seen, pin)
            raise _Failure(LoginKind.CERT_CHANGED, (
                f"The server's certificate has changed since you last connected to {where}, "
                f"so the connection was refused and nothing was sent. Someone may be "
                f"intercepting the connection, or the operator installed a new "
                f"certificate."), fingerprint=seen, pinned=pin)
        try:
            stream = self._handshake(sock, check)
        except ssl.SSLCertVerificationError as exc:
            why = str(exc.verify_message or exc.reason or "not trusted").rstrip(".")
        else:
            log.info("TLS to %s: %s, certificate verified", where, stream.describe())
            return sock, stream
        # The certificate failed the check, and OpenSSL does not hand it over after a
        # failed handshake: connect once more, without checking, only to read it.
        try:
            sock = self._open()
        except OSError as exc:
            raise _Failure(*describe_connect_error(exc, self.host, self.port),
                           retry=True) from None
        stream = self._handshake(sock, look)
        seen = self._fingerprint(sock, stream)
        self._drop(sock, stream)
        log.info("TLS to %s: certificate %s could not be verified (%s)", where, seen, why)
        raise _Failure(LoginKind.UNTRUSTED_CERT, (
            f"The server's certificate could not be checked ({why}), so nothing was sent to "
            f"{where}."), fingerprint=seen)

    def _handshake(self, sock: socket.socket, context: ssl.SSLContext) -> TLSStream:
        """Run the handshake within ``connect_timeout``; lets a failed certificate check
        through (ssl.SSLCertVerificationError), turns anything else into a _Failure."""
        where, port = f"{self.host}:{self.port}", self.port
        stream = TLSStream(context, server_side=False, server_hostname=self.host)
        try:
            handshake(sock, stream, self.connect_timeout)
            return stream
        except ssl.SSLCertVerificationError:
            self._drop(sock)
            raise
        except TimeoutError:
            failure = _Failure(LoginKind.TLS_FAILED, (
                f"{where} did not answer the encrypted (TLS) greeting. Is {port} the "
                f"server's TLS port (often {TLS_PORT})? For a plaintext port, turn off "
                f"“Use TLS”."), retry=True)
        except ssl.SSLError as exc:
            failure = _Failure(LoginKind.TLS_FAILED, (
                f"Could not set up an encrypted connection with {where} "
                f"({exc.reason or exc}). Is {port} the server's TLS port (often {TLS_PORT})? "
                f"For a plaintext port, turn off “Use TLS”."))
        except OSError as exc:
            failure = _Failure(LoginKind.TLS_FAILED, (
                f"{where} closed the connection during the encrypted (TLS) greeting "
                f"({os_reason(exc)}). Is {port} the server's TLS port (often {TLS_PORT})? "
                f"For a plaintext port, turn off “Use TLS”."), retry=True)
        self._drop(sock)
        raise failure

    def _fingerprint(self, sock: socket.socket, stream: TLSStream) -> str:
        der = stream.peer_certificate()
        if not der:
            self._drop(sock, stream)
            raise _Failure(LoginKind.TLS_FAILED, (
                f"{self.host}:{self.port} sent no certificate, so it cannot be trusted."))
        return fingerprint(der)  # already AB:CD:..., as pins are kept

    def _drop(self, sock: socket.socket, stream: TLSStream | None = None) -> None:
        """Close a socket the session gives up before using it (no other thread has it)."""
        with self._lock:
            if self._sock is sock:
                self._sock = None
        if stream is not None:
            try:
                sock.sendall(stream.close_notify())
            except OSError:
                pass
        shutdown(sock)
        sock.close()

    def _close_tls(self, conn: _Conn) -> None:
        """Say close_notify last, if the sender is not stuck in a send of its own."""
        if conn.stream is None or not self._wlock.acquire(timeout=0.5):
            return
        try:
            conn.sock.settimeout(0.5)
            conn.sock.sendall(conn.stream.close_notify())
        except OSError:
            pass
        finally:
            self._wlock.release()

    def _resolve(self) -> list[tuple[Any, ...]]:
        """getaddrinfo, bounded by ``connect_timeout`` and cut short by quit()."""
        try:  # an address needs no lookup (and no thread)
            return socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM,
                                      flags=socket.AI_NUMERICHOST)
        except socket.gaierror:
            pass
        result: list[Any] = []
        done = threading.Event()
        host, port = self.host, self.port

        def lookup() -> None:
            try:
                result.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
            except OSError as exc:
                result.append(exc)
            finally:
                done.set()

        threading.Thread(target=lookup, name=f"chat-dns-{host}", daemon=True).start()
        deadline = time.monotonic() + self.connect_timeout
        while not done.wait(0.1):
            if self._stop.is_set():
                raise _Cancelled("cancelled")
            if time.monotonic() > deadline:
                raise socket.gaierror(socket.EAI_AGAIN, "name lookup timed out")
        if isinstance(result[0], BaseException):
            raise result[0]
        return list(result[0])

    def _open(self) -> socket.socket:
        """Connect to the server; quit() aborts it at any point (the socket is in ``_sock``)."""
        if self._stop.is_set():
            raise _Cancelled("cancelled")
        error: OSError = OSError("no address")
        for family, kind, proto, _name, address in self._resolve():
            sock = socket.socket(family, kind, proto)
            with self._lock:  # quit() sets _stop, then looks at _sock under this lock
                if self._stop.is_set():
                    sock.close()
                    raise _Cancelled("cancelled")
                self._gen += 1
                self._sock = sock
            try:
                sock.settimeout(self.connect_timeout)
                sock.connect(address)
                if self._stop.is_set():
                    raise _Cancelled("cancelled")
            except OSError as exc:
                with self._lock:
                    self._sock = None
                sock.close()
                if self._stop.is_set():
                    raise _Cancelled("cancelled") from None
                error = exc
                continue
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            return sock
        raise error

    def _serve(self, conn: _Conn) -> tuple[_Outcome, str]:
        """Register, join and read until the connection ends."""
        sock = conn.sock
        # CAP LS first: a server with capabilities then waits for our CAP END before it
        # registers us; one without them ignores it (or says 421) and registers us anyway.
        hello = [P.format_line(None, "CAP", "LS", "302")]
        if self.password:
            hello.append(P.format_line(None, "PASS", self.password))
        account = self._account
        # Logging in, the name is the account's, even if a reconnect gave us another.
        hello.append(P.format_line(None, "NICK", account.name if account else self.nick))
        hello.append(P.format_line(None, "USER", self.username, "0", "*", self.realname))
        self._write_now(conn, b"".join(hello))
        splitter = P.LineSplitter(_MAX_INCOMING)
        register_by = time.monotonic() + self.register_timeout
        heard = time.monotonic()  # when the server last sent anything
        ping_sent: float | None = None
        reason = ""
        if conn.stream is not None:
            # Records that came in with the handshake's last flight are in the stream
            # already; no recv() would bring them out until the server sent more.
            try:
                self._take_lines(conn, splitter, conn.stream.feed(b""))
            except (TLSClosed, ssl.SSLError) as exc:
                reason = conn.error or os_reason(exc)
                return self._finish(conn, reason)
        while conn.failure is None:
            now = time.monotonic()
            if not conn.registered:
                due = register_by
            else:
                due = (ping_sent if ping_sent is not None else heard) + self.keepalive
                if conn.join_deadline is not None:
                    due = min(due, conn.join_deadline)
                if conn.sync_by:
                    due = min(due, min(conn.sync_by.values()))
            data: bytes | None = None
            if due > now:
                sock.settimeout(due - now)
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    data = None
                except OSError as exc:
                    reason = conn.error or os_reason(exc)
                    break
            if data is None:  # a deadline passed
                now = time.monotonic()
                self._history_overdue(conn, now)
                if not conn.registered:
                    conn.failure = _Failure(LoginKind.UNREACHABLE, (
                        f"{self.host}:{self.port} accepted the connection but did not answer "
                        f"as a chat server. Check the port."))
                elif conn.join_deadline is not None and now >= conn.join_deadline:
                    self._join_overdue(conn)
                elif ping_sent is not None and now >= ping_sent + self.keepalive:
                    reason = f"No answer from the server for {int(2 * self.keepalive)} seconds"
                    break
                elif ping_sent is None and now >= heard + self.keepalive:
                    ping_sent = now
                    self._write_now(conn, P.format_line(None, "PING", "keepalive"))
                continue
            if not data:
                reason = conn.error or "The server closed the connection"
                break
            heard = time.monotonic()
            ping_sent = None
            if conn.stream is not None:
                try:
                    data = conn.stream.feed(data)  # may be b"": half a TLS record so far
                except TLSClosed:
                    reason = conn.error or "The server closed the connection"
                    break
                except ssl.SSLError as exc:
                    reason = conn.error or os_reason(exc)
                    break
                self._write_tls_output(conn)
            self._take_lines(conn, splitter, data)
        return self._finish(conn, reason)

    def _take_lines(self, conn: _Conn, splitter: P.LineSplitter, data: bytes) -> None:
        for raw in splitter.feed(data):
            if raw is P.TOO_LONG:
                continue
            assert isinstance(raw, bytes)
            msg = parse_incoming(raw)
            if msg is not None:
                self._dispatch(conn, msg)
            if conn.failure is not None:
                break

    def _finish(self, conn: _Conn, reason: str) -> tuple[_Outcome, str]:
        for room in list(self._rooms.values()):  # live lines held for a fetch still show
            if room.held is not None:
                self._release(conn, room)
        stopping = self._stop.is_set()
        if not conn.registered:
            failure = conn.failure
            if failure is None:
                text = conn.error or reason or "The server closed the connection"
                failure = _Failure(LoginKind.REFUSED, f"The server turned us away: {text}.")
            # THROTTLED, reconnecting: someone else's failed tries on our account; a
            # throttled try does not count as one, so trying again does no harm.
            retryable = failure.kind in (LoginKind.NICK_TAKEN, LoginKind.REFUSED,
                                         LoginKind.UNREACHABLE, LoginKind.THROTTLED)
            if stopping:
                return _Outcome.FATAL, failure.message
            if conn.first or not retryable:
                self._emit(self._failed(failure))
                return _Outcome.FATAL, failure.message
            if failure.kind is LoginKind.NICK_TAKEN:
                return self._name_taken_again()
            return _Outcome.RETRY, failure.message
        failure = conn.failure
        if failure is not None:  # registered, but the room did not let us in
            self._write_now(conn, P.format_line(None, "QUIT", "Could not join"))
            if failure.retry and not conn.first and self.reconnect and not stopping:
                self._emit(Disconnected(failure.message, will_retry=True))
                return _Outcome.RETRY, failure.message
            if not stopping:
                self._emit(self._failed(failure))
            return _Outcome.FATAL, failure.message
        self._emit(Disconnected(reason, will_retry=self.reconnect and not stopping))
        # Start the backoff afresh only after a connection that stayed up a while; a server
        # that drops us right after the join must not be hammered at the shortest delay.
        stable = (conn.joined_at is not None
                  and time.monotonic() - conn.joined_at >= self.STABLE_AFTER)
        return (_Outcome.DROPPED if stable else _Outcome.RETRY), reason

    def _failed(self, failure: _Failure) -> LoginFailed:
        return LoginFailed(failure.kind, failure.message, failure.fingerprint, failure.pinned,
                           wait=failure.wait, tls_port=failure.tls_port)

    def _name_taken_again(self) -> tuple[_Outcome, str]:
        """Reconnecting, the server says our name is taken: say so; retry a few times."""
        nick = self.nick
        self._taken_tries += 1
        if self._taken_tries >= self.NAME_TRIES:
            text = (f"Your name “{nick}” is still in use on the server, so you could not get "
                    f"back into {self.room}. Press Back to Login and pick another name, or "
                    f"try again later.")
            self._emit(LoginFailed(LoginKind.NICK_TAKEN, text))
            return _Outcome.FATAL, text
        left = self.NAME_TRIES - self._taken_tries
        self._emit(ServerError(P.ERR_NICKNAMEINUSE, (
            f"Your name “{nick}” is in use on the server (perhaps by your old connection, "
            f"which the server has not dropped yet). Trying again ({left} more "
            f"{'try' if left == 1 else 'tries'}); or press Back to Login and pick another "
            f"name.")))
        return _Outcome.RETRY, f"Your name “{nick}” is in use on the server"

    # --- turning lines into events ----------------------------------------------------

    def _dispatch(self, conn: _Conn, msg: P.Message) -> None:
        cmd = msg.command
        p = msg.params
        if msg.source and "@" in msg.source and "!" in msg.source:
            self._saw_host(msg.source)
        if cmd == "PING":
            self._write_now(conn, P.format_line(None, "PONG", p[0] if p else "ping"))
            return
        if cmd == "ERROR":
            conn.error = wording.goodbye(p[0] if p else "")
            if not conn.registered and conn.failure is None:
                conn.failure = _Failure(LoginKind.REFUSED, (
                    f"The server closed the connection: {conn.error}. Try again later."))
            return
        if cmd == "CAP":
            self._on_cap(conn, msg)
            return
        if cmd == "BATCH":
            self._on_batch(conn, msg)
            return
        batch = conn.batches.get(msg.tags.get("batch", ""))
        if batch is not None and batch.kind in ("chathistory", MULTILINE_CAP):
            batch.lines.append(msg)  # handled as a whole when the batch ends
            return
        if not conn.registered:
            self._dispatch_registering(conn, msg)
            return
        handler = self._HANDLERS.get(cmd)
        if handler is not None:
            handler(self, conn, msg)
        elif cmd.isdigit() and cmd[0] in "45" and len(p) >= 1:
            self._error_numeric(conn, msg)

    def _dispatch_registering(self, conn: _Conn, msg: P.Message) -> None:
        cmd, p = msg.command, msg.params
        nick = self.nick
        if self._account is not None and self._on_account_line(conn, msg):
            return
        if cmd == P.RPL_WELCOME:
            if self._account is not None and conn.account is None:
                # A server without CAP (or one that registered us anyway): no login.
                conn.registered = True  # so that we say QUIT on the way out
                conn.failure = _Failure(LoginKind.NO_ACCOUNTS, _NO_ACCOUNTS)
                return
            conn.registered = True
            self._ever_registered = True
            self._taken_tries = 0
            given = p[0] if p else nick
            last_word = p[-1].rsplit(" ", 1)[-1] if len(p) > 1 else ""
            with self._lock:
                stopping = self._stop.is_set()
                self._nick = given
                self._state = "joining"
                if _nick_of(last_word) == given:
                    self._userhost = _userhost_of(last_word)
            if stopping:  # quit() came while we registered: do not stay on the server
                self._write_now(conn, P.format_line(None, "QUIT", QUIT_REASON))
                return
            tls = conn.stream.describe().split(" ", 1)[0] if conn.stream is not None else None
            self._emit(Registered(given, _nick_of(msg.source), tls))
        elif cmd in (P.ERR_NICKNAMEINUSE, ERR_UNAVAILRESOURCE):
            conn.failure = _Failure(LoginKind.NICK_TAKEN, (
                f"The name “{nick}” is already taken. Choose another name and join again."))
        elif cmd in (P.ERR_ERRONEUSNICKNAME, P.ERR_NONICKNAMEGIVEN):
            conn.failure = _Failure(LoginKind.BAD_NICK, (
                f"The server does not accept the name “{nick}”. Choose another name "
                f"(letters, digits and -[]\\`_^{{|}}, not starting with a digit)."))
        elif cmd == P.ERR_PASSWDMISMATCH:
            conn.failure = _Failure(LoginKind.BAD_PASSWORD, self._server_password_words())

    def _server_password_words(self) -> str:
        if self.password:
            return ("The server refused the password in “Server password”. Check it and join "
                    "again.")
        return "This server needs a password: enter it in “Server password” and join again."

    # --- accounts (network thread, while registering) -------------------------------------

    def _account_caps(self, conn: _Conn) -> list[str] | None:
        """The caps logging in (or creating the account) needs, after CAP LS; None, with
        ``conn.failure`` set, when the server cannot do it."""
        account = self._account
        assert account is not None
        offered = conn.offered
        can_create = REGISTRATION_CAP in offered
        if SASL_CAP not in offered and not (account.create and can_create):
            conn.failure = _Failure(LoginKind.NO_ACCOUNTS, _NO_ACCOUNTS)
            return None
        if account.create:
            if not can_create:  # a server with logins but no REGISTER (or closed)
                conn.failure = _Failure(LoginKind.REGISTRATION_CLOSED, _REGISTRATION_CLOSED)
                return None
            return [c for c in (REGISTRATION_CAP, SASL_CAP) if c in offered]
        mechanisms = conn.cap_values.get(SASL_CAP)
        if mechanisms and "PLAIN" not in mechanisms.upper().split(","):
            conn.failure = _Failure(LoginKind.NO_ACCOUNTS, _NO_PLAIN)
            return None
        return [SASL_CAP]

    def _start_account(self, conn: _Conn) -> None:
        """The caps are in: log in (AUTHENTICATE PLAIN) or create the account (REGISTER)."""
        account = self._account
        assert account is not None
        if not account.create and SASL_CAP not in self.caps:
            conn.failure = _Failure(LoginKind.NO_ACCOUNTS, _NO_ACCOUNTS)
            return
        if account.create:
            conn.auth = "register"
            try:
                line = P.format_line(None, "REGISTER", "*", "*", account.password,
                                     trailing=True)
            except (ProtocolError, UnicodeError):
                conn.failure = _Failure(LoginKind.BAD_ACCOUNT_PASSWORD, _PASSWORD_SIZE)
                return
            self._write_now(conn, line)
        else:
            conn.auth = "sasl"
            self._write_now(conn, P.format_line(None, "AUTHENTICATE", "PLAIN"))

    def _logged_in(self, conn: _Conn, created: bool) -> None:
        """The server says we are in: tell the user, end CAP (the server registers us)."""
        account = self._account
        assert account is not None
        name = conn.account or account.name
        conn.account = name
        conn.auth = "done"
        with self._lock:
            self._logged_in_as = name
        if created:  # from now on (reconnects) it is a login to the account just made
            self._account = Credentials(name, account.password)
        log.info("logged in to %s:%d as %s%s", self.host, self.port, name,
                 " (new account)" if created else "")
        self._emit(LoggedIn(name, created))
        self._end_caps(conn)

    def _on_account_line(self, conn: _Conn, msg: P.Message) -> bool:
        """SASL, REGISTER and the name while logging in; True if ``msg`` was taken."""
        account = self._account
        assert account is not None
        cmd, p = msg.command, msg.params
        if cmd == "AUTHENTICATE" and p and p[0] == "+" and conn.auth == "sasl":
            try:
                lines = sasl_plain_lines(account.name, account.password)
            except (ProtocolError, UnicodeError):
                conn.failure = _Failure(LoginKind.BAD_ACCOUNT_PASSWORD, _PASSWORD_SIZE)
                return True
            self._write_now(conn, lines)
            return True
        if cmd == P.RPL_LOGGEDIN:
            if len(p) >= 3:
                conn.account = p[2]
            return True
        if cmd == P.RPL_SASLSUCCESS or (cmd == P.ERR_SASLALREADY and conn.auth == "sasl"):
            self._logged_in(conn, created=False)
            return True
        if cmd == P.RPL_SASLMECHS:
            conn.mechanisms = p[1] if len(p) > 2 else ""
            return True
        if cmd in (P.ERR_SASLFAIL, P.ERR_SASLTOOLONG, P.ERR_SASLABORTED, P.ERR_NICKLOCKED):
            if conn.auth == "sasl":
                conn.failure = self._sasl_failure(conn, cmd, p[-1] if p else "")
            return True
        if cmd == "REGISTER" and len(p) >= 2 and p[0].upper() == "SUCCESS":
            conn.account = p[1]
            self._logged_in(conn, created=True)
            return True
        if cmd == "FAIL" and len(p) >= 3 and p[0].upper() == "REGISTER":
            conn.failure = self._register_failure(p[1].upper(), p[-1])
            return True
        if (cmd in (P.ERR_NICKNAMEINUSE, ERR_UNAVAILRESOURCE) and not account.create
                and conn.name_tries < NAME_FALLBACKS):
            # Our name is held: by a guest (the server gives it back to us once we are
            # logged in) or by our own old connection.  Register under another meanwhile.
            conn.name_tries += 1
            self._write_now(conn, P.format_line(None, "NICK", self._fallback_name(
                account.name, conn.name_tries)))
            return True
        return False

    def _fallback_name(self, name: str, attempt: int) -> str:
        """``alice_``, then ``alice_`` and three digits: a name to register under while
        ``name`` is in use (within NICKLEN)."""
        tail = "_" if attempt == 1 else f"_{random.randrange(1000):03d}"
        return name[:max(1, self.nicklen - len(tail))] + tail

    def _sasl_failure(self, conn: _Conn, code: str, text: str) -> _Failure:
        """A refused login (904-906, 902) in words the user can act on."""
        conn.auth = ""
        why = text.split(":", 1)[1].strip() if ":" in text else ""
        lower = text.lower()
        if code == P.ERR_SASLTOOLONG:
            return _Failure(LoginKind.BAD_ACCOUNT_PASSWORD, _PASSWORD_SIZE)
        if code == P.ERR_SASLFAIL:
            wait = _TRY_AGAIN.search(text)
            if wait is not None:
                seconds = int(wait.group(1))
                return _Failure(LoginKind.THROTTLED, _throttled(seconds), wait=seconds)
            if "wrong" in lower or "invalid" in lower or not why and conn.mechanisms is None:
                return _Failure(LoginKind.WRONG_PASSWORD, _WRONG_PASSWORD)
            if "tls" in lower or "encrypt" in lower or "secure" in lower:
                return self._insecure(text)
            if conn.mechanisms is not None and "PLAIN" not in conn.mechanisms.upper():
                return _Failure(LoginKind.NO_ACCOUNTS, _NO_PLAIN)
        if code == P.ERR_SASLABORTED:
            return _Failure(LoginKind.ACCOUNT_REFUSED, "The login was cut short. Try again.")
        if code == P.ERR_NICKLOCKED:
            return _Failure(LoginKind.ACCOUNT_REFUSED, (
                "That account is locked on this server: ask its administrator."))
        return _Failure(LoginKind.ACCOUNT_REFUSED, (
            f"The server did not log you in{': ' + why.rstrip('.') if why else ''}."))

    def _register_failure(self, code: str, text: str) -> _Failure:
        """A FAIL REGISTER in words the user can act on."""
        name = self._account.name if self._account is not None else self.nick
        lower = text.lower()
        if code == "ACCOUNT_EXISTS":
            return _Failure(LoginKind.NAME_REGISTERED, (
                "That name is registered: log in, or pick another."))
        if code == "UNACCEPTABLE_PASSWORD":
            return _Failure(LoginKind.BAD_ACCOUNT_PASSWORD, _PASSWORD_SIZE)
        if code == "INSECURE_CONNECTION":
            return self._insecure(text)
        if code == "TEMPORARILY_UNAVAILABLE":
            wait = _TRY_AGAIN.search(text)
            if wait is not None:
                seconds = int(wait.group(1))
                return _Failure(LoginKind.THROTTLED, _throttled(seconds), wait=seconds)
            if "closed" in lower:
                return _Failure(LoginKind.REGISTRATION_CLOSED, _REGISTRATION_CLOSED)
            if "server password" in lower:
                return _Failure(LoginKind.BAD_PASSWORD, self._server_password_words())
        if code in ("BAD_ACCOUNT_NAME", "ACCOUNT_NAME_MUST_BE_NICK"):
            return _Failure(LoginKind.BAD_NICK, (
                f"The server will not make an account called “{name}”"
                f"{': ' + text.rstrip('.') if text else ''}. Pick another name."))
        if code == "NEED_NICK":
            return _Failure(LoginKind.BAD_NICK, (
                f"The server did not take the name “{name}”. Pick another name."))
        return _Failure(LoginKind.ACCOUNT_REFUSED, (
            f"The server did not create the account{': ' + text.rstrip('.') if text else ''}."))

    def _insecure(self, text: str) -> _Failure:
        port = _TLS_PORT_WORDS.search(text)
        where = f", {port.group(1)}" if port else ""
        return _Failure(LoginKind.INSECURE, (
            f"Passwords are only accepted over an encrypted connection: tick “Use TLS” "
            f"and connect to the server's TLS port{where}."),
            tls_port=int(port.group(1)) if port else None)

    def _is_me(self, nick: str) -> bool:
        return self._fold(nick) == self._fold(self.nick)

    # --- capabilities (network thread) --------------------------------------------------

    def _on_cap(self, conn: _Conn, msg: P.Message) -> None:
        """CAP LS, ACK and NAK while registering; NEW, DEL (cap-notify) and ACK later."""
        p = msg.params
        if len(p) < 3:
            return
        sub = p[1].upper()
        more = len(p) > 3 and p[2] == "*"  # CAP 302: the list goes on in the next line
        words = [word.partition("=") for word in p[-1].split()]  # "sasl=PLAIN"
        names = [name for name, _, _ in words]
        if sub == "LS":
            conn.offered.update(names)
            conn.cap_values.update((name, value) for name, _, value in words if value)
            if not more and not conn.cap_asked:
                conn.cap_asked = True
                if self._account is None or conn.registered:
                    self._ask_caps(conn, conn.offered)
                    return
                needed = self._account_caps(conn)
                if needed is not None:
                    self._ask_caps(conn, conn.offered, needed)
        elif sub == "NEW":
            conn.offered.update(names)
            self._ask_caps(conn, set(names))
        elif sub in ("ACK", "DEL"):
            with self._lock:
                caps = set(self._caps)
                for name in names:
                    if sub == "DEL" or name.startswith("-"):
                        caps.discard(name.lstrip("-"))
                    else:
                        caps.add(name)
                self._caps = frozenset(caps)
                value = conn.cap_values.get(MULTILINE_CAP, "")
                self._multiline = (MultilineLimits.parse(value)
                                   if {MULTILINE_CAP, "batch"} <= caps else None)
            if sub == "ACK" and not more:
                self._caps_done(conn)
        elif sub == "NAK":  # all or nothing: go on without them
            if self._account is not None and not conn.registered and not conn.cap_retried:
                conn.cap_retried = True  # ask for what logging in needs, alone
                needed = self._account_caps(conn)
                if needed is not None:
                    self._write_now(conn, P.format_line(None, "CAP", "REQ", " ".join(needed),
                                                        trailing=True))
                return
            self._caps_done(conn)

    def _caps_done(self, conn: _Conn) -> None:
        """The answer to our CAP REQ is in: log in first if we have an account to, else
        end CAP (that lets the server register us)."""
        if self._account is not None and not conn.registered and conn.auth == "":
            self._start_account(conn)
        elif conn.auth in ("", "done"):
            self._end_caps(conn)

    def _ask_caps(self, conn: _Conn, offered: set[str], needed: Iterable[str] = ()) -> None:
        have = self.caps
        wanted = [c for c in WANTED_CAPS if c in offered and c not in have]
        wanted += [c for c in needed if c not in wanted and c not in have]
        if wanted:
            self._write_now(conn, P.format_line(None, "CAP", "REQ", " ".join(wanted),
                                                trailing=True))
        else:
            self._caps_done(conn)

    def _end_caps(self, conn: _Conn) -> None:
        """CAP END, once, while registering (it lets the server register us)."""
        if not conn.registered and not conn.cap_ended:
            conn.cap_ended = True
            self._write_now(conn, P.format_line(None, "CAP", "END"))

    def _on_fail(self, conn: _Conn, msg: P.Message) -> None:
        """A standard reply (FAIL, WARN, NOTE): ``<command> <code> [context...] :words``."""
        p = msg.params
        if len(p) < 3:
            return
        command, code, text = p[0].upper(), p[1], p[-1]
        if (msg.command == "FAIL" and command == "JOIN" and code == "ACCOUNT_REQUIRED"
                and conn.join_deadline is not None):  # our own JOIN, on a members' server
            conn.join_deadline = None
            conn.failure = _Failure(LoginKind.ACCOUNT_REQUIRED, (
                "This server is for registered users: log in (or create an account) to "
                "join."))
            return
        if msg.command == "FAIL" and command == "CHATHISTORY":
            target = next((x for x in p[2:-1] if P.is_channel(x)), None)
            req = self._claim(msg.tags.get("label"), target)
            room = self._rooms.get(req.room) if req is not None else None
            if req is not None and room is not None:
                self._history_done(conn, room, req, [], failed=text)
                return
        if msg.command == "FAIL":
            self._emit(ServerError(f"{command} {code}", text))
        else:
            self._emit(Notice(text, _nick_of(msg.source) or None))

    def _on_ack(self, conn: _Conn, msg: P.Message) -> None:
        """labeled-response's ACK: a request of ours had nothing to say (no history)."""
        label = msg.tags.get("label")
        req = self._claim(label, None) if label else None
        room = self._rooms.get(req.room) if req is not None else None
        if req is not None and room is not None:
            self._history_done(conn, room, req, [])

    # --- history (network thread, but for load_older) -------------------------------------

    def _on_batch(self, conn: _Conn, msg: P.Message) -> None:
        """BATCH +ref type params... opens a batch, BATCH -ref ends it.  A ``chathistory``
        batch keeps its lines (see :meth:`_dispatch`) and is taken as a whole at its end."""
        p = msg.params
        if not p or len(p[0]) < 2:
            return
        ref = p[0][1:]
        if p[0][0] == "+":
            parent = conn.batches.get(msg.tags.get("batch", ""))
            # A labeled reply of several lines may come as a labeled-response batch around
            # the chathistory one: the label is then on the outer batch.
            label = msg.tags.get("label") or (parent.label if parent is not None else None)
            batch = _Batch(p[1] if len(p) > 1 else "", label, p[2] if len(p) > 2 else "",
                           opener=msg, parent=msg.tags.get("batch"))
            if batch.kind == "chathistory" and batch.target:
                batch.request = self._claim(label, batch.target)
            if len(conn.batches) < MAX_OPEN_BATCHES:
                conn.batches[ref] = batch
        elif p[0][0] == "-":
            ended = conn.batches.pop(ref, None)
            if ended is not None and ended.kind == "chathistory":
                self._history_batch(conn, ended)
            elif ended is not None and ended.kind == MULTILINE_CAP:
                whole = _combine(ended)
                parent = conn.batches.get(ended.parent or "")
                if whole is None:
                    return
                if parent is not None and parent.kind == "chathistory":
                    parent.lines.append(whole)  # one stored message of that history
                else:
                    self._dispatch(conn, whole)

    def _claim(self, label: str | None, target: str | None) -> _Request | None:
        """Take the request a reply answers: the one with its label; without a label, the
        oldest unlabeled one about ``target`` (any target for None).  The server answers
        one connection's commands in order, so the oldest is the right one."""
        folded = self._fold(target) if target is not None else None
        with self._lock:
            for req in self._requests:
                if label is not None:
                    hit = req.label == label
                else:
                    hit = req.label is None and folded in (None, req.room)
                if hit:
                    self._requests.remove(req)
                    return req
        return None

    def _history_request(self, room: RoomState, kind: HistoryKind, sub: str, ref: str,
                         page: int = 1) -> tuple[_Request, bytes | None]:
        """Record a CHATHISTORY request about ``room`` and make its line (None: it cannot
        be made, and the caller drops the request).  Any thread."""
        limit = self._info.page(self.history_page)
        with self._lock:
            label = None
            if "labeled-response" in self._caps:
                self._labels += 1
                label = f"h{self._labels}"
            req = _Request(self._fold(room.name), kind, limit, label, page)
            self._requests.append(req)
        try:
            line = P.format_line(None, "CHATHISTORY", sub, room.name, ref, str(limit),
                                 tags={"label": label} if label else None)
        except (ProtocolError, UnicodeError):
            line = None
        return req, line

    def _start_sync(self, conn: _Conn, room: RoomState) -> None:
        """We are in ``room`` (its NAMES are in): fetch what it said before, LATEST the first
        time, after the newest line seen since then (reconnected, or joined again).  The
        room's live events wait for the answer, so they come after it."""
        with self._lock:
            if room.held is not None:
                return  # a fetch is on its way already; its end lets the room go live
            room.held = []
            room.synced = False
            mark, kind = room.newest, (HistoryKind.MISSED if room.fetched
                                       else HistoryKind.LATEST)
        self._ask_since(conn, room, kind, mark, 1)

    def _ask_since(self, conn: _Conn, room: RoomState, kind: HistoryKind,
                   mark: Mark | None, page: int) -> None:
        ref = self._info.reference(mark.msgid, mark.time) if mark is not None else None
        req, line = self._history_request(room, kind, "AFTER" if ref else "LATEST",
                                          ref or "*", page)
        if line is None:
            with self._lock:
                self._requests.remove(req)
            self._release(conn, room)
            return
        conn.sync_by[req.room] = time.monotonic() + self.history_timeout
        self._write_now(conn, line)

    def _history_batch(self, conn: _Conn, batch: _Batch) -> None:
        req = batch.request
        room = self._rooms.get(req.room) if req is not None else self._room(batch.target)
        if room is None:
            return  # about a conversation we keep no state for
        if req is None:  # not asked for: a server that replays recent lines on join
            with self._lock:
                kind = HistoryKind.MISSED if room.fetched else HistoryKind.LATEST
            req = _Request(self._fold(room.name), kind, 0, None, replay=True)
        self._history_done(conn, room, req, batch.lines)

    def _history_done(self, conn: _Conn, room: RoomState, req: _Request,
                      lines: list[P.Message], failed: str | None = None) -> None:
        """The answer to ``req`` is in (``failed``: the server's words why not): emit what it
        brought; then, catching up, ask for the next page or let the room go live."""
        if req.abandoned:
            return  # we stopped waiting: the room went live without it
        entries = self._entries(room, lines)
        full = failed is None and not req.replay and len(lines) >= req.limit
        first, last = (Mark.of(lines[0]), Mark.of(lines[-1])) if lines else (None, None)
        with self._lock:
            if req.kind is HistoryKind.OLDER:
                room.older_pending = False
                room.oldest = first or room.oldest
            else:
                room.newest = last or room.newest
                room.fetched = True
                if req.kind is HistoryKind.LATEST and not req.replay:
                    room.oldest = first
            if req.kind is not HistoryKind.MISSED and not req.replay:
                room.start = failed is None and not full  # a short page: nothing before it
            start = room.start and req.kind is not HistoryKind.MISSED
        cut = req.kind is HistoryKind.MISSED and full and req.page >= CATCH_UP_PAGES
        self._emit(History(room.name, req.kind, entries, start, cut))
        if failed is not None:
            self._emit(ServerError("CHATHISTORY", (
                f"Earlier messages of {room.name} could not be loaded ({failed.rstrip('.')}).")))
        if req.kind is HistoryKind.OLDER or req.replay:
            return
        if req.kind is HistoryKind.MISSED and full and not cut:
            self._ask_since(conn, room, req.kind, last, req.page + 1)  # more was missed
            return
        self._release(conn, room)

    def _entries(self, room: RoomState, lines: list[P.Message]) -> tuple[RoomLine, ...]:
        """The lines of a history batch as events, leaving out those shown already."""
        found = [(msg.tags.get("msgid"), self._past(msg, room.name)) for msg in lines]
        with self._lock:
            return tuple(ev for msgid, ev in found
                         if ev is not None and (msgid is None or room.seen.add(msgid)))

    def _past(self, msg: P.Message, room: str) -> RoomLine | None:
        """One line of ``room``'s history as the event it was then, changing no state (an
        old JOIN says nothing about who is here now: its member snapshot is empty)."""
        p, nick = msg.params, _nick_of(msg.source)
        when, msgid = _msg_time(msg), msg.tags.get("msgid")
        cmd = msg.command
        if cmd in ("PRIVMSG", "NOTICE"):
            return self._message(msg)
        if cmd == "JOIN":
            return UserJoined(room, nick, (), when, msgid)
        if cmd == "PART":
            return UserLeft(room, nick, p[1] if len(p) > 1 else "", (), None, when, msgid)
        if cmd == "KICK" and len(p) >= 2:
            return UserLeft(room, p[1], p[2] if len(p) > 2 else "", (), nick, when, msgid)
        if cmd == "QUIT":
            return UserQuit(nick, p[0] if p else "", (), room, when, msgid)
        if cmd == "NICK" and p:
            return UserRenamed(nick, p[0], False, (), room, when, msgid)
        if cmd == "TOPIC" and p:
            return Topic(room, p[1] if len(p) > 1 else "", nick, when, msgid)
        if cmd == "MODE" and len(p) >= 2:
            list_modes, always, when_set, _never = self._info.chanmodes
            words = wording.mode_sentence(nick, p[1], list(p[2:]), list_modes, always, when_set)
            return Notice(words, nick, room, None, when, msgid)
        return None  # TAGMSG (reactions, typing) and the like: not shown live either

    def _release(self, conn: _Conn, room: RoomState) -> None:
        """The room's history is in (or given up on): its held live events go, in order."""
        conn.sync_by.pop(self._fold(room.name), None)
        with self._lock:
            held, room.held = room.held or [], None
            room.synced = True
            for _ev, mark in held:
                room.newest = mark or room.newest
        for ev, _mark in held:
            self._emit(ev)

    def _history_overdue(self, conn: _Conn, now: float) -> None:
        """Stop waiting for history that has not come in time: the room goes live."""
        for folded, by in list(conn.sync_by.items()):
            if now < by:
                continue
            room = self._rooms.get(folded)
            with self._lock:
                for req in self._requests:
                    if req.room == folded and req.kind is not HistoryKind.OLDER:
                        req.abandoned = True  # its late answer is read and dropped
                if room is not None:
                    room.fetched = True  # it went live: the next fetch is a catch-up
            conn.sync_by.pop(folded, None)
            if room is not None:
                self._release(conn, room)
                self._emit(ServerError("CHATHISTORY", (
                    f"The server did not send the earlier messages of {room.name} in time; "
                    f"only new messages are shown.")))

    def _emit_room(self, room: RoomState, ev: Event, msg: P.Message | None = None) -> None:
        """Emit ``ev`` about ``room``, or hold it while the room's history is on its way
        (so it comes after it).  ``msg`` is the stored line it came from: its msgid is
        remembered (a message shown already is dropped) and it becomes the newest seen."""
        mark = Mark.of(msg) if msg is not None else None
        msgid = msg.tags.get("msgid") if msg is not None else None
        with self._lock:
            if (msgid is not None and not room.seen.add(msgid)
                    and isinstance(ev, (Message, Echo))):
                return  # shown already: it was in the history fetched
            if room.held is not None:
                room.held.append((ev, mark))
                return
            if mark is not None and room.synced:
                room.newest = mark
        self._emit(ev)

    def _on_isupport(self, conn: _Conn, msg: P.Message) -> None:
        tokens = list(msg.params[1:])
        if tokens and " " in tokens[-1]:
            tokens.pop()  # "are supported by this server"
        info = self._info.updated(tokens)
        with self._lock:
            self._set_info(info, keep_members=True)

    def _on_visible_host(self, conn: _Conn, msg: P.Message) -> None:
        """396: the server shows us under another host from now on."""
        if len(msg.params) >= 2:
            with self._lock:
                if self._userhost:
                    user = self._userhost.split("@", 1)[0]
                    self._userhost = f"{user}@{msg.params[1]}"

    def _on_motd_end(self, conn: _Conn, msg: P.Message) -> None:
        """376/422 end the welcome: now join our rooms (once per connection)."""
        if conn.join_sent or self._stop.is_set():
            return
        conn.join_sent = True
        self._motd_shown = True
        with self._lock:
            watched = list(self._watch.values())
        for chunk in self._join_chunks(watched, len("MONITOR + ") - len("JOIN ")):
            self._write_now(conn, P.format_line(None, "MONITOR", "+", chunk))
        with self._lock:
            names = [r.name for r in self._rooms.values() if not r.leaving and not r.removed]
            if not names:  # in no room (all left): connected is all there is to be
                self._state = "joined"
        if not names:
            conn.joined_at = time.monotonic()
            return
        conn.join_deadline = time.monotonic() + self.join_timeout
        conn.join_waiting = {self._fold(n) for n in names}
        for chunk in self._join_chunks(names, 0):
            self._write_now(conn, P.format_line(None, "JOIN", chunk))

    def _join_answered(self, conn: _Conn, room: RoomState) -> None:
        """The server answered our automatic JOIN of ``room`` (let us in, or not)."""
        conn.join_waiting.discard(self._fold(room.name))
        if not conn.join_waiting:
            conn.join_deadline = None
            self._set_state("joined")  # in every room that let us in: all there is

    def _join_overdue(self, conn: _Conn) -> None:
        """Our automatic JOINs went unanswered for ``join_timeout``: the home room's, on the
        first connection, ends it (the login says so); any other is given up."""
        conn.join_deadline = None
        waiting, conn.join_waiting = conn.join_waiting, set()
        home = self._fold(self.room)
        if conn.first and home in waiting and not self._ever_joined:
            conn.failure = _Failure(LoginKind.JOIN_REFUSED, (
                f"The server did not answer when asked to join {self.room}. "
                f"Try again later."), retry=True)
            return
        for key in waiting:
            room = self._rooms.get(key)
            if room is not None and not room.joined:
                self._refuse(room, "the server did not answer")

    def _refuse(self, room: RoomState, text: str) -> None:
        """The server will not let us into ``room`` (``text`` says why): forget it."""
        with self._lock:
            self._forget_room(room)
            back = room.ever_joined
        message = (f"You could not get back into {room.name}: {text}." if back
                   else f"You could not join {room.name}: {text}.")
        self._emit(Left(room.name, message, refused=True))

    def _on_motd(self, conn: _Conn, msg: P.Message) -> None:
        if not self._motd_shown and msg.params:
            self._emit(Notice(msg.params[-1].removeprefix("- "), _nick_of(msg.source)))

    def _on_join(self, conn: _Conn, msg: P.Message) -> None:
        room = self._room(msg.params[0]) if msg.params else None
        if room is None:
            return
        nick = _nick_of(msg.source)
        if self._is_me(nick):
            with self._lock:
                room.joined = True
                self._state = "joined"
                room.members.replace([(nick, "")])
                self._userhost = _userhost_of(msg.source) or self._userhost
                room.user_join = False
                rejoined, room.ever_joined = room.ever_joined, True
            conn.names.pop(self._fold(room.name), None)
            self._join_answered(conn, room)
            self._ever_joined = True
            if conn.joined_at is None:
                conn.joined_at = time.monotonic()
            history = self.has_history
            with self._lock:
                msgid = msg.tags.get("msgid")
                if msgid is not None:
                    room.seen.add(msgid)  # our JOIN, also in what we fetch next
                room.synced = not history
            if history:
                conn.sync_due.add(self._fold(room.name))  # at its 366, once NAMES is in
            if "away-notify" in self.caps:  # who is away now; the cap says who goes later
                self._write_now(conn, P.format_line(None, "WHO", room.name))
            self._emit(Joined(msg.params[0], nick, rejoined))
            return
        with self._lock:
            room.members.put(nick, "")
            snap = room.members.snapshot()
        self._emit_room(room, UserJoined(msg.params[0], nick, snap, _msg_time(msg),
                                         msg.tags.get("msgid")), msg)

    def _on_part(self, conn: _Conn, msg: P.Message) -> None:
        room = self._room(msg.params[0]) if msg.params else None
        if room is None:
            return
        nick = _nick_of(msg.source)
        reason = msg.params[1] if len(msg.params) > 1 else ""
        self._remove(room, msg, nick, reason, None)

    def _on_kick(self, conn: _Conn, msg: P.Message) -> None:
        room = self._room(msg.params[0]) if len(msg.params) >= 2 else None
        if room is None:
            return
        reason = msg.params[2] if len(msg.params) > 2 else ""
        self._remove(room, msg, msg.params[1], reason, _nick_of(msg.source))

    def _remove(self, room: RoomState, msg: P.Message, nick: str, reason: str,
                by: str | None) -> None:
        """``nick`` left ``room`` (by the PART or KICK ``msg``)."""
        shown = msg.params[0]  # the room's name as the server wrote it
        if self._is_me(nick):
            with self._lock:
                room.joined = False
                room.members.replace(())
                parted = room.leaving and by is None
                if parted:
                    self._forget_room(room)
                elif by is not None:
                    room.removed = True  # a reconnect does not push back in
            self._emit_room(room, Left(shown, reason, by, parted=parted), msg)
            return
        with self._lock:
            if room.members.pop(nick) is None:
                return
            snap = room.members.snapshot()
        self._emit_room(room, UserLeft(shown, nick, reason, snap, by, _msg_time(msg),
                                       msg.tags.get("msgid")), msg)

    def _on_quit(self, conn: _Conn, msg: P.Message) -> None:
        """One UserQuit per room we shared with them; none if we shared none."""
        nick = _nick_of(msg.source)
        reason = msg.params[0] if msg.params else ""
        hits: list[tuple[RoomState, tuple[str, ...]]] = []
        with self._lock:
            for room in self._rooms.values():
                if room.members.pop(nick) is not None:
                    hits.append((room, room.members.snapshot()))
        when, msgid = _msg_time(msg), msg.tags.get("msgid")
        for room, snap in hits:
            self._emit_room(room, UserQuit(nick, reason, snap, room.name, when, msgid), msg)

    def _on_nick(self, conn: _Conn, msg: P.Message) -> None:
        """One UserRenamed per room we share with them (per room we keep, when it is us)."""
        if not msg.params:
            return
        old, new = _nick_of(msg.source), msg.params[0]
        hits: list[tuple[RoomState, tuple[str, ...]]] = []
        forced = False
        with self._lock:
            is_self = self._fold(old) == self._fold(self._nick)
            if is_self:
                self._nick = new
                asked, self._asked_nick = self._asked_nick, None
                # Not the name we asked for: the server renamed us (a registered name).
                forced = asked is None or self._fold(asked) != self._fold(new)
                self._renamed_to = new if forced else None
            for room in self._rooms.values():
                entry = room.members.pop(old)
                if entry is not None:
                    room.members.put(new, entry[1])
                elif not is_self:
                    continue  # not someone we share this room with
                hits.append((room, room.members.snapshot()))
        when, msgid = _msg_time(msg), msg.tags.get("msgid")
        for room, snap in hits:
            self._emit_room(room, UserRenamed(old, new, is_self, snap, room.name, when, msgid,
                                              forced), msg)

    def _on_privmsg(self, conn: _Conn, msg: P.Message) -> None:
        if len(msg.params) < 2:
            return
        text = msg.params[1]
        source = msg.source or ""
        sender = _nick_of(source)
        if _from_server(source):
            if msg.command == "NOTICE" and self._account_notice(text):
                return
            offer = _TLS_OFFER.search(text) if conn.stream is None else None
            self._emit(Notice(text, sender or None,
                              tls_port=int(offer.group(1)) if offer else None))
            return
        if text.startswith("\x01"):
            word, _, arg = text.strip("\x01").partition(" ")
            if word.upper() != "ACTION":
                # A request to answer; not our own, which echo-message sends back to us.
                if msg.command == "PRIVMSG" and not self._is_me(sender):
                    self._answer_ctcp(conn, sender, word.upper(), arg)
                return
        said = self._message(msg)
        if said is None:
            return
        ev: Message | Echo = Echo(said) if said.own else said
        room = self._room(said.room) if said.room is not None else None
        if room is not None:
            self._emit_room(room, ev, msg)
            return
        with self._lock:
            fresh = said.msgid is None or self._private_seen.add(said.msgid)
        if fresh:  # a message to ourselves comes as the echo and as the message, one msgid
            self._emit(ev)

    def _account_notice(self, text: str) -> bool:
        """The server's notices about our name: the warning that it is registered (a
        RenameWarning instead), and the one after a forced rename, which the UserRenamed
        events have said already.  True if ``text`` was one of them."""
        warned = _RENAME_WARNING.match(text)
        if warned is not None:
            nick, seconds = warned.group(1), float(warned.group(2))
            self._emit(RenameWarning(nick, seconds, time.monotonic() + seconds))
            return True
        with self._lock:
            renamed, self._renamed_to = self._renamed_to, None
        return renamed is not None and text.endswith(f"you are now {renamed}")

    def _message(self, msg: P.Message) -> Message | None:
        """A PRIVMSG or NOTICE from someone (live or from history) as a Message; None for
        a CTCP other than ACTION, one from the server, or one to a room we do not keep."""
        if len(msg.params) < 2 or _from_server(msg.source or ""):
            return None
        target, text = msg.params[0], msg.params[1]
        sender = _nick_of(msg.source)
        action = False
        if text.startswith("\x01"):
            word, _, arg = text.strip("\x01").partition(" ")
            if word.upper() != "ACTION":
                return None
            action, text = True, arg
        bare = target.lstrip(self._info.prefix_symbols)
        room_name: str | None = None
        if P.is_channel(bare):
            room = self._room(bare)
            if room is None:
                return None
            room_name = room.name
        return Message(sender, target, text, room_name is None, action,
                       msg.command == "NOTICE", _msg_time(msg), room_name,
                       msg.tags.get("msgid"), self._is_me(sender))

    def _answer_ctcp(self, conn: _Conn, sender: str, word: str, arg: str) -> None:
        answers = {"VERSION": "chatroom desktop client 0.1", "PING": arg,
                   "TIME": time.strftime("%a %b %d %H:%M:%S %Y"),
                   "CLIENTINFO": "ACTION CLIENTINFO PING TIME VERSION"}
        if word in answers and P.valid_nick(sender, 64) and self._ctcp.try_take(time.monotonic()):
            body = f"\x01{word} {answers[word]}\x01".replace(" \x01", "\x01")
            try:
                self._write_now(conn, P.format_line(None, "NOTICE", sender, body))
            except (ProtocolError, UnicodeError):
                pass

    def _on_topic(self, conn: _Conn, msg: P.Message) -> None:
        room = self._room(msg.params[0]) if msg.params else None
        if room is not None:
            text = msg.params[1] if len(msg.params) > 1 else ""
            with self._lock:
                room.topic = text
            self._emit_room(room, Topic(msg.params[0], text, _nick_of(msg.source),
                                        _msg_time(msg), msg.tags.get("msgid")), msg)

    def _on_rpl_topic(self, conn: _Conn, msg: P.Message) -> None:
        """332/331, also for a room we are not in (a TOPIC query about it)."""
        p = msg.params
        if len(p) >= 2:
            text = p[2] if msg.command == P.RPL_TOPIC and len(p) > 2 else ""
            room = self._room(p[1])
            if room is None:
                self._emit(Topic(p[1], text, None))
                return
            with self._lock:
                room.topic = text
            self._emit_room(room, Topic(p[1], text, None))

    def _on_namreply(self, conn: _Conn, msg: P.Message) -> None:
        p = msg.params
        if len(p) < 3:
            return
        room, entries = p[-2], p[-1]
        bucket = conn.names.setdefault(self._fold(room), {})
        info = self._info
        for entry in entries.split():
            nick, prefixes = info.split_member(entry)
            if nick:
                bucket[info.fold(nick)] = (nick, info.ordered(prefixes))

    def _on_endofnames(self, conn: _Conn, msg: P.Message) -> None:
        if len(msg.params) < 2:
            return
        name = msg.params[1]
        bucket = conn.names.pop(self._fold(name), {})
        room = self._room(name)
        if room is not None:
            with self._lock:
                if not room.joined:
                    return
                room.members.replace(bucket.values())
                snap = room.members.snapshot()
            self._emit_room(room, Names(room.name, snap))
            if self._fold(room.name) in conn.sync_due:  # the 366 of our own JOIN
                conn.sync_due.discard(self._fold(room.name))
                self._start_sync(conn, room)
        else:
            other = Members(self._info)  # another room's list, ordered the same way
            other.replace(bucket.values())
            self._emit(Names(name, other.snapshot()))

    def _on_mode(self, conn: _Conn, msg: P.Message) -> None:
        if self._on_user_mode(conn, msg):
            return
        p = msg.params
        room = self._room(p[0]) if len(p) >= 2 else None
        if room is None:
            return
        args = list(p[2:])
        sign = "+"
        changed = False
        info = self._info
        list_modes, always, when_set, _never = info.chanmodes
        with self._lock:
            for ch in p[1]:
                if ch in "+-":
                    sign = ch
                elif ch in info.prefix_modes:
                    if not args:
                        continue
                    who = args.pop(0)
                    entry = room.members.get(who)
                    if entry is None:
                        continue
                    mark = info.prefix_symbols[info.prefix_modes.index(ch)]
                    have = set(entry[1])
                    if sign == "+":
                        have.add(mark)
                    else:
                        have.discard(mark)
                    room.members.put(entry[0], info.ordered(have))
                    changed = True
                elif args and (ch in list_modes or ch in always
                               or (ch in when_set and sign == "+")):
                    args.pop(0)
            snap = room.members.snapshot()
        setter = _nick_of(msg.source)
        words = wording.mode_sentence(setter, p[1], list(p[2:]), list_modes, always, when_set)
        self._emit_room(room, Notice(words, setter, room.name, None, _msg_time(msg),
                                     msg.tags.get("msgid")), msg)
        if changed:
            self._emit_room(room, Names(room.name, snap))

    def _on_away_notify(self, conn: _Conn, msg: P.Message) -> None:
        """away-notify: someone we share a room with went away (with a text) or is back."""
        nick = _nick_of(msg.source)
        if nick and not self._is_me(nick):
            away = bool(msg.params and msg.params[0])
            self._emit(AwayStates(((nick, away),)))

    def _saw_host(self, source: str) -> None:
        nick, _, userhost = source.partition("!")
        key = self._fold(nick)
        with self._lock:
            if self._hosts.get(key) == userhost:
                return
            self._hosts.pop(key, None)
            self._hosts[key] = userhost
            if len(self._hosts) > HOSTS_KEPT:
                del self._hosts[next(iter(self._hosts))]

    def _on_who_reply(self, conn: _Conn, msg: P.Message) -> None:
        p = msg.params  # me #room user host server nick flags :hops realname
        if len(p) >= 6:
            self._saw_host(f"{p[5]}!{p[2]}@{p[3]}")
        if len(p) >= 7 and p[1] != "*":
            conn.who.setdefault(self._fold(p[1]), []).append((p[5], "G" in p[6]))

    def _on_who_end(self, conn: _Conn, msg: P.Message) -> None:
        states = conn.who.pop(self._fold(msg.params[1]), None) if len(msg.params) > 1 else None
        if states:
            self._emit(AwayStates(tuple(states)))

    def _on_monitor(self, conn: _Conn, msg: P.Message) -> None:
        """730/731: people on the notify list online or offline (``nick!user@host,...``)."""
        if len(msg.params) < 2:
            return
        online = msg.command == "730"
        for target in msg.params[-1].split(","):
            nick = target.split("!", 1)[0]
            if nick:
                self._emit(Presence(nick, online))

    def _on_monitor_full(self, conn: _Conn, msg: P.Message) -> None:
        limit = msg.params[1] if len(msg.params) > 1 else "its"
        self._emit(ServerError("734", f"The server watches at most {limit} names for you: "
                                      f"remove one from your notify list first."))

    def _on_oper(self, conn: _Conn, msg: P.Message) -> None:
        with self._lock:
            self._oper = True
        self._emit(OperChanged(True))

    def _on_user_mode(self, conn: _Conn, msg: P.Message) -> bool:
        """MODE on our own nick: +o/-o makes us a server operator or not.  True if it was
        a user mode (not a room's)."""
        p = msg.params
        if len(p) < 2 or P.is_channel(p[0]) or not self._is_me(p[0]):
            return False
        sign = "+"
        for ch in p[1]:
            if ch in "+-":
                sign = ch
            elif ch == "o":
                with self._lock:
                    changed, self._oper = self._oper != (sign == "+"), sign == "+"
                if changed:
                    self._emit(OperChanged(sign == "+"))
        return True

    def _on_markread(self, conn: _Conn, msg: P.Message) -> None:
        p = msg.params
        if len(p) < 2:
            return
        when = P.parse_time(p[1].removeprefix("timestamp=")) if p[1] != "*" else None
        self._emit(ReadMarker(p[0], when / 1000.0 if when is not None else None))

    def _on_ban_entry(self, conn: _Conn, msg: P.Message) -> None:
        p = msg.params  # me #room mask [setter [time]]
        if len(p) >= 3:
            conn.bans.setdefault(self._fold(p[1]), []).append((p[2], p[3] if len(p) > 3 else ""))

    def _on_ban_end(self, conn: _Conn, msg: P.Message) -> None:
        if len(msg.params) >= 2:
            bans = conn.bans.pop(self._fold(msg.params[1]), [])
            self._emit(BanList(msg.params[1], tuple(bans)))

    def _on_list_start(self, conn: _Conn, msg: P.Message) -> None:
        conn.listing = []

    def _on_list(self, conn: _Conn, msg: P.Message) -> None:
        p = msg.params  # me #room users :topic
        if len(p) < 3:
            return
        if conn.listing is None:
            conn.listing = []  # 321 is optional (the modern docs)
        if len(conn.listing) >= LIST_MAX:
            conn.list_cut = True
            return
        users = int(p[2]) if p[2].isdigit() else 0
        topic = _LIST_MODES.sub("", p[3], count=1) if len(p) > 3 else ""
        conn.listing.append(RoomInfo(p[1], users, topic))

    def _on_list_end(self, conn: _Conn, msg: P.Message) -> None:
        rooms, conn.listing = conn.listing or [], None
        cut, conn.list_cut = conn.list_cut, False
        rooms.sort(key=lambda r: (-r.users, self._fold(r.name)))
        self._emit(RoomList(tuple(rooms), complete=not cut))

    def _on_away_reply(self, conn: _Conn, msg: P.Message) -> None:
        p = msg.params  # me nick :text
        if len(p) < 3:
            return
        nick, text = p[1], p[2]
        key = self._fold(nick)
        if key in conn.whois:
            conn.whois[key].append(f"Away: {text}")
            return
        # The server answers every message to an away user with 301: say it once per text.
        if conn.away_shown.get(key) != text:
            conn.away_shown[key] = text
            self._emit(Away(nick, text))

    def _on_away_state(self, conn: _Conn, msg: P.Message) -> None:
        self._emit(AwayChanged(msg.command == P.RPL_NOWAWAY))

    def _on_whois_part(self, conn: _Conn, msg: P.Message) -> None:
        p = msg.params
        if len(p) < 3:
            return
        fact = _whois_fact(msg.command, p[2:], self._info)
        if fact:
            conn.whois.setdefault(self._fold(p[1]), []).append(fact)

    def _on_whois_end(self, conn: _Conn, msg: P.Message) -> None:
        p = msg.params
        if len(p) < 2:
            return
        facts = conn.whois.pop(self._fold(p[1]), None)
        if facts is not None:  # None: the nick is unknown, and the 401 before said so
            self._emit(Whois(p[1], tuple(facts)))

    def _error_numeric(self, conn: _Conn, msg: P.Message) -> None:
        code = msg.command
        params = msg.params[1:]  # drop our nick
        room = self._room(params[0]) if len(params) >= 2 else None
        with self._lock:
            refused_join = room is not None and not room.joined and not room.leaving
        if code.startswith("4") and room is not None and refused_join:
            text = wording.join_refused(code, room.name, params[-1])
            key = self._fold(room.name)
            if key in conn.join_waiting:  # our own JOIN after (re)connecting
                self._join_answered(conn, room)
                if (conn.first and key == self._fold(self.room)
                        and not self._ever_joined):
                    # The room the user asked for at the login: the login says why.
                    message = f"The server would not let you into {room.name}: {text}."
                    conn.failure = _Failure(LoginKind.JOIN_REFUSED, message)
                    return
                self._refuse(room, text)
                return
            with self._lock:
                user_join, room.user_join = room.user_join, False
            if user_join:
                if room.ever_joined:  # after a kick: kept, to try again
                    self._emit(ServerError(code, f"You could not join {room.name} again: "
                                                 f"{text}."))
                else:
                    self._refuse(room, text)
                return
        self._emit(ServerError(code, _friendly_error(code, params)))

    _HANDLERS: ClassVar[dict[str, Callable[[ChatSession, _Conn, P.Message], None]]] = {
        "JOIN": _on_join, "PART": _on_part, "KICK": _on_kick, "QUIT": _on_quit,
        "NICK": _on_nick, "PRIVMSG": _on_privmsg, "NOTICE": _on_privmsg, "TOPIC": _on_topic,
        "MODE": _on_mode, P.RPL_TOPIC: _on_rpl_topic, P.RPL_NOTOPIC: _on_rpl_topic,
        P.RPL_NAMREPLY: _on_namreply, P.RPL_ENDOFNAMES: _on_endofnames,
        P.RPL_ENDOFMOTD: _on_motd_end, P.ERR_NOMOTD: _on_motd_end, P.RPL_MOTD: _on_motd,
        P.RPL_ISUPPORT: _on_isupport, RPL_VISIBLEHOST: _on_visible_host,
        "FAIL": _on_fail, "WARN": _on_fail, "NOTE": _on_fail, "ACK": _on_ack,
        P.RPL_AWAY: _on_away_reply, P.RPL_UNAWAY: _on_away_state,
        P.RPL_NOWAWAY: _on_away_state, P.RPL_ENDOFWHOIS: _on_whois_end,
        P.RPL_LISTSTART: _on_list_start, P.RPL_LIST: _on_list, P.RPL_LISTEND: _on_list_end,
        "AWAY": _on_away_notify, P.RPL_WHOREPLY: _on_who_reply, P.RPL_ENDOFWHO: _on_who_end,
        "730": _on_monitor, "731": _on_monitor, "734": _on_monitor_full, "381": _on_oper,
        "MARKREAD": _on_markread, P.RPL_BANLIST: _on_ban_entry, P.RPL_ENDOFBANLIST: _on_ban_end,
        **dict.fromkeys(WHOIS_PARTS, _on_whois_part),
    }


def _whois_fact(code: str, p: tuple[str, ...], info: ServerInfo) -> str | None:
    """One WHOIS reply (its params after "me nick") as a line in words; None to skip."""
    if code == P.RPL_WHOISUSER and len(p) >= 4:
        real = p[3]
        return f"Address: {p[0]}@{p[1]}" + (f" · real name: {real}" if real else "")
    if code == P.RPL_WHOISSERVER and p:
        return f"Connected to {p[0]}" + (f" ({p[1]})" if len(p) > 1 and p[1] else "")
    if code == P.RPL_WHOISIDLE and p and p[0].isdigit():
        fact = f"Idle for {_duration(int(p[0]))}"
        if len(p) > 2 and p[1].isdigit():
            since = time.strftime("%Y-%m-%d %H:%M", time.localtime(int(p[1])))
            fact += f" · online since {since}"
        return fact
    if code == P.RPL_WHOISCHANNELS and p:
        rooms = []
        for entry in p[-1].split():
            i = 0
            while i < len(entry) and entry[i] in info.prefix_symbols:
                i += 1
            rank = _RANKS.get(entry[:1]) if i else None
            rooms.append(entry[i:] + (f" ({rank})" if rank else ""))
        return "In rooms: " + ", ".join(rooms) if rooms else None
    if code == P.RPL_WHOISACCOUNT and p:
        return f"Logged in as the account {p[0]}"
    if code == RPL_WHOISOPERATOR:
        return "A server operator"
    if code == RPL_WHOISSECURE:
        return "Connected with encryption (TLS)"
    return None


def _duration(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} days"


def close_sessions(sessions: Iterable[ChatSession], timeout: float = 2.0) -> None:
    """Quit every session at once, then wait for all of them within one shared deadline.

    Any thread but the sessions' own; it blocks for up to ``timeout`` seconds (the app
    calls it from the Tk thread after hiding the window).

    Each gets the first part of ``timeout`` to say goodbye (QUIT, and the server closing
    the connection); what is still running then has its socket shut down.
    """
    sessions = list(sessions)
    started = [s for s in sessions if s._started]
    for s in sessions:
        s.quit()
    if not started:
        return
    now = time.monotonic()
    deadline = now + timeout
    polite = now + timeout * 0.6
    for s in started:
        s._net.join(max(0.0, polite - time.monotonic()))
    for s in started:
        if s._net.is_alive():
            s._shutdown_socket()
    for s in started:
        s._net.join(max(0.0, deadline - time.monotonic()))
    for s in started:
        s._stop_sender()
    for s in started:
        s._sender.join(max(0.05, deadline - time.monotonic()))




def _stamp(when: float) -> str:
    """A server-time timestamp (UTC, milliseconds) for ``when`` (seconds)."""
    ms = int(round(when * 1000))
    return P.format_time(ms)


def _msg_time(msg: P.Message) -> float:
    """When the server says ``msg`` happened (its ``time`` tag), else now."""
    stamp = msg.tags.get("time")
    if stamp:
        try:
            return datetime.fromisoformat(stamp).timestamp()
        except ValueError:
            pass
    return time.time()

