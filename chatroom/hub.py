"""The facade handlers talk to: the registry, the writer, and the lines they share.

:class:`Hub` holds what every server thread reaches for: the config, the registry (and its
one lock), the writer, and the server-wide stop event.  Its methods are the unit of work of a
handler (:meth:`Hub.delivering`: lock, change state, queue lines, unlock, wake the writer),
the reply helpers, and the welcome, ISUPPORT, LUSERS, MOTD and NAMES lines.

Ending a connection, from the server's side (the writer's own steps are in ``writer``):

* :meth:`Hub.kill`: the server ends it and tells the client why (an ``ERROR`` line, last).
* :meth:`Hub.goodbye`: the same with the lock already held (QUIT, shutdown, kill use it).
* :meth:`Hub.remove`: the reader's last step: take the client out of the registry and send
  its room-mates one ``QUIT``.  Runs exactly once per connection.

Called from reader threads, the housekeeper and the main thread.  Methods marked "lock held"
expect the caller to hold ``reg.lock``; the others take it themselves and must not be called
with it held.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from chatroom import protocol as P
from chatroom.accounts import AccountError, Accounts, ScryptParams, Throttle
from chatroom.config import VERSION, Config
from chatroom.history import History
from chatroom.markers import MarkerError, Markers
from chatroom.moderation import Moderation, ModerationError
from chatroom.registry import (
    ACCOUNT_TAG,
    ALL_TAGS,
    EXTBAN_PREFIX,
    EXTBAN_TYPES,
    EXTENDED_JOIN,
    MAX_BANS,
    MONITOR_MAX,
    NAMELEN,
    TIME_ONLY,
    Ban,
    Channel,
    Client,
    Registry,
    list_entry,
)
from chatroom.writer import Writer

log = logging.getLogger(__name__)

HISTORY_MAX = 500  # events per CHATHISTORY reply (ISUPPORT CHATHISTORY)


def add_tag(tag: bytes, line: bytes) -> bytes:
    """``line`` with ``tag`` (``k=v``, escaped) first in its tag section."""
    if line.startswith(b"@"):
        return b"@" + tag + b";" + line[1:]
    return b"@" + tag + b" " + line


def has_batch_tag(line: bytes) -> bool:
    if not line.startswith(b"@"):
        return False
    section = line[1:line.find(b" ")]
    return any(t.startswith(b"batch=") for t in section.split(b";"))


def whole_batch(lines: list[bytes]) -> bool:
    """Are ``lines`` exactly one batch, its opening and closing included?"""
    first, last = lines[0], lines[-1]
    head = first.split(b" ", 3) if not first.startswith(b"@") else first.split(b" ", 4)[1:]
    tail = last.split(b" ", 3)
    if len(head) < 3 or head[1] != b"BATCH" or not head[2].startswith(b"+"):
        return False
    ref = head[2][1:]
    if len(tail) < 3 or tail[1] != b"BATCH" or tail[2].rstrip(b"\r\n") != b"-" + ref:
        return False
    inner = b"batch=" + ref
    return all(has_batch_tag(x) and inner in x.split(b" ", 1)[0] for x in lines[1:-1])


class Event:
    """One storable event as its recipients get it: the same ``msgid`` and ``time`` on
    every copy, each wire variant formatted at most once, when a recipient first needs it.

    ``plain`` is the line without tags; ``tags`` the sender's client-only tags, for
    message-tags recipients only; with ``tagged_only`` (TAGMSG) clients without
    message-tags get nothing.  ``account`` is the sender's (account-tag) and ``ext`` the
    extended-join form of a JOIN.  Lives while the registry lock is held (the clock's
    spelling-out is not thread-safe).
    """

    __slots__ = ("plain", "clock", "ms", "tags", "tagged_only", "account", "ext", "_timed",
                 "_full", "_more")

    def __init__(self, plain: bytes, clock: P.EventClock, ms: int,
                 tags: dict[str, str] | None, tagged_only: bool = False,
                 account: str | None = None, ext: bytes | None = None) -> None:
        self.plain, self.clock, self.ms = plain, clock, ms
        self.tags, self.tagged_only = tags, tagged_only
        self.account, self.ext = account, ext
        self._timed: bytes | None = None
        self._full: bytes | None = None
        self._more: dict[int, bytes | None] | None = None

    @property
    def msgid(self) -> str:
        return self.clock.msgid(self.ms)

    @property
    def time(self) -> str:
        return self.clock.time_text(self.ms)

    def line_for(self, c: Client) -> bytes | None:
        mode = c.tagmode
        if c.extras and ((self.account is not None and c.extras & ACCOUNT_TAG)
                         or (self.ext is not None and c.extras & EXTENDED_JOIN)):
            return self._variant(c)
        if mode == ALL_TAGS:
            if self._full is None:
                tags = {"msgid": self.msgid, "time": self.time}
                if self.tags:
                    tags.update(self.tags)
                self._full = P.tag_section(tags) + self.plain
            return self._full
        if self.tagged_only:
            return None
        if mode == TIME_ONLY:
            if self._timed is None:
                self._timed = b"@time=" + self.time.encode() + b" " + self.plain
            return self._timed
        return self.plain

    def _variant(self, c: Client) -> bytes | None:
        """The rarer variants (an account tag, an extended JOIN), each made once."""
        acct = bool(self.account is not None and c.extras & ACCOUNT_TAG)
        ext = bool(self.ext is not None and c.extras & EXTENDED_JOIN)
        key = c.tagmode * 4 + acct * 2 + ext
        if self._more is None:
            self._more = {}
        elif key in self._more:
            return self._more[key]
        line: bytes | None
        if self.tagged_only and c.tagmode != ALL_TAGS:
            line = None
        else:
            tags: dict[str, str] = {}
            if c.tagmode == ALL_TAGS:
                tags["msgid"] = self.msgid
            if c.tagmode:
                tags["time"] = self.time
            if acct:
                assert self.account is not None
                tags["account"] = self.account
            if c.tagmode == ALL_TAGS and self.tags:
                tags.update(self.tags)
            plain = self.ext if ext and self.ext is not None else self.plain
            line = P.tag_section(tags) + plain if tags else plain
        self._more[key] = line
        return line


def conn_key(c: Client) -> str:
    """``c``'s key in the login throttle (forgotten when it leaves, so never reused)."""
    return f"conn:{id(c)}"


