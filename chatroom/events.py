"""The typed events a :class:`~chatroom.session.ChatSession` puts on its queue.

The session's network thread creates them; the thread that reads ``session.events`` (the
Tk thread in the app, the test thread in the tests) consumes them.  They are frozen
dataclasses, so they cross the thread boundary without any lock.  Every event about a
room names it (``room``): today's app shows one room, a multi-room app routes on it.
Member lists travel as snapshots (``members``), so no reader ever looks at session state.

Lines the server stores carry its ``time`` (when it happened, not when it reached us) and
its ``msgid`` (None from a server without message-tags).  A :class:`History` event brings
a room's earlier lines as the same event types, with empty member snapshots: they say what
happened then, not who is here now.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Event:
    """Everything the session puts on its queue derives from this."""


@dataclass(frozen=True)
class Registered(Event):
    """The server accepted us (001).  ``nick`` is the name it gave us.

    ``tls`` is the TLS version the connection is encrypted with (``TLSv1.3``), None when
    it is not encrypted.
    """

    nick: str
    server: str
    tls: str | None = None


@dataclass(frozen=True)
class LoggedIn(Event):
    """The server logged this connection in to ``account`` (while registering, before
    :class:`Registered`); ``created`` when the account was made just now (create account).
    Comes on every connection of an account session, reconnects included."""

    account: str
    created: bool = False


@dataclass(frozen=True)
class RenameWarning(Event):
    """Our name ``nick`` belongs to an account we are not logged in to: the server renames
    us to a guest name in ``seconds`` unless we log in.  ``deadline`` is that moment on
    :func:`time.monotonic`'s clock, for a countdown.  A :class:`UserRenamed` with ``forced``
    follows when the time is up (or nothing, if we took another name meanwhile)."""

    nick: str
    seconds: float
    deadline: float


@dataclass(frozen=True)
class Joined(Event):
    """We are in ``room``; ``rejoined`` after a reconnect."""

    room: str
    nick: str
    rejoined: bool = False


@dataclass(frozen=True)
class Left(Event):
    """We are no longer in ``room``: ``kicked_by`` removed us, or we left it.

    ``parted``: we asked to leave it (:meth:`~chatroom.session.ChatSession.part`) and the
    session has forgotten the room.  ``refused``: the server would not let us in (or back
    in, after a reconnect), ``reason`` says why in words, and the session has forgotten
    the room too.  Otherwise (a kick) the session keeps the room, to join it again.
    """

    room: str
    reason: str = ""
    kicked_by: str | None = None
    parted: bool = False
    refused: bool = False


@dataclass(frozen=True)
class Message(Event):
    """A PRIVMSG or NOTICE to the room (``private`` False) or to us (``private`` True).

    ``target`` is as the server sent it (``@#chat`` for a message to a room's operators);
    ``room`` is the room it was said in, None for a private message.  ``own`` when we said
    it (in an :class:`Echo`, or a line of ours in the room's history).
    """

    sender: str
    target: str
    text: str
    private: bool = False
    action: bool = False
    notice: bool = False
    time: float = field(default_factory=time.time)
    room: str | None = None
    msgid: str | None = None
    own: bool = False


@dataclass(frozen=True)
class Echo(Event):
    """The server relayed a line we sent (echo-message): ``message`` is it as the others
    got it, with the server's msgid and time, ``own`` set.  It also confirms the send: a
    line the server refuses never comes back."""

    message: Message


@dataclass(frozen=True)
class UserJoined(Event):
    """Someone else joined ``room``."""

    room: str
    nick: str
    members: tuple[str, ...]
    time: float = field(default_factory=time.time)
    msgid: str | None = None


@dataclass(frozen=True)
class UserLeft(Event):
    """Someone parted the room, or was kicked from it (``kicked_by``)."""

    room: str
    nick: str
    reason: str
    members: tuple[str, ...]
    kicked_by: str | None = None
    time: float = field(default_factory=time.time)
    msgid: str | None = None


@dataclass(frozen=True)
class UserQuit(Event):
    """Someone in ``room`` left the server (one event per room we shared with them)."""

    nick: str
    reason: str
    members: tuple[str, ...]
    room: str = ""
    time: float = field(default_factory=time.time)
    msgid: str | None = None


@dataclass(frozen=True)
class UserRenamed(Event):
    """``old`` is now ``new`` in ``room``; ``is_self`` when it is us.  ``forced`` when it is
    us and we did not ask: the server gave us a guest name, because ``old`` is registered to
    someone else (see :class:`RenameWarning`)."""

    old: str
    new: str
    is_self: bool
    members: tuple[str, ...]
    room: str = ""
    time: float = field(default_factory=time.time)
    msgid: str | None = None
    forced: bool = False


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
    time: float = field(default_factory=time.time)
    msgid: str | None = None


@dataclass(frozen=True)
class Notice(Event):
    """Something from the server worth showing (MOTD, server notices, mode changes).

    ``room`` names the room a mode change was made in; None for the server's own notices.
    ``tls_port`` is set on the server's notice that this connection is not encrypted and
    that TLS is offered on that port.
    """

    text: str
    source: str | None = None
    room: str | None = None
    tls_port: int | None = None  # the server says it offers TLS on this port (we are in clear)
    time: float = field(default_factory=time.time)
    msgid: str | None = None


@dataclass(frozen=True)
class Sending(Event):
    """Progress of a paste going out at the pace servers take: ``sent`` of ``total`` lines
    to ``target``; ``gave_up`` when the connection dropped before the rest went."""

    target: str
    sent: int
    total: int
    gave_up: bool = False


@dataclass(frozen=True)
class Away(Event):
    """Someone we wrote to (or asked about) is away: the server's 301, once per text."""

    nick: str
    text: str


@dataclass(frozen=True)
class AwayChanged(Event):
    """The server took our own /away: ``away`` True (marked away) or False (back)."""

    away: bool


@dataclass(frozen=True)
class Whois(Event):
    """What the server says about ``nick`` (a /whois), as lines in words, in its order."""

    nick: str
    facts: tuple[str, ...]


@dataclass(frozen=True)
class AwayStates(Event):
    """Who is away (True) or back (False), as the server tells it (away-notify, and the
    WHO of a room just joined): (nick, away) pairs."""

    states: tuple[tuple[str, bool], ...]


@dataclass(frozen=True)
class Presence(Event):
    """Someone on our notify list (MONITOR) came online, or went offline."""

    nick: str
    online: bool


@dataclass(frozen=True)
class OperChanged(Event):
    """We are now a server operator (OPER worked), or no longer one."""

    oper: bool


@dataclass(frozen=True)
class ReadMarker(Event):
    """Where the user has read ``target`` up to, on any of their devices (draft/read-marker):
    the server time of the last line read, None when nothing is marked yet."""

    target: str
    time: float | None


@dataclass(frozen=True)
class BanList(Event):
    """A room's bans (``MODE #room +b``): (mask, set by) pairs, as the server listed them."""

    room: str
    bans: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class RoomInfo:
    """One room as the server's room list (LIST) shows it."""

    name: str
    users: int
    topic: str


@dataclass(frozen=True)
class RoomList(Event):
    """The server's answer to :meth:`~chatroom.session.ChatSession.list_rooms`, sorted by
    members (most first).  ``complete`` is False when the server listed more than the
    session keeps (:data:`~chatroom.session.LIST_MAX`)."""

    rooms: tuple[RoomInfo, ...]
    complete: bool = True


@dataclass(frozen=True)
class ServerError(Event):
    """An error reply after registration, in words (``code`` is the numeric)."""

    code: str
    text: str


class LoginKind(str, enum.Enum):
    """Why :class:`LoginFailed`: what the login view should ask the user to change."""

    BAD_NICK = "bad_nick"
    NICK_TAKEN = "nick_taken"
    BAD_PASSWORD = "bad_password"
    REFUSED = "refused"  # nothing listening, or the server turned us away (ERROR)
    UNREACHABLE = "unreachable"  # unknown host, no route, no answer
    JOIN_REFUSED = "join_refused"
    TLS_FAILED = "tls_failed"  # no TLS answer, or the TLS handshake failed
    UNTRUSTED_CERT = "untrusted_cert"  # could not be verified and is not pinned: ask the user
    CERT_CHANGED = "cert_changed"  # not the certificate pinned for this server: refused
    # Accounts (log in, create account): what the login view selects for the user to fix.
    WRONG_PASSWORD = "wrong_password"  # wrong name or password (the server won't say which)
    THROTTLED = "throttled"  # too many tries: ``wait`` seconds first
    NAME_REGISTERED = "name_registered"  # create: the name is someone's account already
    REGISTRATION_CLOSED = "registration_closed"  # create: accounts are made by the admin
    INSECURE = "insecure"  # passwords only over TLS on this server
    BAD_ACCOUNT_PASSWORD = "bad_account_password"  # not 1 to 300 bytes
    NO_ACCOUNTS = "no_accounts"  # the server has no accounts (no sasl, no registration)
    ACCOUNT_REQUIRED = "account_required"  # the server is for registered users only
    ACCOUNT_REFUSED = "account_refused"  # any other refusal of a login or a new account


@dataclass(frozen=True)
class LoginFailed(Event):
    """We could not get (back) into the room; ``message`` says why and what to do.  Final.

    For the certificate kinds, ``host`` and ``port`` say which server, ``fingerprint`` is the
    SHA-256 fingerprint of the certificate it showed and ``pinned`` the one we had pinned
    (CERT_CHANGED); the app asks the user and, on a yes, pins ``fingerprint`` and connects
    with a new session.  ``wait`` (THROTTLED) is how many seconds the server wants us to
    wait before the next try; ``tls_port`` (INSECURE) the port where it offers TLS, if it said.
    ``field`` names the login field to correct for a failed connect: ``host`` for a name that
    can't be found or doesn't answer, ``port`` for a refused connection.
    """

    kind: LoginKind
    message: str
    fingerprint: str = ""
    pinned: str = ""
    host: str = ""
    port: int = 0
    wait: int = 0
    tls_port: int | None = None
    field: str = ""  # the login field at fault when the kind alone can't say (host, port)


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


# What a room's history is made of: the lines of the log, as they came live.
RoomLine = Message | UserJoined | UserLeft | UserQuit | UserRenamed | Topic | Notice


class HistoryKind(str, enum.Enum):
    """Which part of a room's history a :class:`History` event brings."""

    LATEST = "latest"  # on joining: the room's most recent lines, before anything live
    OLDER = "older"  # a page from before the oldest line shown (load_older)
    MISSED = "missed"  # after a reconnect: what was said while we were away, before live


@dataclass(frozen=True)
class History(Event):
    """Earlier lines of ``room`` from the server's store, oldest first, each with its own
    time and msgid, none of them shown before (``entries`` may be empty).

    ``start`` when nothing older exists: the conversation starts at the first entry (or
    at what is already shown).  ``more`` (MISSED only) when more was missed than was
    fetched, so there is a gap before the live lines.  Live events of the room that came
    while a LATEST or MISSED fetch was on its way follow this event, in order.
    """

    room: str
    kind: HistoryKind
    entries: tuple[RoomLine, ...]
    start: bool = False
    more: bool = False
