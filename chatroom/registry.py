"""Who is connected and which rooms exist: Client, Channel, Ban and the Registry.

Every mutable field here is guarded by the one :attr:`Registry.lock`, except where a field's
comment names its owner (the writer's ``wbuf``/``blocked``, the reader's timer stamps).  The
lookups and changes below expect the caller to hold the lock; none of them does I/O.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from chatroom import protocol as P
from chatroom.transport import TLSStream

MAX_BANS = 100
NAMELEN = 100  # realname bytes (USER cuts to it, SETNAME refuses more; ISUPPORT NAMELEN)
MONITOR_MAX = 100  # nicks on one MONITOR list (ISUPPORT MONITOR)
WHOWAS_SIZE = 1000
NO_TAGS, TIME_ONLY, ALL_TAGS = 0, 1, 2  # Client.tagmode
TALK_LINES = 500  # a private conversation's events kept per connection
TALKS = 50  # private conversations kept per connection (the oldest goes first)
# One event of a private conversation: (ms, PRIVMSG or NOTICE?, plain line, client tags).
TalkEvent = tuple[int, bool, bytes, bytes | None]
# Caps besides server-time and message-tags that change what an event looks like.
ACCOUNT_TAG, EXTENDED_JOIN = 1, 2  # Client.extras


class Client:
    """One connection: its identity, its rooms and its outbound buffer.

    Identity, rooms and the outbound buffer are under the registry lock.  The liveness
    stamps (``last_active``, ``ping_sent``, ``partial_since``) and ``quit_reason`` are
    single assignments made without it, by the reader (and ``ping_sent`` by the
    housekeeper when it sends a PING); the housekeeper reads each of them once per check.
    """

    __slots__ = ("sock", "fd", "addr", "host", "nick", "user", "realname", "password",
                 "registered", "cap_negotiating", "caps", "modes", "away", "channels", "prefix",
                 "signon", "last_active", "last_message", "ping_sent", "partial_since",
                 "connected_at", "out", "outlen", "doomed", "closing", "wbuf", "blocked",
                 "quit_reason", "released", "closing_since", "invites", "tls",
                 "cap_version", "tagmode", "echo", "diverted", "held", "held_by", "talks",
                 "variant", "extras", "account", "sasl", "nick_deadline", "lost_nicks",
                 "monitoring")

    def __init__(self, sock: socket.socket, addr: tuple[str, int],
                 tls: TLSStream | None = None) -> None:
        self.sock = sock
        # The TLS session over ``sock`` (None for plaintext): its reader feeds it, the
        # writer encrypts through it; it serialises the two itself.
        self.tls = tls
        self.fd = sock.fileno()
        self.addr = addr
        self.host = addr[0]
        self.nick = "*"
        self.user = ""
        self.realname = ""
        self.password: str | None = None
        self.registered = False
        self.cap_negotiating = False
        self.cap_version = 0  # 302 once it sent CAP LS 302 (cap values, multi-line LS)
        # Which variant of an event's line it gets (from its caps, see set_caps): NO_TAGS,
        # TIME_ONLY (server-time) or ALL_TAGS (message-tags); and whether it gets its own
        # messages back (echo-message).
        self.tagmode = NO_TAGS
        self.echo = False
        # Does it take anything but the plain line (tags, account-tag, extended-join)?  Rooms
        # count such members; a room with none relays the plain line on the fast path.
        self.variant = False
        self.extras = 0  # ACCOUNT_TAG | EXTENDED_JOIN, from its caps
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
        # ``held``: while its reader prepares one reply that must go out whole (a labeled
        # response, a join with its replay), lines queued to it wait here, each marked with
        # whether the holding thread made it (see Writer.hold).  ``diverted`` is the one
        # flag Writer.queue tests: held, doomed or closing.
        self.held: list[tuple[bool, bytes]] | None = None
        self.held_by = 0
        self.diverted = False
        # Private conversations while it is connected, for CHATHISTORY: the other party's
        # casefolded nick -> (its nick, recent events as (ms, is_message, line, tags)).
        self.talks: dict[str, tuple[str, deque[TalkEvent]]] | None = None
        # The account it is logged in to (its registered spelling), or None for a guest.
        self.account: str | None = None
        # SASL in progress: the mechanism's response being received (reader thread only).
        self.sasl: P.SaslResponse | None = None
        # When it must give up a nick registered to an account it is not logged in to
        # (monotonic seconds; the housekeeper renames it then), or None.
        self.nick_deadline: float | None = None
        # The (casefolded) registered nicks it was renamed away from: it may not take one
        # again without logging in, or its grace would start over and over.
        self.lost_nicks: set[str] | None = None
        # Its MONITOR list: casefolded nick -> the nick as it gave it (None until it has one).
        self.monitoring: dict[str, str] | None = None

    def __repr__(self) -> str:
        return f"<Client {self.nick} {self.host}:{self.addr[1]}>"

    def remember_talk(self, other: str, event: TalkEvent) -> None:
        """Keep one event of the conversation with nick ``other``.  Lock held."""
        if self.talks is None:
            self.talks = {}
        key = P.casefold(other)
        entry = self.talks.pop(key, None)  # re-inserted: the dict keeps recency order
        events = entry[1] if entry is not None else deque(maxlen=TALK_LINES)
        events.append(event)
        self.talks[key] = (other, events)
        if len(self.talks) > TALKS:
            del self.talks[next(iter(self.talks))]

    def update_prefix(self) -> None:
        self.prefix = f"{self.nick}!{self.user}@{self.host}"

    def set_caps(self, caps: set[str]) -> None:
        """Take ``caps`` as the enabled capabilities.  Registry lock held: the rooms'
        counts of tagged members follow."""
        old = self.variant
        self.caps = caps
        self.tagmode = (ALL_TAGS if "message-tags" in caps else
                        TIME_ONLY if "server-time" in caps else NO_TAGS)
        self.echo = "echo-message" in caps
        self.extras = ((ACCOUNT_TAG if "account-tag" in caps else 0)
                       | (EXTENDED_JOIN if "extended-join" in caps else 0))
        self.variant = bool(self.tagmode or self.extras)
        if old != self.variant:
            for ch in self.channels.values():
                ch.tagged += 1 if self.variant else -1


class Channel:
    """A room: members with their prefixes (``@`` operator, ``+`` voice), topic and modes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.folded = P.casefold(name)  # its registry key, and its history's
        self.members: dict[Client, str] = {}  # client -> "" | "@" | "+" | "@+"
        self.topic = ""
        self.topic_by = ""
        self.topic_at = 0
        self.created = int(time.time())
        self.modes: set[str] = {"n", "t"}
        self.key: str | None = None  # +k
        self.limit = 0  # +l, 0 for none
        self.bans: list[Ban] = []  # +b (a "$m:" entry mutes rather than bans)
        self.excepts: list[Ban] = []  # +e: past +b (and mutes)
        self.invex: list[Ban] = []  # +I: past +i without an invitation
        self.tagged = 0  # members with Client.variant (0: the plain fast path)
        self.founder: str | None = None  # the account that created it (casefolded)

    def add(self, c: Client, prefix: str) -> None:
        self.members[c] = prefix
        if c.variant:
            self.tagged += 1

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
        """May ``c`` not join (a +b that is not a mute matches, and no +e does)?"""
        if not self.bans:
            return False
        who, acct = P.casefold(c.prefix), _account_key(c)
        return (any(not b.mute and b.hits(who, acct) for b in self.bans)
                and not any(e.hits(who, acct) for e in self.excepts))

    def silenced(self, c: Client) -> str | None:
        """Why ``c`` may not speak here by a +b entry (banned or muted), or None.  Callers
        test ``self.bans`` first, so a room without entries costs nothing."""
        who, acct = P.casefold(c.prefix), _account_key(c)
        hit = next((b for b in self.bans if b.hits(who, acct)), None)
        if hit is None or any(e.hits(who, acct) for e in self.excepts):
            return None
        return ("Cannot send to channel (you are muted)" if hit.mute
                else P.ERROR_TEXT[P.ERR_CANNOTSENDTOCHAN])

    def invex_match(self, c: Client) -> bool:
        """Does a +I entry let ``c`` past +i?"""
        if not self.invex:
            return False
        who, acct = P.casefold(c.prefix), _account_key(c)
        return any(i.hits(who, acct) for i in self.invex)

    def visible_to(self, c: Client) -> bool:
        return "s" not in self.modes or c in self.members


