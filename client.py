"""The desktop chat client: ChatSession (network, no Tk) and the Tk application on top of it.

Threads and who owns what:

* :class:`ChatSession` is the only code that speaks the protocol, through :mod:`protocol`.
  Its *network* thread connects, registers (PASS/NICK/USER), joins the room and then reads:
  every server line becomes a typed event (the dataclasses below) on ``session.events``, a
  bounded :class:`queue.Queue`.  Incoming bytes are decoded leniently (invalid UTF-8 becomes
  U+FFFD, over-long lines are still read), because a line we drop can leave the member list
  wrong for good.  It answers PING itself, sends PING when the server goes quiet, and when
  a registered connection drops it reconnects with exponential backoff and jitter, under
  the same name, into the same room.  What the server's RPL_ISUPPORT (005) says (member
  prefixes, which modes take parameters, the casemapping, NICKLEN, TOPICLEN) is kept in a
  :class:`ServerInfo`, with the spec's defaults for what it leaves out.
* Its *sender* thread does the writes the caller asks for.  The public ``send_*`` methods
  only format a line and put it on a bounded outgoing queue, so the caller (the Tk thread)
  never waits for the network; a full queue is refused, not waited on.
* The member list of the room (and so the count) lives in the session, guarded by a lock,
  and is kept exact from NAMES (353...366) and every JOIN/PART/QUIT/NICK/KICK/MODE; each
  event that changes it carries a snapshot, so the GUI never reads shared state.
* :class:`ChatApp` is the Tk application: a :class:`LoginView` and a :class:`ChatView`,
  switched in one window.  It is the only thread that touches widgets: it polls the
  session's queue with ``after()`` every 50 ms and handles at most a batch of events per
  tick, inserting the resulting lines with one ``Text.insert`` call, applying only the
  newest member snapshot, and trimming the scrollback, so a flood neither freezes the
  window nor grows memory without bound.  Text is always inserted with its tags at insert
  time; no index is ever computed from a Python string offset (Tk 8.6 counts a character
  above U+FFFF as two), and text read from Tk is normalised (a lone surrogate becomes
  U+FFFD) before it reaches the session.  The same tick runs the reconnect countdown and
  picks up a SIGINT/SIGTERM (the signal handler only sets a flag).

IRC does not echo your own PRIVMSG back, so the GUI shows your line at once, locally.

``python client.py --help`` lists the options.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import enum
import errno
import logging
import math
import queue
import random
import re
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import protocol as P
from protocol import ProtocolError

log = logging.getLogger("chat.client")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1027
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
_NICK_ERRORS = frozenset({"400", "432", "433", "436", "437", "484"})
ERR_UNAVAILRESOURCE = "437"  # nick (or room) temporarily unavailable
RPL_VISIBLEHOST = "396"  # "<nick> <host> :is now your displayed host"
# mIRC formatting: bold, colour (with up to two numbers), hex colour, reset, reverse,
# italics, strikethrough, monospace, underline.
_FORMATTING_RE = re.compile(
    r"\x03(?:\d{1,2}(?:,\d{1,2})?)?|\x04(?:[0-9a-fA-F]{6}(?:,[0-9a-fA-F]{6})?)?"
    r"|[\x02\x0f\x11\x16\x1d\x1e\x1f]")


def strip_formatting(text: str) -> str:
    """Remove mIRC colour and formatting codes (shown as boxes or nothing otherwise)."""
    if not any(c in text for c in "\x02\x03\x04\x0f\x11\x16\x1d\x1e\x1f"):
        return text
    return _FORMATTING_RE.sub("", text)


def clean_text(text: str) -> str:
    """Text from Tk made safe to encode: surrogate pairs joined, lone surrogates to U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")

# --- events ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """Everything the session puts on its queue derives from this."""


@dataclass(frozen=True)
class Registered(Event):
    """The server accepted us (001).  ``nick`` is the name it gave us."""

    nick: str
    server: str


@dataclass(frozen=True)
class Joined(Event):
    """We are in ``room``; ``rejoined`` after a reconnect."""

    room: str
    nick: str
    rejoined: bool = False


@dataclass(frozen=True)
class Left(Event):
    """We are no longer in ``room``: we parted, or ``kicked_by`` removed us."""

    room: str
    reason: str = ""
    kicked_by: str | None = None


@dataclass(frozen=True)
class Message(Event):
    """A PRIVMSG or NOTICE to the room (``private`` False) or to us (``private`` True)."""

    sender: str
    target: str
    text: str
    private: bool = False
    action: bool = False
    notice: bool = False
    time: float = field(default_factory=time.time)


@dataclass(frozen=True)
class UserJoined(Event):
    room: str
    nick: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class UserLeft(Event):
    """Someone parted the room, or was kicked from it (``kicked_by``)."""

    room: str
    nick: str
    reason: str
    members: tuple[str, ...]
    kicked_by: str | None = None


@dataclass(frozen=True)
class UserQuit(Event):
    nick: str
    reason: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class UserRenamed(Event):
    """``old`` is now ``new``; ``is_self`` when it is us."""

    old: str
    new: str
    is_self: bool
    members: tuple[str, ...]


@dataclass(frozen=True)
class Names(Event):
    """The full member list of ``room`` (after 353...366, or after a mode change)."""

    room: str
    members: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.members)


@dataclass(frozen=True)
class Topic(Event):
    """The room topic ("" for none); ``by`` is set when someone just changed it."""

    room: str
    text: str
    by: str | None = None


@dataclass(frozen=True)
class Notice(Event):
    """Something from the server worth showing (MOTD, server notices, mode changes)."""

    text: str
    source: str | None = None


@dataclass(frozen=True)
class ServerError(Event):
    """An error reply after registration, in words (``code`` is the numeric)."""

    code: str
    text: str


class LoginKind(str, enum.Enum):
    BAD_NICK = "bad_nick"
    NICK_TAKEN = "nick_taken"
    BAD_PASSWORD = "bad_password"
    REFUSED = "refused"  # nothing listening, or the server turned us away (ERROR)
    UNREACHABLE = "unreachable"  # unknown host, no route, no answer
    JOIN_REFUSED = "join_refused"


@dataclass(frozen=True)
class LoginFailed(Event):
    """We could not get (back) into the room; ``message`` says why and what to do.  Final."""

    kind: LoginKind
    message: str


@dataclass(frozen=True)
class Disconnected(Event):
    """A registered connection ended; ``will_retry`` when a reconnect follows."""

    reason: str
    will_retry: bool


@dataclass(frozen=True)
class Reconnecting(Event):
    """The next connection attempt starts after ``delay`` seconds.

    ``name_in_use`` when the last attempt failed because our name is taken (433/437),
    typically by our own old connection that the server has not dropped yet.
    """

    attempt: int
    delay: float
    reason: str
    name_in_use: bool = False


@dataclass(frozen=True)
class Closed(Event):
    """The session has ended for good; no more events follow."""



# --- the session -----------------------------------------------------------------------


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


_RFC1459_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ[]\\~",
                              "abcdefghijklmnopqrstuvwxyz{}|^")
_STRICT_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ[]\\",
                             "abcdefghijklmnopqrstuvwxyz{}|")
_PREFIX_RE = re.compile(r"\(([^)]*)\)(.*)\Z")


@dataclass(frozen=True)
class ServerInfo:
    """What the server announced in RPL_ISUPPORT (005); the spec's defaults otherwise.

    ``prefix_modes``/``prefix_symbols`` pair up (``o`` with ``@``) from highest rank to
    lowest; ``chanmodes`` are CHANMODES' four groups (A list, B always a parameter, C a
    parameter when set, D never).  ``nicklen``/``topiclen`` are None when not announced.
    """

    prefix_modes: str = "ov"
    prefix_symbols: str = "@+"
    chanmodes: tuple[str, str, str, str] = ("beI", "k", "l", "imnpst")
    casemapping: str = "rfc1459"
    nicklen: int | None = None
    topiclen: int | None = None

    def fold(self, name: str) -> str:
        """``name`` folded with the server's casemapping, for comparing nicks and rooms."""
        if self.casemapping == "ascii":
            return P.casefold(name)
        if self.casemapping == "rfc1459":
            return name.translate(_RFC1459_FOLD)
        if self.casemapping == "strict-rfc1459":
            return name.translate(_STRICT_FOLD)
        return name.lower()  # e.g. rfc7613: Unicode-aware

    def updated(self, tokens: Iterable[str]) -> ServerInfo:
        """This info with the 005 ``tokens`` (``KEY=value``, ``KEY`` or ``-KEY``) applied."""
        default = ServerInfo()
        changes: dict[str, Any] = {}
        for token in tokens:
            negate = token.startswith("-")
            key, _, value = token.lstrip("-").partition("=")
            key = key.upper()
            if key == "PREFIX":
                modes, symbols = default.prefix_modes, default.prefix_symbols
                if not negate:
                    m = _PREFIX_RE.match(value)
                    if value == "":
                        modes = symbols = ""
                    elif m and len(m[1]) == len(m[2]):
                        modes, symbols = m[1], m[2]
                    else:
                        continue  # malformed: keep what we had
                changes["prefix_modes"], changes["prefix_symbols"] = modes, symbols
            elif key == "CHANMODES":
                groups = default.chanmodes
                if not negate and value:
                    parts = (value.split(",") + ["", "", "", ""])[:4]
                    groups = (parts[0], parts[1], parts[2], parts[3])
                changes["chanmodes"] = groups
            elif key == "CASEMAPPING":
                changes["casemapping"] = (value.lower() if value and not negate
                                          else default.casemapping)
            elif key in ("NICKLEN", "TOPICLEN"):
                number = int(value) if value.isdigit() and int(value) > 0 else None
                changes[key.lower()] = None if negate else number
        return dataclasses.replace(self, **changes) if changes else self

    def split_member(self, entry: str) -> tuple[str, str]:
        """A NAMES entry '@+nick!user@host' -> ('nick', '@+')."""
        i = 0
        while i < len(entry) and entry[i] in self.prefix_symbols:
            i += 1
        return entry[i:].split("!", 1)[0], entry[:i]

    def rank(self, prefixes: str) -> int:
        """Sort position of a member: highest prefix first, no prefix last."""
        if prefixes and prefixes[0] in self.prefix_symbols:
            return self.prefix_symbols.index(prefixes[0])
        return len(self.prefix_symbols)

    def ordered(self, symbols: Iterable[str]) -> str:
        """``symbols`` as a prefix string, highest first (unknown ones dropped)."""
        have = set(symbols)
        return "".join(c for c in self.prefix_symbols if c in have)