def room_state(ch: Channel) -> dict[str, Any]:
    """What of ``ch`` outlives it: topic, modes, bans and founder (JSON-ready)."""
    return {"name": ch.name, "topic": ch.topic, "topic_by": ch.topic_by,
            "topic_at": ch.topic_at, "created": ch.created, "modes": sorted(ch.modes),
            "key": ch.key, "limit": ch.limit, "bans": [[b.mask, b.by, b.at] for b in ch.bans],
            "excepts": [[b.mask, b.by, b.at] for b in ch.excepts],
            "invex": [[b.mask, b.by, b.at] for b in ch.invex],
            "founder": ch.founder}


def _entries(saved: list[list[Any]], bans: bool) -> list[Ban]:
    """A saved +b, +e or +I list back as entries (one that no longer parses is dropped)."""
    out = [list_entry(str(mask), str(by), int(at), bans) for mask, by, at in saved[:MAX_BANS]]
    return [b for b in out if isinstance(b, Ban)]


class Hub:
    """Shared server state and the helpers every handler uses."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.reg = Registry()
        self.writer = Writer(self.reg, config.sendq)
        self.stopping = threading.Event()  # set once: the server is shutting down
        self.created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        self.history: History | None = None  # open_stores(), unless --no-history
        self.accounts: Accounts | None = None  # open_stores()
        self.moderation: Moderation | None = None  # open_stores(): operators, server bans
        self.markers: Markers | None = None  # open_stores(): accounts' read markers
        # Guests' read markers, per connection, in memory only (lock held): the client ->
        # casefolded target -> ms.  Dropped when the connection goes (remove).
        self.guest_marks: dict[Client, dict[str, int]] = {}
        # Failed logins per connection and per account; REGISTER attempts per address.
        self.login_throttle = Throttle(free=config.login_free, refuse_after=config.login_max,
                                       window=config.login_window)
        # Per address (an IPv6 /64): five times as generous, for many people behind one NAT.
        self.address_throttle = Throttle(free=config.login_free * 5,
                                         refuse_after=config.login_max * 5,
                                         window=config.login_window)
        self.register_throttle = Throttle(free=config.register_limit, base_delay=60.0,
                                          max_delay=3600.0, refuse_after=config.register_limit,
                                          window=3600.0)
        self.isupport = self._isupport_tokens()
        self.tls_port: int | None = None  # the TLS listener's port, once it is open
        # The file host's upload URL as ``c`` can reach it (soju.im/FILEHOST), once the
        # server runs one; called on c's reader thread, without the lock.
        self.filehost_url: Callable[[Client], str | None] | None = None
        self.clock = P.EventClock()
        # Rooms that existed when the server last stopped: their state waits here for the
        # room's next first join (casefolded name -> saved state).
        self.saved_rooms: dict[str, dict[str, Any]] = {}
        self._batch_ids = itertools.count(1)
        self.reg.on_room_gone = self._room_gone

    def open_stores(self) -> None:
        """Open the data directory's accounts and history (main thread, before serving).
        Raises :class:`OSError` or :class:`sqlite3.Error` if they can't be used."""
        self.accounts = Accounts(self.config.data_dir,
                                 params=ScryptParams(ln=self.config.scrypt_cost))
        try:
            self.moderation = Moderation(self.config.data_dir)
        except ModerationError as exc:  # the accounts' own file: report it as theirs
            raise AccountError(str(exc)) from None
        try:
            self.markers = Markers(self.config.data_dir)
        except MarkerError as exc:  # the same file: report it as the accounts'
            raise AccountError(str(exc)) from None
        if not self.config.history:
            return
        self.history = History(self.config.data_dir, self.config.history_days)
        self.clock.start_after(self.history.last_ms())
        self.saved_rooms = self.history.rooms()
        self.writer.history = self.history
        self.isupport = self._isupport_tokens()
        log.info("history in %s (%d rooms to restore)", self.history.path,
                 len(self.saved_rooms))

    # --- leaving ------------------------------------------------------------------------

    def kill(self, c: Client, reason: str) -> None:
        """Disconnect ``c`` with an ERROR line telling it why (from any thread)."""
        log.info("closing %s: %s", c, reason)
        with self.delivering():
            if c.quit_reason is None:
                c.quit_reason = reason
            self.goodbye(c, reason)

    def remove(self, c: Client) -> None:
        """Remove ``c`` from the registry and tell its room-mates, exactly once."""
        reason = c.quit_reason or "Connection closed"
        with self.delivering():
            if c not in self.reg.clients:
                return
            if c.registered:
                self.reg.remember(c)
                ev = self.event(P.format_line(c.prefix, "QUIT", reason, truncate=True,
                                              trailing=True), c)
                for peer in self.reg.peers(c):
                    self.deliver(peer, ev)
                self.record_everywhere(c, ev)
                self.tell_watchers(c.nick, None)
            self.reg.forget(c)
            self.guest_marks.pop(c, None)
        self.login_throttle.forget(conn_key(c))
        log.info("quit %s %s:%d (%s)", c.nick, c.host, c.addr[1], reason)

    # --- output helpers ----------------------------------------------------------------

    def send(self, c: Client, data: bytes) -> None:
        """Queue one line to ``c`` (takes the lock)."""
        with self.delivering():
            self.writer.queue(c, data)

    def numeric(self, c: Client, code: str, *params: str) -> bytes:
        """A numeric reply to ``c``, formatted (no lock needed, nothing queued)."""
        # Middle parameters often echo what the client sent: make each one word, so a
        # hostile echo can never break the reply (the last one may hold spaces).
        safe = [p if p and " " not in p and p[0] != ":" and P.strip_bad(p) == p
                else P.echo_param(p) for p in params[:-1]]
        return P.format_line(self.config.name, code, c.nick, *safe, *params[-1:],
                             truncate=True)

    def reply(self, c: Client, code: str, *params: str) -> None:
        """Queue a numeric reply to ``c`` (takes the lock)."""
        self.send(c, self.numeric(c, code, *params))

    def error(self, c: Client, code: str, *params: str) -> bytes:
        """An error numeric with its usual text (:data:`protocol.ERROR_TEXT`) last."""
        return self.numeric(c, code, *params, P.ERROR_TEXT[code])

    def reply_error(self, c: Client, code: str, *params: str) -> None:
        """Queue an error numeric with its usual text to ``c`` (takes the lock)."""
        self.send(c, self.error(c, code, *params))

    def send_many(self, c: Client, lines: Iterable[bytes]) -> None:
        """Queue ``lines`` to ``c`` in one lock hold, so nothing interleaves (takes it)."""
        with self.delivering():
            self.to_client(c, lines)

    def event(self, plain: bytes, by: Client | None = None, ext: bytes | None = None) -> Event:
        """Stamp a storable event (msgid, time) that ``by`` causes (its account goes in the
        account tag).  Lock held: stamps follow delivery order."""
        return Event(plain, self.clock, self.clock.stamp(time.time()), None, False,
                     by.account if by is not None else None, ext)

    def to_room(self, ch: Channel, line: bytes, by: Client | None = None,
                ext: bytes | None = None) -> Event:
        """Stamp the event ``line`` (by ``by``; ``ext``: its extended-join form) and queue
        it to every member of ``ch``, each as its caps ask.  Caller holds the lock."""
        ev = self.event(line, by, ext)
        self.fan_out(ch, ev)
        if self.history is not None:
            self.history.add(ch.folded, ev.ms, False, line, None)
        return ev

    def fan_out(self, ch: Channel, ev: Event, skip: Client | None = None) -> None:
        """Queue ``ev`` to every member of ``ch`` but ``skip``, each as its caps ask; a
        room where nobody takes tags gets the plain line in the plain loop.  Lock held."""
        q = self.writer.queue
        if not ch.tagged:
            if not ev.tagged_only:
                for m in ch.members:
                    if m is not skip:
                        q(m, ev.plain)
            return
        for m in ch.members:
            if m is not skip:
                out = ev.line_for(m)
                if out is not None:
                    q(m, out)

    def change_nick(self, c: Client, new: str) -> None:
        """Give ``c`` the free nick ``new``; once registered, everyone who shares a room
        with it (and it) sees the NICK.  Lock held."""
        old = c.nick
        if old != "*" and self.reg.nicks.get(P.casefold(old)) is c:
            del self.reg.nicks[P.casefold(old)]
        if c.registered:
            self.reg.remember(c)  # under the old nick, before it changes
        self.reg.nicks[P.casefold(new)] = c
        c.nick = new
        if c.registered:
            ev = self.event(P.format_line(c.prefix, "NICK", new), c)
            c.update_prefix()
            self.deliver(c, ev)
            for peer in self.reg.peers(c):
                self.deliver(peer, ev)
            self.record_everywhere(c, ev)
            if P.casefold(old) != P.casefold(new):  # a change of case is the same nick
                self.tell_watchers(old, None)
                self.tell_watchers(new, c)

    def tell_watchers(self, nick: str, who: Client | None) -> None:
        """MONITOR: tell whoever watches ``nick`` that ``who`` now has it (730), or, with
        None, that nobody does (731).  Lock held."""
        for m in self.reg.watchers.get(P.casefold(nick), ()):
            if who is None:
                self.writer.queue(m, self.numeric(m, P.RPL_MONOFFLINE, nick))
            else:
                self.writer.queue(m, self.numeric(m, P.RPL_MONONLINE, who.prefix))

    def record_everywhere(self, c: Client, ev: Event) -> None:
        """Store ``c``'s QUIT or NICK in the history of each of its rooms.  Lock held."""
        if self.history is not None:
            for ch in c.channels.values():
                self.history.add(ch.folded, ev.ms, False, ev.plain, None)

    def deliver(self, c: Client, ev: Event) -> None:
        """Queue ``ev`` to one client as its caps ask.  Caller holds the lock."""
        out = ev.line_for(c)
        if out is not None:
            self.writer.queue(c, out)

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
                wake = self.writer.needs_wake()
        if wake:
            self.writer.wake()

    # --- rooms that outlive a restart ----------------------------------------------------

    def save_room(self, ch: Channel) -> None:
        """Store ``ch``'s topic and modes, so a restart keeps them.  Lock held."""
        if self.history is not None:
            self.history.save_room(ch.folded, room_state(ch))

    def restore_room(self, ch: Channel) -> None:
        """Give a room being created the state it had before a restart, if any (it stays
        saved until the room really is created).  Lock held."""
        state = self.saved_rooms.get(ch.folded)
        if not state:
            return
        try:
            ch.topic = str(state["topic"])
            ch.topic_by = str(state["topic_by"])
            ch.topic_at = int(state["topic_at"])
            ch.created = int(state.get("created", ch.created))
            ch.modes = {m for m in state["modes"] if m in "imnst"}
            key = state["key"]
            ch.key = str(key) if key else None
            ch.limit = max(0, int(state["limit"]))
            ch.bans = _entries(state["bans"], True)
            ch.excepts = _entries(state.get("excepts", []), False)
            ch.invex = _entries(state.get("invex", []), False)
            founder = state.get("founder")
            ch.founder = str(founder) if founder else None
        except (KeyError, TypeError, ValueError):
            log.warning("saved state of %s is damaged; the room starts afresh", ch.name)

    def founded(self, account_key: str) -> int:
        """How many rooms, live or waiting, the account founded.  Lock held."""
        return (sum(1 for ch in self.reg.channels.values() if ch.founder == account_key)
                + sum(1 for st in self.saved_rooms.values()
                      if st.get("founder") == account_key))

    def _room_gone(self, ch: Channel) -> None:
        # A room nobody is in is forgotten, as IRC does, unless an account founded it: that
        # one is its founder's and waits, as it was, for the next join.  Nor is one forgotten
        # when everyone leaves because the server is stopping: it comes back after a restart.
        if ch.founder is not None:
            self.saved_rooms[ch.folded] = room_state(ch)
        elif self.history is not None and not self.stopping.is_set():
            self.history.save_room(ch.folded, None)

    # --- batches and labeled responses --------------------------------------------------

    def batch_id(self) -> str:
        return f"{next(self._batch_ids):x}"

    def labeled(self, c: Client, label: str) -> None:
        """Let ``c``'s held lines go, its own reply labeled: one line takes the label,
        several come in a labeled batch, none get ``ACK`` (labeled-response).  Lock held."""
        held = self.writer.unhold(c)
        label_tag = P.tag_section({"label": label})[1:-1]
        own = [i for i, (mine, _) in enumerate(held) if mine]
        lines = [line for _, line in held]
        if not own:
            lines.append(add_tag(label_tag, P.format_line(self.config.name, "ACK")))
        elif len(own) == 1 or whole_batch([lines[i] for i in own]):
            lines[own[0]] = add_tag(label_tag, lines[own[0]])
        else:
            ref = self.batch_id()
            opening = add_tag(label_tag, P.format_line(self.config.name, "BATCH", "+" + ref,
                                                       "labeled-response"))
            inner = b"batch=" + ref.encode()
            for i in own:
                if not has_batch_tag(lines[i]):
                    lines[i] = add_tag(inner, lines[i])
            lines.insert(own[-1] + 1, P.format_line(self.config.name, "BATCH", "-" + ref))
            lines.insert(own[0], opening)
        self.writer.put(c, lines)

    # --- registration ------------------------------------------------------------------

    def _isupport_tokens(self) -> list[str]:
        cfg = self.config
        return [
            f"AWAYLEN={P.AWAYLEN}", "BOT=B", "CASEMAPPING=ascii",
            f"CHANLIMIT=#:{cfg.max_channels}", "CHANMODES=beI,k,l,imnst",
            f"CHANNELLEN={P.CHANNELLEN}", "CHANTYPES=#", "ELIST=CMNTU", "EXCEPTS=e",
            f"EXTBAN={EXTBAN_PREFIX},{EXTBAN_TYPES}", "INVEX=I",
            f"KICKLEN={P.KICKLEN}", f"MAXLIST=b:{MAX_BANS},e:{MAX_BANS},I:{MAX_BANS}",
            "MODES=4", f"MONITOR={MONITOR_MAX}",
            f"NAMELEN={NAMELEN}", f"NETWORK={cfg.network}",
            f"NICKLEN={P.NICKLEN}", "PREFIX=(ov)@+", "STATUSMSG=@+",
            "TARGMAX=PRIVMSG:4,NOTICE:4,JOIN:,PART:,NAMES:10,WHOIS:1,KICK:4",
            f"TOPICLEN={P.TOPICLEN}", "UTF8ONLY", f"USERLEN={P.USERLEN}", "WHOX",
        ] + ([f"CHATHISTORY={HISTORY_MAX}", "MSGREFTYPES=msgid,timestamp"]
             if self.history is not None else [])

    def ready(self, c: Client) -> bool:
        """Has ``c`` sent all registration needs (NICK, USER, CAP END if it began CAP)?"""
        return not (c.registered or c.cap_negotiating or c.nick == "*" or not c.user)

    def password_ok(self, c: Client) -> bool:
        """Has ``c`` given the server password (PASS), if there is one?  Constant time."""
        want = self.config.password
        if want is None:
            return True
        given = c.password if c.password is not None else ""
        return hmac.compare_digest(given.encode(), want.encode())

    def try_register(self, c: Client) -> None:
        """Welcome ``c`` once NICK, USER (and CAP END, PASS) are in.  Takes the lock."""
        if not self.ready(c):
            return
        if not self.password_ok(c):
            self.reply(c, P.ERR_PASSWDMISMATCH, "Password incorrect")
            self.kill(c, "Bad password")
            return
        cfg = self.config
        isupport = self.isupport_lines(c)  # may ask the socket its address: not under the lock
        with self.delivering():
            # Registered and welcomed in one step, so no other line can reach it before 001.
            c.registered = True
            c.update_prefix()
            self.tell_watchers(c.nick, c)
            self.reg.user_count += 1
            self.reg.max_users = max(self.reg.max_users, self.reg.user_count)
            lines = [
                self.numeric(c, P.RPL_WELCOME,
                             f"Welcome to the {cfg.network} Network, {c.prefix}"),
                self.numeric(c, P.RPL_YOURHOST,
                             f"Your host is {cfg.name}, running version {VERSION}"),
                self.numeric(c, P.RPL_CREATED, f"This server was created {self.created}"),
                self.numeric(c, P.RPL_MYINFO, cfg.name, VERSION, "Biow", "beiIklmnostv",
                             "beIklov"),
            ]
            lines += isupport
            lines += self.lusers_lines(c)
            lines += self.motd_lines(c)
            if self.tls_port is not None and c.tls is None:
                lines.append(P.format_line(
                    cfg.name, "NOTICE", c.nick,
                    f"This connection is not encrypted. Connect with TLS to port "
                    f"{self.tls_port} to keep your messages private."))
            self.to_client(c, lines)
        log.info("registered %s as %s", f"{c.host}:{c.addr[1]}", c.prefix)

    def isupport_lines(self, c: Client) -> list[bytes]:
        """005 lines, twelve tokens each (not under the lock: FILEHOST asks c's socket)."""
        toks = self.isupport
        url = self.filehost_url(c) if self.filehost_url is not None else None
        if url is not None:
            toks = [*toks, f"soju.im/FILEHOST={P.isupport_value(url)}"]
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
        """375/372/376, or 422 without a MOTD (no lock needed)."""
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