def _account_key(c: Client) -> str | None:
    return P.casefold(c.account) if c.account is not None else None


@dataclass
class Ban:
    """One entry of a room's +b, +e or +I list.

    ``mask`` is as listed: a casefolded ``nick!user@host`` mask, or an extban (EXTBAN=$,am):
    ``$a`` (any logged-in account), ``$a:<account mask>``, or in +b only ``$m:<either>``,
    a mute.  ``match`` tests the casefolded prefix, or the casefolded account when
    ``account`` is set (a guest never matches those).
    """

    mask: str
    by: str
    at: int
    match: Callable[[str], bool]
    account: bool = False
    mute: bool = False

    def hits(self, who: str, acct: str | None) -> bool:
        if self.account:
            return acct is not None and self.match(acct)
        return self.match(who)


EXTBAN_PREFIX, EXTBAN_TYPES = "$", "am"  # ISUPPORT EXTBAN=$,am


def _any(_: str) -> bool:
    return True


def list_entry(text: str, by: str, at: int, mute_ok: bool = True) -> Ban | str:
    """The +b/+e/+I entry ``text`` stands for, normalised, or why it is malformed (words).

    ``nick`` is completed to ``nick!*@*`` as established servers do; ``$a`` matches any
    logged-in user, ``$a:mask`` an account (wildcards allowed); ``$m:<mask or $a...>``
    (+b only) lets the user stay but not speak.
    """
    if not text.startswith(EXTBAN_PREFIX):
        mask = ban_mask(text)
        return Ban(mask, by, at, P.mask_matcher(mask))
    mute = text.startswith("$m:")
    inner = text[3:] if mute else text
    if mute:
        if not mute_ok:
            return "A mute ($m:) belongs in the ban list (+b) only"
        if not inner:
            return "$m: needs a mask or an account extban after it"
        if not inner.startswith(EXTBAN_PREFIX):
            mask = ban_mask(inner)
            return Ban("$m:" + mask, by, at, P.mask_matcher(mask), mute=True)
    if inner == "$a":
        return Ban(("$m:" if mute else "") + "$a", by, at, _any, account=True, mute=mute)
    if inner.startswith("$a:"):
        name = P.casefold(inner[3:])
        if not name or len(name) > 64 or any(ch in name for ch in "!@$:,") or (
                not name.isprintable()):
            return "$a: needs an account name (or mask) after it"
        return Ban(("$m:" if mute else "") + "$a:" + name, by, at, P.mask_matcher(name),
                   account=True, mute=mute)
    return f"Unknown extban type (this server has {EXTBAN_PREFIX}a and {EXTBAN_PREFIX}m)"


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
        # MONITOR, the other way round: casefolded nick -> the clients watching for it.
        self.watchers: dict[str, set[Client]] = {}
        # Called (lock held) with a room whose last member left.
        self.on_room_gone: Callable[[Channel], None] | None = None

    def remember(self, c: Client) -> None:
        """Keep ``c``'s identity for WHOWAS (call before its nick changes or it leaves)."""
        self.whowas.append((P.casefold(c.nick), c.nick, c.user, c.host, c.realname))

    def find_channel(self, name: str) -> Channel | None:
        return self.channels.get(P.casefold(name))

    def find_nick(self, nick: str) -> Client | None:
        """The registered client using ``nick`` (a nick claimed mid-registration is not)."""
        c = self.nicks.get(P.casefold(nick))
        return c if c is not None and c.registered else None

    def peers(self, c: Client) -> set[Client]:
        """Everyone who shares a room with ``c``, without ``c``."""
        peers: set[Client] = set()
        for ch in c.channels.values():
            peers.update(ch.members)
        peers.discard(c)
        return peers

    def audience(self, c: Client, cap: str) -> set[Client]:
        """Who hears of a change to ``c`` announced under ``cap`` (away-notify, setname,
        account-notify): room-mates with the cap, and, with extended-monitor too, those
        watching its nick.  Never ``c`` itself."""
        heard = {m for m in self.peers(c) if cap in m.caps}
        for m in self.watchers.get(P.casefold(c.nick), ()):
            if m is not c and cap in m.caps and "extended-monitor" in m.caps:
                heard.add(m)
        return heard

    def unwatch_all(self, c: Client) -> None:
        """Empty ``c``'s MONITOR list (MONITOR C, or it leaves)."""
        for key in c.monitoring or ():
            watching = self.watchers.get(key)
            if watching is not None:
                watching.discard(c)
                if not watching:
                    del self.watchers[key]
        c.monitoring = None

    def remove_member(self, ch: Channel, c: Client) -> None:
        """Take ``c`` out of ``ch``; a room whose last member leaves ceases to exist."""
        if ch.members.pop(c, None) is not None and c.variant:
            ch.tagged -= 1
        c.channels.pop(ch.folded, None)
        if (not ch.members and self.channels.pop(ch.folded, None) is not None
                and self.on_room_gone is not None):
            self.on_room_gone(ch)

    def forget(self, c: Client) -> None:
        """Drop every trace of ``c``: counts, rooms, nick and address."""
        if c.registered and c in self.clients:
            self.user_count -= 1
            if "i" in c.modes:
                self.invisible_count -= 1
        for ch in list(c.channels.values()):
            self.remove_member(ch, c)
        c.channels.clear()
        key = P.casefold(c.nick)
        if self.nicks.get(key) is c:
            del self.nicks[key]
        self.clients.discard(c)
        if c.monitoring:
            self.unwatch_all(c)
        n = self.per_ip.get(c.host, 0) - 1
        if n > 0:
            self.per_ip[c.host] = n
        else:
            self.per_ip.pop(c.host, None)