class _Members:
    """A room's members by folded nick, with their display order kept up to date.

    The order (highest prefix first, then by name) is updated in place for one change
    (a join, a quit, a rename), so a busy room of thousands does not cost a full sort
    per event; it is rebuilt only after a new NAMES list or a new casemapping.
    """

    def __init__(self, info: ServerInfo) -> None:
        self.info = info
        self._by_key: dict[str, tuple[str, str]] = {}  # folded nick -> (nick, prefixes)
        self._order: list[tuple[int, str, str]] | None = []  # (rank, folded, shown)

    def __len__(self) -> int:
        return len(self._by_key)

    def _item(self, nick: str, prefixes: str) -> tuple[int, str, str]:
        return self.info.rank(prefixes), self.info.fold(nick), prefixes[:1] + nick

    def get(self, nick: str) -> tuple[str, str] | None:
        return self._by_key.get(self.info.fold(nick))

    def put(self, nick: str, prefixes: str) -> None:
        self.pop(nick)
        self._by_key[self.info.fold(nick)] = (nick, prefixes)
        if self._order is not None:
            bisect.insort(self._order, self._item(nick, prefixes))

    def pop(self, nick: str) -> tuple[str, str] | None:
        entry = self._by_key.pop(self.info.fold(nick), None)
        if entry is not None and self._order is not None:
            item = self._item(*entry)
            i = bisect.bisect_left(self._order, item)
            if i < len(self._order) and self._order[i] == item:
                del self._order[i]
            else:
                self._order = None
        return entry

    def replace(self, entries: Iterable[tuple[str, str]], info: ServerInfo | None = None
                ) -> None:
        """Start over with ``entries`` ((nick, prefixes) pairs), under ``info`` if given."""
        if info is not None:
            self.info = info
        self._by_key = {self.info.fold(n): (n, p) for n, p in entries}
        self._order = None

    def entries(self) -> list[tuple[str, str]]:
        return list(self._by_key.values())

    def snapshot(self) -> tuple[str, ...]:
        if self._order is None:
            self._order = sorted(self._item(n, p) for n, p in self._by_key.values())
        return tuple(shown for _, _, shown in self._order)


class _Outcome(enum.Enum):
    FATAL = "fatal"  # told the user (LoginFailed); do not retry
    RETRY = "retry"  # did not get in, or not for long: try again after a longer wait
    DROPPED = "dropped"  # was in the room a good while: start the backoff afresh


class _Failure(Exception):
    def __init__(self, kind: LoginKind, message: str, retry: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry = retry  # worth another connection (a timeout, not a refusal)


class _Cancelled(OSError):
    """quit() was called while connecting."""


class _Conn:
    """What one connection has seen so far (the network thread's private state)."""

    def __init__(self, sock: socket.socket, first: bool) -> None:
        self.sock = sock
        self.first = first
        self.registered = False
        self.join_sent = False
        self.join_deadline: float | None = None  # set while our automatic JOIN is pending
        self.joined_at: float | None = None  # monotonic time our JOIN came back
        self.error: str | None = None  # text of the server's ERROR line
        self.failure: _Failure | None = None
        self.names: dict[str, dict[str, tuple[str, str]]] = {}


def _nick_of(source: str | None) -> str:
    return (source or "").split("!", 1)[0]


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
    if arg:
        return f"{arg}: {text}"
    return text or f"Error {code}"


class ChatSession:
    """One user in one room on one server: connection, registration, events, sending.

    Create it, call :meth:`start`, then read events from :attr:`events`.  The ``send_*``
    methods return True when the line was queued and False when it cannot be sent now
    (not in the room, or too much already waiting); they never block.  :meth:`quit`
    says goodbye; :meth:`close` also waits for the threads to end (:func:`close_sessions`
    does that for several sessions at once).
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
                 max_events: int = 20000, max_outgoing: int = 1000) -> None:
        self.host = host
        self.port = port
        self.room = room
        self.password = password or None
        self.reconnect = reconnect
        self.backoff = backoff or Backoff()
        self.connect_timeout = connect_timeout
        self.register_timeout = register_timeout
        self.join_timeout = join_timeout
        self.keepalive = keepalive
        self.username = P.sanitize_user(username or nick, P.USERLEN - 1) or "chat"
        self.realname = realname
        self.events: queue.Queue[Event] = queue.Queue(maxsize=max_events)
        self._out: queue.Queue[tuple[int, bytes] | None] = queue.Queue(maxsize=max_outgoing)
        self._lock = threading.Lock()  # guards the fields below
        self._nick = nick
        self._state = "idle"
        self._sock: socket.socket | None = None
        self._gen = 0  # connection number; queued lines of an older connection are dropped
        self._info = ServerInfo()  # replaced (never changed) as 005 lines arrive
        self._members = _Members(self._info)
        self._in_room = False
        self._userhost: str | None = None  # our "user@host" as the server relays it
        self._user_join = False  # the user asked to join again (after a kick)
        self._wlock = threading.Lock()  # one writer on the socket at a time
        self._stop = threading.Event()
        self._ever_registered = False
        self._ever_joined = False
        self._motd_shown = False
        self._started = False
        self._taken_tries = 0
        self._ctcp_tokens = float(self.CTCP_BURST)
        self._ctcp_at = time.monotonic()
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
        with self._lock:
            return self._in_room

    @property
    def members(self) -> tuple[str, ...]:
        """The room's members as shown (highest prefix first: ``@`` operators, ``+``, ...)."""
        with self._lock:
            return self._snapshot()

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._members)

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
        """Leave the room (PART, so room-mates see you leave) and then the server."""
        if not self._stop.is_set():
            self._queue_line("PART", self.room, P.truncate_text(clean_text(reason), 300))
        self.quit(reason)

    def close(self, timeout: float = 2.0) -> None:
        """Quit if not done yet, wait for the server to close, then end both threads."""
        close_sessions([self], timeout)

    # --- sending (any thread; never blocks) ------------------------------------------

    def send_message(self, text: str) -> bool:
        """Say ``text`` in the room.  Long text goes as several lines; newlines split it."""
        return self._say(self.room, text, action=False)

    def send_action(self, text: str) -> bool:
        """``/me text``: a CTCP ACTION to the room."""
        return self._say(self.room, text, action=True)

    def send_private(self, nick: str, text: str) -> bool:
        """A private message to ``nick``."""
        if not P.valid_nick(nick, self.nicklen):
            return False
        return self._say(nick, text, action=False)

    def change_nick(self, new: str) -> bool:
        """Ask for a new name; a UserRenamed event (or a ServerError) follows."""
        return (self._connected() and P.valid_nick(new, self.nicklen)
                and self._queue_line("NICK", new))

    def set_topic(self, text: str) -> bool:
        """Set the room topic (cut to the server's TOPICLEN, as the server would)."""
        text = P.strip_bad(clean_text(text))
        return self._in_room_now() and self._queue_line(
            "TOPIC", self.room, P.truncate_text(text, self.topiclen or P.TOPICLEN))

    def request_topic(self) -> bool:
        return self._in_room_now() and self._queue_line("TOPIC", self.room)

    def request_names(self) -> bool:
        """Ask for the member list again; a Names event follows."""
        return self._in_room_now() and self._queue_line("NAMES", self.room)

    def rejoin(self) -> bool:
        """Join the room again after being removed; a Joined event (or ServerError) follows."""
        with self._lock:
            if (self._in_room or self._state not in ("joining", "joined")
                    or self._stop.is_set()):
                return False
            self._user_join = True
        return self._queue_line("JOIN", self.room)

    def _connected(self) -> bool:
        with self._lock:
            return self._state in ("joining", "joined") and not self._stop.is_set()

    def _in_room_now(self) -> bool:
        with self._lock:
            return self._in_room and not self._stop.is_set()

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
        if not self._in_room_now():
            return False
        budget = self._relay_budget(target, action)
        text = clean_text(text)
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if not any(ln.strip() for ln in lines):
            return False
        out: list[bytes] = []
        try:
            for ln in lines:
                if not ln.strip():
                    continue
                for piece in split_text(ln.replace("\x00", ""), budget):
                    body = f"\x01ACTION {piece}\x01" if action else piece
                    out.append(P.format_line(None, "PRIVMSG", target, body))
        except (ProtocolError, UnicodeError):
            return False
        return self._queue_bytes(b"".join(out))

    def _queue_line(self, command: str, *params: str) -> bool:
        try:
            data = P.format_line(None, command, *params)
        except (ProtocolError, UnicodeError):
            return False
        return self._queue_bytes(data)

    def _queue_bytes(self, data: bytes) -> bool:
        with self._lock:
            if self._sock is None or self._state not in ("joining", "joined"):
                return False
            gen = self._gen
        try:
            self._out.put_nowait((gen, data))
        except queue.Full:
            return False
        return True

    def _send_loop(self) -> None:
        while True:
            item = self._out.get()
            if item is None:
                return
            gen, data = item
            with self._lock:
                sock = self._sock if gen == self._gen else None
            if sock is None:
                continue
            try:
                with self._wlock:
                    sock.sendall(data)
            except OSError:
                _shutdown(sock)  # the network thread sees it and reconnects

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
        try:
            with self._wlock:
                conn.sock.sendall(data)
        except OSError:
            _shutdown(conn.sock)

    def _shutdown_socket(self) -> None:
        with self._lock:
            sock = self._sock
        if sock is not None:
            _shutdown(sock)

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

    def _snapshot(self) -> tuple[str, ...]:
        """Members as displayed.  Caller holds ``_lock``."""
        return self._members.snapshot()

    def _set_state(self, state: str) -> None:
        with self._lock:
            self._state = state

    def _fold(self, name: str) -> str:
        return self._info.fold(name)

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
                self._emit(LoginFailed(kind, text))
                return _Outcome.FATAL, text
            return _Outcome.RETRY, text
        conn = _Conn(sock, first)
        with self._lock:
            self._state = "registering"
            self._info = ServerInfo()  # this server's 005 lines will say
            self._members.replace((), self._info)
            self._userhost = None
            self._user_join = False
        try:
            return self._serve(conn)
        finally:
            with self._lock:
                self._sock = None
                self._in_room = False
                self._members.replace(())
            _shutdown(sock)
            sock.close()

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
        hello = []
        if self.password:
            hello.append(P.format_line(None, "PASS", self.password))
        hello.append(P.format_line(None, "NICK", self.nick))
        hello.append(P.format_line(None, "USER", self.username, "0", "*", self.realname))
        self._write_now(conn, b"".join(hello))
        splitter = P.LineSplitter(_MAX_INCOMING)
        register_by = time.monotonic() + self.register_timeout
        heard = time.monotonic()  # when the server last sent anything
        ping_sent: float | None = None
        reason = ""
        while conn.failure is None:
            now = time.monotonic()
            if not conn.registered:
                due = register_by
            else:
                due = (ping_sent if ping_sent is not None else heard) + self.keepalive
                if conn.join_deadline is not None:
                    due = min(due, conn.join_deadline)
            data: bytes | None = None
            if due > now:
                sock.settimeout(due - now)
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    data = None
                except OSError as exc:
                    reason = conn.error or _os_reason(exc)
                    break
            if data is None:  # a deadline passed
                now = time.monotonic()
                if not conn.registered:
                    conn.failure = _Failure(LoginKind.UNREACHABLE, (
                        f"{self.host}:{self.port} accepted the connection but did not answer "
                        f"as a chat server. Check the port."))
                elif conn.join_deadline is not None and now >= conn.join_deadline:
                    conn.failure = _Failure(LoginKind.JOIN_REFUSED, (
                        f"The server did not answer when asked to join {self.room}. "
                        f"Try again later."), retry=True)
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
            for raw in splitter.feed(data):
                if raw is P.TOO_LONG:
                    continue
                assert isinstance(raw, bytes)
                msg = parse_incoming(raw)
                if msg is not None:
                    self._dispatch(conn, msg)
                if conn.failure is not None:
                    break
        return self._finish(conn, reason)

    def _finish(self, conn: _Conn, reason: str) -> tuple[_Outcome, str]:
        stopping = self._stop.is_set()
        if not conn.registered:
            failure = conn.failure
            if failure is None:
                text = conn.error or reason or "The server closed the connection"
                failure = _Failure(LoginKind.REFUSED, f"The server turned us away: {text}.")
            retryable = failure.kind in (LoginKind.NICK_TAKEN, LoginKind.REFUSED,
                                         LoginKind.UNREACHABLE)
            if stopping:
                return _Outcome.FATAL, failure.message
            if conn.first or not retryable:
                self._emit(LoginFailed(failure.kind, failure.message))
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
                self._emit(LoginFailed(failure.kind, failure.message))
            return _Outcome.FATAL, failure.message
        self._emit(Disconnected(reason, will_retry=self.reconnect and not stopping))
        # Start the backoff afresh only after a connection that stayed up a while; a server
        # that drops us right after the join must not be hammered at the shortest delay.
        stable = (conn.joined_at is not None
                  and time.monotonic() - conn.joined_at >= self.STABLE_AFTER)
        return (_Outcome.DROPPED if stable else _Outcome.RETRY), reason

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
        if cmd == "PING":
            self._write_now(conn, P.format_line(None, "PONG", p[0] if p else "ping"))
            return
        if cmd == "ERROR":
            conn.error = p[0] if p else "Closing link"
            if not conn.registered and conn.failure is None:
                conn.failure = _Failure(LoginKind.REFUSED, (
                    f"The server closed the connection: {conn.error}. Try again later."))
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
        if cmd == P.RPL_WELCOME:
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
            self._emit(Registered(given, _nick_of(msg.source)))
        elif cmd in (P.ERR_NICKNAMEINUSE, ERR_UNAVAILRESOURCE):
            conn.failure = _Failure(LoginKind.NICK_TAKEN, (
                f"The name “{nick}” is already taken. Choose another name and join again."))
        elif cmd in (P.ERR_ERRONEUSNICKNAME, P.ERR_NONICKNAMEGIVEN):
            conn.failure = _Failure(LoginKind.BAD_NICK, (
                f"The server does not accept the name “{nick}”. Choose another name "
                f"(letters, digits and -[]\\`_^{{|}}, not starting with a digit)."))
        elif cmd == P.ERR_PASSWDMISMATCH:
            if self.password:
                text = "The server refused the password. Check it and join again."
            else:
                text = "This server needs a password. Enter it and join again."
            conn.failure = _Failure(LoginKind.BAD_PASSWORD, text)

    def _is_me(self, nick: str) -> bool:
        return self._fold(nick) == self._fold(self.nick)

    def _is_room(self, name: str) -> bool:
        return self._fold(name) == self._fold(self.room)

    def _on_isupport(self, conn: _Conn, msg: P.Message) -> None:
        tokens = list(msg.params[1:])
        if tokens and " " in tokens[-1]:
            tokens.pop()  # "are supported by this server"
        info = self._info.updated(tokens)
        with self._lock:
            self._info = info
            self._members.replace(self._members.entries(), info)

    def _on_visible_host(self, conn: _Conn, msg: P.Message) -> None:
        """396: the server shows us under another host from now on."""
        if len(msg.params) >= 2:
            with self._lock:
                if self._userhost:
                    user = self._userhost.split("@", 1)[0]
                    self._userhost = f"{user}@{msg.params[1]}"

    def _on_motd_end(self, conn: _Conn, msg: P.Message) -> None:
        """376/422 end the welcome: now join (once per connection)."""
        if conn.join_sent or self._stop.is_set():
            return
        conn.join_sent = True
        conn.join_deadline = time.monotonic() + self.join_timeout
        self._motd_shown = True
        self._write_now(conn, P.format_line(None, "JOIN", self.room))

    def _on_motd(self, conn: _Conn, msg: P.Message) -> None:
        if not self._motd_shown and msg.params:
            self._emit(Notice(msg.params[-1].removeprefix("- "), _nick_of(msg.source)))

    def _on_join(self, conn: _Conn, msg: P.Message) -> None:
        if not msg.params or not self._is_room(msg.params[0]):
            return
        nick = _nick_of(msg.source)
        if self._is_me(nick):
            with self._lock:
                self._in_room = True
                self._state = "joined"
                self._members.replace([(nick, "")])
                self._userhost = _userhost_of(msg.source) or self._userhost
                self._user_join = False
            conn.names.pop(self._fold(self.room), None)
            conn.join_deadline = None
            rejoined = self._ever_joined
            self._ever_joined = True
            conn.joined_at = time.monotonic()
            self._emit(Joined(msg.params[0], nick, rejoined))
            return
        with self._lock:
            self._members.put(nick, "")
            snap = self._snapshot()
        self._emit(UserJoined(msg.params[0], nick, snap))

    def _on_part(self, conn: _Conn, msg: P.Message) -> None:
        if not msg.params or not self._is_room(msg.params[0]):
            return
        nick = _nick_of(msg.source)
        reason = msg.params[1] if len(msg.params) > 1 else ""
        self._remove(msg.params[0], nick, reason, None)

    def _on_kick(self, conn: _Conn, msg: P.Message) -> None:
        if len(msg.params) < 2 or not self._is_room(msg.params[0]):
            return
        reason = msg.params[2] if len(msg.params) > 2 else ""
        self._remove(msg.params[0], msg.params[1], reason, _nick_of(msg.source))

    def _remove(self, room: str, nick: str, reason: str, by: str | None) -> None:
        if self._is_me(nick):
            with self._lock:
                self._in_room = False
                self._members.replace(())
            self._emit(Left(room, reason, by))
            return
        with self._lock:
            if self._members.pop(nick) is None:
                return
            snap = self._snapshot()
        self._emit(UserLeft(room, nick, reason, snap, by))

    def _on_quit(self, conn: _Conn, msg: P.Message) -> None:
        nick = _nick_of(msg.source)
        with self._lock:
            if self._members.pop(nick) is None:
                return
            snap = self._snapshot()
        self._emit(UserQuit(nick, msg.params[0] if msg.params else "", snap))

    def _on_nick(self, conn: _Conn, msg: P.Message) -> None:
        if not msg.params:
            return
        old, new = _nick_of(msg.source), msg.params[0]
        with self._lock:
            is_self = self._fold(old) == self._fold(self._nick)
            if is_self:
                self._nick = new
            entry = self._members.pop(old)
            if entry is not None:
                self._members.put(new, entry[1])
            elif not is_self:
                return  # not someone we share the room with
            snap = self._snapshot()
        self._emit(UserRenamed(old, new, is_self, snap))

    def _on_privmsg(self, conn: _Conn, msg: P.Message) -> None:
        if len(msg.params) < 2:
            return
        notice = msg.command == "NOTICE"
        target, text = msg.params[0], msg.params[1]
        source = msg.source or ""
        sender = _nick_of(source)
        if "!" not in source and ("." in source or not source):
            self._emit(Notice(text, sender or None))  # from the server itself
            return
        action = False
        if text.startswith("\x01"):
            ctcp = text.strip("\x01")
            word, _, arg = ctcp.partition(" ")
            word = word.upper()
            if word == "ACTION":
                action, text = True, arg
            else:
                if not notice:
                    self._answer_ctcp(conn, sender, word, arg)
                return
        bare = target.lstrip(self._info.prefix_symbols)
        if P.is_channel(bare):
            if not self._is_room(bare):
                return
            private = False
        else:
            private = True
        self._emit(Message(sender, target, text, private, action, notice, _msg_time(msg)))

    def _ctcp_allowed(self) -> bool:
        """A token bucket, so a flood of CTCP requests cannot make us flood the server."""
        now = time.monotonic()
        self._ctcp_tokens = min(float(self.CTCP_BURST),
                                self._ctcp_tokens + (now - self._ctcp_at) / self.CTCP_EVERY)
        self._ctcp_at = now
        if self._ctcp_tokens < 1.0:
            return False
        self._ctcp_tokens -= 1.0
        return True

    def _answer_ctcp(self, conn: _Conn, sender: str, word: str, arg: str) -> None:
        answers = {"VERSION": "chatroom desktop client 0.1", "PING": arg,
                   "TIME": time.strftime("%a %b %d %H:%M:%S %Y"),
                   "CLIENTINFO": "ACTION CLIENTINFO PING TIME VERSION"}
        if word in answers and P.valid_nick(sender, 64) and self._ctcp_allowed():
            body = f"\x01{word} {answers[word]}\x01".replace(" \x01", "\x01")
            try:
                self._write_now(conn, P.format_line(None, "NOTICE", sender, body))
            except (ProtocolError, UnicodeError):
                pass

    def _on_topic(self, conn: _Conn, msg: P.Message) -> None:
        if msg.params and self._is_room(msg.params[0]):
            text = msg.params[1] if len(msg.params) > 1 else ""
            self._emit(Topic(msg.params[0], text, _nick_of(msg.source)))

    def _on_rpl_topic(self, conn: _Conn, msg: P.Message) -> None:
        p = msg.params
        if len(p) >= 2:
            text = p[2] if msg.command == P.RPL_TOPIC and len(p) > 2 else ""
            self._emit(Topic(p[1], text, None))

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
        room = msg.params[1]
        bucket = conn.names.pop(self._fold(room), {})
        if self._is_room(room):
            with self._lock:
                if not self._in_room:
                    return
                self._members.replace(bucket.values())
                snap = self._snapshot()
            self._emit(Names(self.room, snap))
        else:
            other = _Members(self._info)  # another room's list, ordered the same way
            other.replace(bucket.values())
            self._emit(Names(room, other.snapshot()))

    def _on_mode(self, conn: _Conn, msg: P.Message) -> None:
        p = msg.params
        if len(p) < 2 or not self._is_room(p[0]):
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
                    entry = self._members.get(who)
                    if entry is None:
                        continue
                    mark = info.prefix_symbols[info.prefix_modes.index(ch)]
                    have = set(entry[1])
                    if sign == "+":
                        have.add(mark)
                    else:
                        have.discard(mark)
                    self._members.put(entry[0], info.ordered(have))
                    changed = True
                elif args and (ch in list_modes or ch in always
                               or (ch in when_set and sign == "+")):
                    args.pop(0)
            snap = self._snapshot()
        what = " ".join(p[1:])
        self._emit(Notice(f"{_nick_of(msg.source)} sets mode {what}", _nick_of(msg.source)))
        if changed:
            self._emit(Names(self.room, snap))

    def _error_numeric(self, conn: _Conn, msg: P.Message) -> None:
        code = msg.command
        params = msg.params[1:]  # drop our nick
        about_room = len(params) >= 2 and self._is_room(params[0])
        if code.startswith("4") and about_room and not self.in_room:
            text = params[-1] or "refused"
            if conn.join_deadline is not None:  # our own JOIN after (re)connecting
                conn.join_deadline = None
                if self._ever_joined:
                    message = (f"You are connected again, but the server would not let you "
                               f"back into {self.room}: {text}.")
                else:
                    message = f"The server would not let you into {self.room}: {text}."
                conn.failure = _Failure(LoginKind.JOIN_REFUSED, message)
                return
            with self._lock:
                user_join, self._user_join = self._user_join, False
            if user_join:
                self._emit(ServerError(code, f"You could not join {self.room} again: {text}."))
                return
        self._emit(ServerError(code, _friendly_error(code, params)))

    _HANDLERS: ClassVar[dict[str, Callable[[ChatSession, _Conn, P.Message], None]]] = {
        "JOIN": _on_join, "PART": _on_part, "KICK": _on_kick, "QUIT": _on_quit,
        "NICK": _on_nick, "PRIVMSG": _on_privmsg, "NOTICE": _on_privmsg, "TOPIC": _on_topic,
        "MODE": _on_mode, P.RPL_TOPIC: _on_rpl_topic, P.RPL_NOTOPIC: _on_rpl_topic,
        P.RPL_NAMREPLY: _on_namreply, P.RPL_ENDOFNAMES: _on_endofnames,
        P.RPL_ENDOFMOTD: _on_motd_end, P.ERR_NOMOTD: _on_motd_end, P.RPL_MOTD: _on_motd,
        P.RPL_ISUPPORT: _on_isupport, RPL_VISIBLEHOST: _on_visible_host,
    }


def close_sessions(sessions: Iterable[ChatSession], timeout: float = 2.0) -> None:
    """Quit every session at once, then wait for all of them within one shared deadline.

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


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionResetError):
        return "The connection was reset"
    if isinstance(exc, TimeoutError):
        return "The connection timed out"
    return f"Connection error: {exc.strerror or exc}"


def _msg_time(msg: P.Message) -> float:
    stamp = msg.tags.get("time")
    if stamp:
        try:
            return datetime.fromisoformat(stamp).timestamp()
        except ValueError:
            pass
    return time.time()


# --- the Tk application ------------------------------------------------------------------

try:
    import tkinter as tk
    from tkinter import font as tkfont
    from tkinter import ttk
    from tkinter.scrolledtext import ScrolledText
except ImportError:  # the session above works without Tk; the window needs it
    tk = None  # type: ignore[assignment]

HELP = (
    ("/me <action>", "say what you are doing (shown in italics)"),
    ("/msg <name> <text>", "send a private message"),
    ("/nick <name>", "change your name"),
    ("/topic [text]", "show the room topic, or set it"),
    ("/names", "list who is in the room"),
    ("/join", "join the room again (after being removed from it)"),
    ("/quit [reason]", "leave and close the program"),
    ("/help", "this list"),
    ("//text", "send a message that starts with /"),
)

Parts = list[tuple[str, tuple[str, ...]]]


def _style(root: tk.Misc) -> None:
    """Colours and fonts shared by both views (a ttk style is per Tk interpreter)."""
    style = ttk.Style(root)
    if "clam" in style.theme_names():
        style.theme_use("clam")
    base = tkfont.nametofont("TkDefaultFont")
    family, size = base.actual("family"), abs(int(base.actual("size"))) or 10
    style.configure("Heading.TLabel", font=(family, size + 6, "bold"))
    style.configure("Sub.TLabel", foreground="#555555")
    style.configure("Error.TLabel", foreground="#b00020")
    style.configure("Status.TLabel", foreground="#3b5b7a")
    style.configure("Topic.TLabel", background="#fff8e1", foreground="#3d3300",
                    padding=(8, 5))
    style.configure("Banner.TFrame", background="#b3261e")
    style.configure("Banner.TLabel", background="#b3261e", foreground="#ffffff",
                    padding=(8, 4))
    style.configure("Offline.TLabel", foreground="#8a8f98", font=(family, size, "bold"))
    style.configure("Side.TLabel", font=(family, size, "bold"))
    style.configure("Count.TLabel", foreground="#1d6b2f", font=(family, size, "bold"))


class LoginView:
    """Name (focused, Enter joins), host, port, optional password, Join Chat; errors below."""

    MESSAGE_LINES = 4  # room kept for the message, so the form does not move when it changes
    WRAP = 420

    def __init__(self, master: tk.Misc, room: str, host: str, port: int, name: str,
                 on_join: Callable[[], None], on_enter: Callable[[], None]) -> None:
        self.frame = ttk.Frame(master, padding=24)
        self.frame.columnconfigure(0, weight=1)
        self.frame.columnconfigure(2, weight=1)
        self.frame.rowconfigure(0, weight=1)
        self.frame.rowconfigure(2, weight=2)
        form = ttk.Frame(self.frame)
        form.grid(row=1, column=1)
        self.name_var = tk.StringVar(value=name)
        self.host_var = tk.StringVar(value=host)
        self.port_var = tk.StringVar(value=str(port))
        self.password_var = tk.StringVar()
        self.message_var = tk.StringVar()  # an error (red)
        self.status_var = tk.StringVar()  # progress (blue); one of the two shows at a time

        ttk.Label(form, text="Join the chat", style="Heading.TLabel").grid(
            row=0, column=0, columnspan=3, sticky="w")
        self.room_label = ttk.Label(form, text=f"Room {room}", style="Sub.TLabel")
        self.room_label.grid(row=1, column=0, columnspan=3, sticky="w", pady=(0, 14))

        def row(r: int, label: str, widget: tk.Widget, hint: str = "") -> None:
            ttk.Label(form, text=label).grid(row=r, column=0, sticky="w", padx=(0, 10), pady=4)
            widget.grid(row=r, column=1, sticky="ew", pady=4)
            if hint:
                ttk.Label(form, text=hint, style="Sub.TLabel").grid(
                    row=r, column=2, sticky="w", padx=(8, 0))

        self.name_entry = ttk.Entry(form, textvariable=self.name_var, width=28,
                                    exportselection=False)
        self.host_entry = ttk.Entry(form, textvariable=self.host_var, width=28)
        self.port_entry = ttk.Entry(form, textvariable=self.port_var, width=8)
        self.password_entry = ttk.Entry(form, textvariable=self.password_var, width=28,
                                        show="*")
        row(2, "Name", self.name_entry)
        row(3, "Server", self.host_entry)
        ttk.Label(form, text="Port").grid(row=4, column=0, sticky="w", padx=(0, 10), pady=4)
        self.port_entry.grid(row=4, column=1, sticky="w", pady=4)
        row(5, "Password", self.password_entry, "(if the server has one)")
        self.join_button = ttk.Button(form, text="Join Chat", command=on_join)
        self.join_button.grid(row=6, column=1, sticky="w", pady=(12, 6))
        # One label for both, in a row of fixed height and a column of fixed width.
        self.message_label = ttk.Label(form, textvariable=self.status_var,
                                       style="Status.TLabel", wraplength=self.WRAP,
                                       justify="left", anchor="nw")
        self.message_label.grid(row=7, column=0, columnspan=3, sticky="nw")
        font = tkfont.nametofont("TkDefaultFont")
        form.rowconfigure(7, minsize=self.MESSAGE_LINES * font.metrics("linespace") + 4)
        for entry in (self.name_entry, self.host_entry, self.port_entry, self.password_entry):
            entry.bind("<Return>", lambda e: on_enter())
            entry.bind("<KP_Enter>", lambda e: on_enter())

    def values(self) -> tuple[str, str, str, str]:
        return (clean_text(self.name_var.get()).strip(), clean_text(self.host_var.get()).strip(),
                self.port_var.get().strip(), clean_text(self.password_var.get()))

    def show_error(self, text: str) -> None:
        self.status_var.set("")
        self.message_var.set(text)
        self.message_label.configure(textvariable=self.message_var, style="Error.TLabel")

    def show_status(self, text: str) -> None:
        self.message_var.set("")
        self.status_var.set(text)
        self.message_label.configure(textvariable=self.status_var, style="Status.TLabel")

    def set_busy(self, busy: bool) -> None:
        self.join_button.configure(text="Cancel" if busy else "Join Chat")

    def focus_name(self, select: bool = False) -> None:
        self.name_entry.focus_set()
        self.name_entry.icursor("end")
        if select:
            self.name_entry.selection_range(0, "end")


class ChatView:
    """Topic, the scrollback, who is here with the count, the message field, the buttons.

    The scrollback follows new lines while the user has not scrolled up.  Whether it
    follows is decided when the *user* scrolls (wheel, scrollbar, keys, dragging), never
    from the view after a size change: when the topic wraps to more lines or the banner
    appears, the log gets shorter and the newest line must stay in view.
    """

    def __init__(self, master: tk.Misc, scrollback: int, on_send: Callable[[str], bool],
                 on_leave: Callable[[], None], on_exit: Callable[[], None],
                 on_refresh: Callable[[], None]) -> None:
        self.scrollback = scrollback
        self._pending: list[str | tuple[str, ...]] = []
        self.follow = True  # keep the newest line in view
        self.frame = ttk.Frame(master, padding=8)
        f = self.frame
        f.columnconfigure(0, weight=1)
        f.rowconfigure(1, weight=1)
        self.topic_var = tk.StringVar(value="No topic is set")
        self.topic_label = ttk.Label(f, textvariable=self.topic_var, style="Topic.TLabel",
                                     anchor="w")
        self.topic_label.grid(row=0, column=0, columnspan=2, sticky="ew", pady=(0, 6))
        self.topic_label.bind("<Configure>", lambda e: self.topic_label.configure(
            wraplength=max(100, e.width - 20)))

        base = tkfont.nametofont("TkTextFont")
        family, size = base.actual("family"), abs(int(base.actual("size"))) or 10
        self.fonts = {
            "text": tkfont.Font(family=family, size=size + 1),
            "bold": tkfont.Font(family=family, size=size + 1, weight="bold"),
            "italic": tkfont.Font(family=family, size=size + 1, slant="italic"),
            "small": tkfont.Font(family=family, size=size, slant="italic"),
        }
        self.text = ScrolledText(f, wrap="word", width=60, height=20, state="disabled",
                                 font=self.fonts["text"], background="#ffffff",
                                 foreground="#1f2328", padx=8, pady=6, relief="flat",
                                 borderwidth=1, highlightthickness=1,
                                 highlightbackground="#c8ccd2", highlightcolor="#c8ccd2",
                                 spacing1=1, spacing3=1, cursor="arrow")
        self.text.grid(row=1, column=0, sticky="nsew")
        t = self.text
        t.tag_configure("time", foreground="#8a8f98")
        t.tag_configure("nick", foreground="#1d6b2f", font=self.fonts["bold"])
        t.tag_configure("own_nick", foreground="#1c4fa0", font=self.fonts["bold"])
        t.tag_configure("own", background="#eef3fb")
        t.tag_configure("event", foreground="#7a7f87", font=self.fonts["small"])
        t.tag_configure("action", foreground="#6a3d9a", font=self.fonts["italic"])
        t.tag_configure("private", background="#fff4d6", foreground="#6b4200")
        t.tag_configure("private_label", foreground="#a35200", font=self.fonts["bold"])
        t.tag_configure("notice", foreground="#8a5a00")
        t.tag_configure("error", foreground="#b00020")
        t.tag_configure("info", foreground="#3b5b7a")
        # /help: the descriptions start at one tab stop past the longest command.
        indent = 16
        column = indent + max(self.fonts["text"].measure(c) for c, _ in HELP) + 24
        t.tag_configure("help", foreground="#3b5b7a", lmargin1=indent, lmargin2=column,
                        tabs=(column,))
        t.tag_raise("sel")
        # The user's own scrolling decides whether the view follows new lines.
        vbar = getattr(t, "vbar", None)
        if vbar is not None:
            vbar.configure(command=self._scrollbar)
        for seq in ("<Button-4>", "<Button-5>", "<MouseWheel>", "<KeyRelease>",
                    "<B1-Motion>", "<ButtonRelease-1>"):
            t.bind(seq, lambda e: self._user_scrolled(), add="+")
        t.bind("<Configure>", lambda e: self._resized(), add="+")

        side = ttk.Frame(f, padding=(8, 0, 0, 0))
        side.grid(row=1, column=1, sticky="ns")
        side.rowconfigure(1, weight=1)
        self.room_var = tk.StringVar(value="In the room")
        ttk.Label(side, textvariable=self.room_var, style="Side.TLabel").grid(
            row=0, column=0, columnspan=2, sticky="w", pady=(0, 4))
        self.listbox = tk.Listbox(side, width=18, activestyle="none", exportselection=False,
                                  background="#ffffff", foreground="#1f2328",
                                  selectbackground="#dbe6f6", selectforeground="#1f2328",
                                  relief="flat", borderwidth=1, highlightthickness=1,
                                  highlightbackground="#c8ccd2", highlightcolor="#c8ccd2",
                                  font=self.fonts["text"])
        self.listbox.grid(row=1, column=0, sticky="ns")
        bar = ttk.Scrollbar(side, orient="vertical", command=self.listbox.yview)
        bar.grid(row=1, column=1, sticky="ns")
        self.listbox.configure(yscrollcommand=bar.set)
        countrow = ttk.Frame(side)
        countrow.grid(row=2, column=0, columnspan=2, sticky="ew", pady=(6, 0))
        self.count_var = tk.StringVar(value="0 online")
        self.count_label = ttk.Label(countrow, textvariable=self.count_var, style="Count.TLabel")
        self.count_label.pack(side="left")
        self.refresh_button = ttk.Button(countrow, text="Refresh", command=on_refresh, width=8)
        self.refresh_button.pack(side="right")

        self.banner = ttk.Frame(f, style="Banner.TFrame")
        self.conn_var = tk.StringVar()
        self.back_button = ttk.Button(self.banner, text="Back to Login", command=on_leave)
        self.back_button.pack(side="right", padx=4, pady=3)
        self.conn_label = ttk.Label(self.banner, textvariable=self.conn_var,
                                    style="Banner.TLabel", anchor="w", justify="left")
        self.conn_label.pack(side="left", fill="x", expand=True)
        self.conn_label.bind("<Configure>", lambda e: self.conn_label.configure(
            wraplength=max(100, e.width - 16)))
        self.banner.grid(row=2, column=0, columnspan=2, sticky="ew", pady=(6, 0))
        self.banner.grid_remove()

        inrow = ttk.Frame(f)
        inrow.grid(row=3, column=0, columnspan=2, sticky="ew", pady=(8, 0))
        inrow.columnconfigure(0, weight=1)
        self.entry_var = tk.StringVar()
        # exportselection=False: the "type over it" selection of refused text must not be the
        # shared X selection, which any other window (or app) selecting text would take away.
        self.entry = ttk.Entry(inrow, textvariable=self.entry_var, font=self.fonts["text"],
                               exportselection=False)
        self.entry.grid(row=0, column=0, sticky="ew", ipady=2)

        def send(_: object = None) -> str:
            # Accepted text leaves the field; refused text stays, selected, so the user can
            # correct it or just type over it.
            if on_send(self.entry_var.get()):
                try:
                    self.entry_var.set("")
                except tk.TclError:  # /quit closed the window
                    pass
            else:
                self.select_entry()
            return "break"

        self.entry.bind("<Return>", send)
        self.entry.bind("<KP_Enter>", send)
        self.send_button = ttk.Button(inrow, text="Send", command=send)
        self.send_button.grid(row=0, column=1, padx=(6, 0))

        buttons = ttk.Frame(f)
        buttons.grid(row=4, column=0, columnspan=2, sticky="ew", pady=(8, 0))
        self.hint_label = ttk.Label(buttons, text="Type /help for commands", style="Sub.TLabel")
        self.hint_label.pack(side="left")
        self.exit_button = ttk.Button(buttons, text="Exit Program", command=on_exit)
        self.exit_button.pack(side="right")
        self.leave_button = ttk.Button(buttons, text="Leave Chat", command=on_leave)
        self.leave_button.pack(side="right", padx=(0, 6))

    # --- the message field ------------------------------------------------------------

    def select_entry(self) -> None:
        """Select all of the message field: typing replaces it, arrows keep it."""
        try:
            self.entry.selection_range(0, "end")
            self.entry.icursor("end")
        except tk.TclError:
            pass

    def restore_entry(self, text: str) -> None:
        """Put refused ``text`` back in the message field (if the user has not typed since)."""
        if not self.entry_var.get():
            self.entry_var.set(text)
            self.select_entry()

    # --- scrolling ----------------------------------------------------------------------

    def at_bottom(self) -> bool:
        """Is the newest line in view?"""
        t = self.text
        if t.yview()[1] >= 0.999:
            return True
        info = t.dlineinfo("end-1c")
        return info is not None and info[1] + info[3] <= t.winfo_height()

    def _scrollbar(self, *args: str) -> None:
        self.text.yview(*args)
        self.follow = self.at_bottom()

    def _user_scrolled(self) -> None:
        # Widget bindings run before the class binding that scrolls: look afterwards.
        self.text.after_idle(self._recheck)

    def _recheck(self) -> None:
        try:
            self.follow = self.at_bottom()
        except tk.TclError:
            pass

    def _resized(self) -> None:
        if self.follow:
            self.text.see("end")

    # --- content ----------------------------------------------------------------------

    def reset(self, room: str) -> None:
        self._pending.clear()
        self.text.configure(state="normal")
        self.text.delete("1.0", "end")
        self.text.configure(state="disabled")
        self.follow = True
        self.room_var.set(f"In {room}")
        self.topic_var.set("No topic is set")
        self.set_members(())
        self.set_connection(None)
        self.entry_var.set("")

    def add(self, parts: Parts, line_tags: tuple[str, ...] = ()) -> None:
        """Queue one line; :meth:`flush` inserts all queued lines with their tags."""
        for text, tags in parts:
            self._pending.append(strip_formatting(text))
            self._pending.append(tags + line_tags)
        self._pending.append("\n")
        self._pending.append(line_tags)

    def add_help(self, rows: Iterable[tuple[str, str]]) -> None:
        for command, what in rows:
            self.add([(f"{command}\t{what}", ("help",))])

    def flush(self) -> None:
        if not self._pending:
            return
        args, self._pending = self._pending, []
        t = self.text
        t.configure(state="normal")
        t.insert("end", *args)  # type: ignore[arg-type]  # (text, tags) pairs
        lines = self.line_count()
        if lines > self.scrollback:
            t.delete("1.0", f"{lines - self.scrollback + 1}.0")
        t.configure(state="disabled")
        if self.follow:
            t.see("end")

    def line_count(self) -> int:
        return int(self.text.index("end-1c").split(".")[0]) - 1

    def contents(self) -> str:
        return self.text.get("1.0", "end-1c")

    def set_members(self, members: Iterable[str]) -> None:
        names = list(members)
        self.listbox.delete(0, "end")
        if names:
            self.listbox.insert("end", *names)
        self.count_var.set(f"{len(names)} online")
        self.count_label.configure(style="Count.TLabel")

    def set_offline(self) -> None:
        self.set_members(())
        self.count_var.set("offline")
        self.count_label.configure(style="Offline.TLabel")

    def set_topic(self, text: str) -> None:
        text = strip_formatting(text)
        self.topic_var.set(f"Topic: {text}" if text else "No topic is set")

    def set_connection(self, text: str | None) -> None:
        if text is None:
            self.banner.grid_remove()
        else:
            self.conn_var.set(text)
            self.banner.grid()


def _stamp(ts: float) -> str:
    return time.strftime("[%H:%M] ", time.localtime(ts))


class ChatApp:
    """The client window: a login view and a chat view on ``master`` (a Tk or Toplevel)."""

    REPLY_WINDOW = 15.0  # seconds in which a server error is taken as the answer to a send

    def __init__(self, master: tk.Tk | tk.Toplevel, host: str = DEFAULT_HOST,
                 port: int = DEFAULT_PORT, name: str = "", room: str = DEFAULT_ROOM, *,
                 poll_ms: int = 50, batch: int = 300, scrollback: int = 5000,
                 session_options: dict[str, object] | None = None) -> None:
        if tk is None:
            raise RuntimeError("the chat window needs tkinter (python3-tk)")
        self.master = master
        self.room = room
        self.poll_ms = poll_ms
        self.batch = batch
        self.session_options = dict(session_options or {})
        self.session: ChatSession | None = None
        self.retired: list[ChatSession] = []
        self.phase = "login"  # login, connecting, chat, closed
        self.unread = 0
        self.exit_requested = False  # set by the signal handler; the next tick exits
        self._title = ""
        self._show_names = False
        self._show_topic = False
        self._has_focus = False
        self._early: deque[str] = deque(maxlen=50)  # server notices (MOTD) before the chat
        self._members: tuple[str, ...] | None = None  # newest snapshot not yet shown
        self._retry: tuple[float, int, bool] | None = None  # (when, attempt, name in use)
        self._lost = False  # the connection dropped: the next Joined is a reconnect
        self._final = False  # the session told us it gave up (LoginFailed in the chat)
        self._expect: tuple[str, frozenset[str], float] | None = None  # sent, refusals, when
        _style(master)
        master.title("Chat")
        master.minsize(560, 380)
        self.login = LoginView(master, room, host, port, name, self.join_clicked,
                               self._enter_pressed)
        self.chat = ChatView(master, scrollback, self.send_text, self.leave_chat,
                             self.exit_program, self.refresh_names)
        self.login.frame.pack(fill="both", expand=True)
        master.protocol("WM_DELETE_WINDOW", self.exit_program)
        master.bind("<FocusIn>", self._on_focus, add="+")
        self.login.focus_name()
        self._after_id: str | None = master.after(self.poll_ms, self._poll)

    # --- login ------------------------------------------------------------------------

    def _enter_pressed(self) -> None:
        if self.phase == "login":  # a second Enter while connecting must not cancel
            self.join_clicked()

    def join_clicked(self) -> None:
        """Join Chat (or, while connecting, Cancel)."""
        if self.phase == "connecting":
            self._retire()
            self.phase = "login"
            self._retry = None
            self.login.set_busy(False)
            self.login.show_status("Cancelled.")
            return
        if self.phase != "login":
            return
        name, host, port_text, password = self.login.values()
        problem = P.nick_problem(name)
        if problem:
            self.login.show_error(f"That name won't work: {problem}.")
            self.login.focus_name(select=True)
            return
        if not host:
            self.login.show_error("Enter the server's host name or address (127.0.0.1 for "
                                  "this computer).")
            self.login.host_entry.focus_set()
            return
        try:
            port = int(port_text)
            if not 1 <= port <= 65535:
                raise ValueError
        except ValueError:
            self.login.show_error("The port is a number from 1 to 65535 (the server's "
                                  "default is 1027).")
            self.login.port_entry.focus_set()
            return
        self._early.clear()
        self._retry = None
        self.session = ChatSession(host, port, name, self.room, password or None,
                                   **self.session_options)  # type: ignore[arg-type]
        self.session.start()
        self.phase = "connecting"
        self.login.set_busy(True)
        self.login.show_status(f"Connecting to {host}:{port}…")

    def _retire(self, leave: bool = False) -> None:
        s = self.session
        self.session = None
        if s is not None:
            if leave:
                s.leave()
            else:
                s.quit()
            self.retired.append(s)

    def _show_login(self, error: str = "", status: str = "") -> None:
        self.chat.frame.pack_forget()
        self.login.frame.pack(fill="both", expand=True)
        self.login.set_busy(False)
        if error:
            self.login.show_error(error)
        else:
            self.login.show_status(status)
        self.phase = "login"
        self.unread = 0
        self._retry = None
        self.login.focus_name(select=bool(error))

    def _show_chat(self, nick: str) -> None:
        self.login.frame.pack_forget()
        self.chat.reset(self.room)
        self.chat.frame.pack(fill="both", expand=True)
        self.phase = "chat"
        self._members = None
        self._retry = None
        self._lost = self._final = False
        self._expect = None
        self.chat.entry.focus_set()
        for text in self._early:
            self.chat.add([(text, ("notice",))])
        self._early.clear()
        self.info(f"You joined {self.room} as {nick}. Type /help for commands.")

    # --- chat actions -----------------------------------------------------------------

    def send_text(self, text: str) -> bool:
        """The message field's Enter: a slash command, or a line to the room.

        True when the text was taken (the field clears); False when it was refused, with
        the reason shown in the log (the field keeps the text, selected).
        """
        text = clean_text(text)
        if not text.strip():
            return False
        if text.startswith("/") and not text.startswith("//"):
            return self.command(text)
        body = text[1:] if text.startswith("//") else text
        s = self.session
        if s is None or not s.send_message(body):
            self.error("Not connected to the room: the message was not sent.")
            return False
        self._expect_reply(text, {P.ERR_CANNOTSENDTOCHAN})
        self.own_line(body)
        return True

    def command(self, line: str) -> bool:
        word, _, rest = line[1:].partition(" ")
        word, rest = word.lower(), rest.strip()
        s = self.session
        if word == "help":
            self.info("Commands:")
            self.chat.add_help(HELP)
            self.chat.flush()
            return True
        if word == "quit":
            self.exit_program(rest or QUIT_REASON)
            return True
        if word not in ("me", "msg", "nick", "topic", "names", "join"):
            self.error(f"Unknown command /{word}. Type /help to see the commands.")
            return False
        if word == "join" and s is not None and s.state == "joined" and not s.in_room:
            if not s.rejoin():
                self.error(f"Could not ask to join {self.room} right now.")
                return False
            self.info(f"Joining {self.room}…")
            return True
        if word == "join" and s is not None and s.in_room:
            self.error(f"You are already in {self.room}.")
            return False
        if s is None or not s.in_room:
            self.error("Not connected to the room: try again when the connection is back.")
            return False
        if word == "me":
            if not rest:
                self.error("Usage: /me <action>, e.g. /me waves")
                return False
            if not s.send_action(rest):
                self.error("The action was not sent.")
                return False
            self._expect_reply(line, {P.ERR_CANNOTSENDTOCHAN})
            self.own_line(rest, action=True)
        elif word == "msg":
            nick, _, text = rest.partition(" ")
            if not nick or not text.strip():
                self.error("Usage: /msg <name> <text>")
                return False
            problem = s.nick_problem(nick)
            if problem:
                self.error(f"“{nick}” is not a valid name: {problem}.")
                return False
            if not s.send_private(nick, text):
                self.error("The private message was not sent.")
                return False
            self._expect_reply(line, {P.ERR_NOSUCHNICK, P.ERR_CANNOTSENDTOCHAN})
            self.own_line(text, to=nick)
        elif word == "nick":
            problem = s.nick_problem(rest)
            if problem:
                self.error(f"That name won't work: {problem}.")
                return False
            if not s.change_nick(rest):
                self.error("Your name could not be changed right now: not connected.")
                return False
            self._expect_reply(line, _NICK_ERRORS)
        elif word == "topic":
            return self._topic_command(s, line, rest)
        elif word == "names":
            if not s.request_names():
                self.error("Could not ask for the member list right now.")
                return False
            self._show_names = True
        return True

    def _topic_command(self, s: ChatSession, line: str, rest: str) -> bool:
        if not rest:
            if not s.request_topic():
                self.error("Could not ask for the topic right now.")
                return False
            self._show_topic = True
            return True
        limit = s.topiclen
        size = len(rest.encode("utf-8"))
        if limit is not None and size > limit:
            self.error(f"That topic is too long for this server: it keeps at most {limit} "
                       f"bytes and yours has {size}. Shorten it and press Enter again.")
            return False
        if not s.set_topic(rest):
            self.error("The topic was not set: not connected to the room.")
            return False
        self._expect_reply(line, {P.ERR_CHANOPRIVSNEEDED, P.ERR_NOTONCHANNEL,
                                  P.ERR_NOSUCHCHANNEL})
        return True

    def _expect_reply(self, line: str, refusals: Iterable[str]) -> None:
        """Remember ``line``: if the server refuses it, it goes back into the message field."""
        self._expect = (line, frozenset(refusals), time.monotonic())

    def _refused(self, code: str) -> None:
        expect = self._expect
        if expect is None or code not in expect[1]:
            return
        self._expect = None
        if time.monotonic() - expect[2] <= self.REPLY_WINDOW:
            self.chat.restore_entry(expect[0])

    def refresh_names(self) -> None:
        if self.session is not None:
            self.session.request_names()

    def leave_chat(self) -> None:
        """Leave the room, back to the login view (join again, also under another name)."""
        s = self.session
        nick = s.nick if s is not None else ""
        if s is not None and s.in_room:
            status = (f"You left {self.room}. Press Join Chat to join again, under this "
                      f"name or another.")
        elif s is not None and s.state in ("joining", "joined"):
            status = (f"You were no longer in {self.room} and have left the server. Press "
                      f"Join Chat to join again, under this name or another.")
        else:
            status = (f"You were disconnected from {self.room} (the connection had been "
                      f"lost). Press Join Chat to connect again, under this name or another.")
        self._retire(leave=True)
        if nick:
            self.login.name_var.set(nick)
        self._show_login(status=status)

    def request_exit(self) -> None:
        """Ask for Exit Program from a signal handler: the next tick of the event loop runs
        it (a handler must not touch widgets or raise into Tk, which would swallow it)."""
        self.exit_requested = True

    def exit_program(self, reason: str = QUIT_REASON) -> None:
        """QUIT with ``reason``, close every connection, join the threads, close the window."""
        if self.phase == "closed":
            return
        self.phase = "closed"
        if self._after_id is not None:
            try:
                self.master.after_cancel(self._after_id)
            except tk.TclError:
                pass
            self._after_id = None
        try:  # the window goes at once; saying goodbye takes a moment
            self.master.withdraw()
            self.master.update_idletasks()
        except tk.TclError:
            pass
        sessions = list(self.retired)
        if self.session is not None:
            self.session.quit(reason)
            sessions.insert(0, self.session)
            self.session = None
        close_sessions(sessions, timeout=2.0)
        self.retired.clear()
        try:
            self.master.destroy()
        except tk.TclError:
            pass

    # --- lines in the view ------------------------------------------------------------

    def own_line(self, text: str, *, action: bool = False, to: str | None = None) -> None:
        nick = self.session.nick if self.session is not None else "you"
        self._message_line(time.time(), nick, text, own=True, action=action, to=to)
        self.chat.flush()

    def _message_line(self, ts: float, sender: str, text: str, *, own: bool,
                      action: bool = False, private: bool = False, notice: bool = False,
                      to: str | None = None) -> None:
        nick_tag = ("own_nick",) if own else ("nick",)
        line_tags: tuple[str, ...] = ("own",) if own else ()
        if private or to:
            line_tags = ("private",)
        parts: Parts = [(_stamp(ts), ("time",))]
        if action:
            parts += [("* ", ("action",)), (sender, nick_tag + ("action",)),
                      (" " + text, ("action",))]
        elif to:
            parts += [(sender, nick_tag), (f" → {to} ", ()), ("(private)", ("private_label",)),
                      (": " + text, ())]
        elif private:
            parts += [(sender, nick_tag), (" ", ()), ("(private)", ("private_label",)),
                      (": " + text, ())]
        elif notice:
            parts += [(f"-{sender}- ", nick_tag), (text, ("notice",))]
        else:
            parts += [(sender, nick_tag), (": " + text, ())]
        if private and action:
            parts.insert(1, ("(private) ", ("private_label",)))
        self.chat.add(parts, line_tags)

    def event_line(self, text: str, ts: float | None = None) -> None:
        self.chat.add([(_stamp(ts or time.time()), ("time",)), ("— " + text, ("event",))])

    def info(self, text: str) -> None:
        self.chat.add([(text, ("info",))])
        self.chat.flush()

    def error(self, text: str) -> None:
        self.chat.add([(text, ("error",))])
        self.chat.flush()

    # --- the event loop ---------------------------------------------------------------

    def _poll(self) -> None:
        """One tick: handle a batch of events, then schedule the next tick, always."""
        self._after_id = None
        busy = False
        try:
            busy = self._tick()
        except Exception:
            log.exception("chat window: error in the event loop")
        finally:
            if self.phase != "closed":
                try:
                    self._after_id = self.master.after(1 if busy else self.poll_ms, self._poll)
                except tk.TclError:  # the window is gone
                    pass

    def _tick(self) -> bool:
        if self.exit_requested:
            self.exit_program()
            return False
        s = self.session
        handled = 0
        self._has_focus = self._focused()
        while s is not None and handled < self.batch and self.session is s:
            try:
                ev = s.events.get_nowait()
            except queue.Empty:
                break
            handled += 1
            try:
                self._handle(ev)
            except Exception:
                log.exception("chat window: error handling %s", type(ev).__name__)
            if self.phase == "closed":
                return False
        if self._members is not None:
            members, self._members = self._members, None
            self.chat.set_members(members)
        self.chat.flush()
        self._countdown()
        self.retired = [r for r in self.retired if r.alive]
        self._update_title()
        return self.session is not None and not self.session.events.empty()

    def _set_members(self, members: tuple[str, ...]) -> None:
        """Show ``members`` at the end of this tick (only the newest snapshot counts)."""
        self._members = members

    def _countdown(self) -> None:
        if self._retry is None:
            return
        when, attempt, name_in_use = self._retry
        left = math.ceil(when - time.monotonic())
        if left > 0:
            wait = f"in {left} s"
        else:
            wait = "now"
        if self.phase == "chat":
            if name_in_use:
                text = (f"Your name is in use on the server. Trying again {wait} (attempt "
                        f"{attempt})… or go Back to Login and pick another name.")
            else:
                text = f"Connection lost. Reconnecting {wait} (attempt {attempt})…"
            if self.chat.conn_var.get() != text or not self.chat.banner.winfo_ismapped():
                self.chat.set_connection(text)
        elif self.phase == "connecting":
            self.login.show_status(f"Could not connect. Trying again {wait}…")

    def _handle(self, ev: Event) -> None:
        if self.phase == "connecting":
            self._handle_login(ev)
        elif self.phase == "chat":
            self._handle_chat(ev)

    def _handle_login(self, ev: Event) -> None:
        match ev:
            case LoginFailed(message=message):
                self._retire()
                self._show_login(error=message)
            case Registered(nick=nick):
                self._retry = None
                self.login.show_status(f"Connected as {nick}. Joining {self.room}…")
            case Notice(text=text):
                self._early.append(text)
            case Reconnecting(attempt=n, delay=delay, name_in_use=name_in_use):
                self._retry = (time.monotonic() + delay, n, name_in_use)
            case Joined(nick=nick):
                self._show_chat(nick)
            case Closed():
                self._retire()
                self._show_login(error="The connection ended before you could join. "
                                       "Try again.")

    def _handle_chat(self, ev: Event) -> None:
        chat = self.chat
        match ev:
            case Message(sender=sender, text=text, private=private, action=action,
                         notice=notice, time=ts):
                self._message_line(ts, sender, text, own=False, action=action,
                                   private=private, notice=notice)
                if not self._has_focus:
                    self.unread += 1
            case UserJoined(nick=nick, room=room, members=members):
                self.event_line(f"{nick} joined {room}")
                self._set_members(members)
            case UserLeft(nick=nick, room=room, reason=reason, members=members,
                          kicked_by=by):
                if by:
                    self.event_line(f"{nick} was removed from {room} by {by}"
                                    + (f" ({reason})" if reason else ""))
                else:
                    self.event_line(f"{nick} left {room}" + (f" ({reason})" if reason else ""))
                self._set_members(members)
            case UserQuit(nick=nick, reason=reason, members=members):
                self.event_line(f"{nick} quit" + (f" ({reason})" if reason else ""))
                self._set_members(members)
            case UserRenamed(old=old, new=new, is_self=is_self, members=members):
                if is_self:
                    self.event_line(f"You are now known as {new}")
                    self._expect = None
                else:
                    self.event_line(f"{old} is now known as {new}")
                self._set_members(members)
            case Names(room=room, members=members):
                fold = (self.session.server_info if self.session else ServerInfo()).fold
                if fold(room) == fold(self.room):
                    self._set_members(members)
                if self._show_names:
                    self._show_names = False
                    self.info(f"In {room} ({len(members)}): " + ", ".join(members))
            case Topic(text=text, by=by):
                chat.set_topic(text)
                if by:
                    self.event_line(f"{by} set the topic: {text}" if text else
                                    f"{by} cleared the topic")
                elif self._show_topic:
                    self._show_topic = False
                    self.info(f"Topic: {text}" if text else "No topic is set.")
            case Notice(text=text):
                self.chat.add([(text, ("notice",))])
            case ServerError(code=code, text=text):
                self.chat.add([(text, ("error",))])
                self._refused(code)
            case Joined(nick=nick, rejoined=True):
                chat.set_connection(None)
                chat.set_topic("")  # the 332 that follows brings the topic, if there is one
                self._retry = None
                if self._lost:
                    self.event_line(f"Reconnected: you are back in {self.room} as {nick}")
                else:
                    self.event_line(f"You joined {self.room} again")
                self._lost = False
            case Left(reason=reason, kicked_by=by):
                self._members = None
                chat.set_members(())
                self._show_names = self._show_topic = False
                who = f" by {by}" if by else ""
                self.chat.add([(f"You were removed from {self.room}{who}"
                                + (f" ({reason})" if reason else "")
                                + ". Type /join to join again, or go Back to Login.",
                                ("error",))])
                chat.set_connection(f"You are not in {self.room}. Type /join to join again.")
            case Disconnected(reason=reason, will_retry=retry):
                self._members = None
                self._lost = True
                self._show_names = self._show_topic = False
                chat.set_offline()
                self.chat.add([(f"Connection lost: {reason.rstrip('.')}."
                                + (" Reconnecting…" if retry else ""), ("error",))])
                chat.set_connection("Connection lost. Reconnecting…" if retry
                                    else "Connection lost.")
            case Reconnecting(attempt=n, delay=delay, name_in_use=name_in_use):
                self._retry = (time.monotonic() + delay, n, name_in_use)
            case LoginFailed(message=message):
                # Reconnecting, the server turned us away for good: say why, offer the login.
                self._members = None
                self._retry = None
                self._final = True
                chat.set_offline()
                self.chat.add([(message, ("error",))])
                chat.set_connection(message)
            case Closed():
                self._retry = None
                if not self._final:
                    chat.set_connection("Disconnected. Go back to the login to join again.")

    # --- title and focus --------------------------------------------------------------

    def _focused(self) -> bool:
        try:
            w = self.master.focus_get()
        except (KeyError, tk.TclError):
            return False
        return w is not None and str(w.winfo_toplevel()) == str(self.master)

    def _on_focus(self, _: object) -> None:
        if self.unread and self._focused():
            self.unread = 0
            self._update_title()

    def _update_title(self) -> None:
        if self.unread and self._focused():
            self.unread = 0
        if self.phase == "chat" and self.session is not None:
            title = f"{self.room} — {self.session.nick} — Chat"
        else:
            title = "Chat — join a room"
        if self.unread:
            title = f"({self.unread}) {title}"
        if title != self._title:
            self._title = title
            self.master.title(title)


# --- command line ------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Desktop chat client (speaks IRC).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default=DEFAULT_HOST, help="server host name or address")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="server TCP port")
    p.add_argument("--name", default="", help="your name, filled in on the login view")
    p.add_argument("--room", default=DEFAULT_ROOM, help="the room to join")
    a = p.parse_args(argv)
    if not a.room.startswith("#"):
        a.room = "#" + a.room
    if not P.valid_channel(a.room):
        p.error(f"--room {a.room!r} is not a valid room name (e.g. #chat)")
    if not 1 <= a.port <= 65535:
        p.error("--port must be 1-65535")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if tk is None:
        print("client.py: tkinter is not installed (on Debian/Ubuntu: apt install python3-tk)",
              file=sys.stderr)
        return 1
    try:
        root = tk.Tk(className="Chat")
    except tk.TclError as exc:
        print(f"client.py: cannot open a window: {exc}", file=sys.stderr)
        return 1
    root.geometry("860x560")
    app = ChatApp(root, args.host, args.port, args.name, args.room)

    def on_signal(signum: int, frame: object) -> None:
        # Runs in the main thread between bytecodes, so within some Tk callback: only set
        # a flag (an exception here would be swallowed by Tkinter).  The app's poll tick,
        # every 50 ms, gives Python the chance to run this and then does Exit Program.
        app.request_exit()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        root.mainloop()
    except KeyboardInterrupt:
        pass
    app.exit_program()
    return 0


if __name__ == "__main__":
    sys.exit(main())
