"""The command table and every command handler.

Each command is declared once with :func:`command` (its name, how many parameters it needs,
whether it is allowed before registration); ``connection`` checks 451 and 461 for all of
them in one place before a handler runs.  Handlers run on the reader thread of the client
that sent the line.  They take the registry lock only through :meth:`Hub.delivering` (or
``hub.reg.lock`` for read-only queries), never do socket or disk I/O under it, and queue
replies with the hub's helpers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from chatroom import login, multiline, operators, playback, presence, readmarker
from chatroom import protocol as P
from chatroom.config import VERSION, Config
from chatroom.hub import Event, Hub
from chatroom.modes import channel_mode, user_mode
from chatroom.protocol import Message
from chatroom.registry import NAMELEN, Channel, Client

log = logging.getLogger(__name__)

# What CAP LS offers (sts, with a value, is added per connection when configured; the
# history caps only when history is on; draft/read-marker after them; draft/multiline, with
# its limits, last, unless --no-multiline).
CAPABILITIES = ("account-notify", "account-tag", "away-notify", "batch", "cap-notify",
                "echo-message", "extended-join", "extended-monitor", "labeled-response",
                "message-tags", "multi-prefix", "sasl", "server-time", "setname",
                "standard-replies", "userhost-in-names")
HISTORY_CAPS = ("draft/chathistory", "draft/event-playback")
REGISTRATION_CAP = "draft/account-registration"
# What CAP LS 302 says after a cap's name.
CAP_VALUES = {"sasl": login.MECHANISMS, REGISTRATION_CAP: "before-connect"}
# Rooms one account may found (they outlive their members: a cap keeps one user from
# claiming every name, and the store from growing without bound).
FOUNDED_MAX = 20
# Client-only tags that say something passing (typing): relayed, never stored.
PASSING_TAGS = frozenset({"+typing", "+draft/typing"})


def offered_caps(history: bool, registration: bool = True, values: bool = False,
                 config: Config | None = None) -> tuple[str, ...]:
    """What CAP LS lists (without sts), in its order; ``values`` as CAP 302 gives them
    (draft/multiline, and its limits, as ``config`` says; by default the defaults)."""
    config = config or Config()
    caps = CAPABILITIES + ((REGISTRATION_CAP,) if registration else ()) + (
        HISTORY_CAPS if history else ()) + (readmarker.CAP,) + (
        (multiline.CAP,) if config.multiline else ())
    if values:
        given = {**CAP_VALUES, multiline.CAP: multiline.cap_value(config)}
        return tuple(f"{cap}={given[cap]}" if cap in given else cap for cap in caps)
    return caps


def offered(hub: Hub, values: bool = False) -> tuple[str, ...]:
    return offered_caps(hub.history is not None, hub.config.registration == "open", values,
                        hub.config)

Handler = Callable[[Hub, Client, Message], None]


@dataclass(frozen=True)
class Command:
    """A command's handler and what ``connection`` checks before calling it."""

    handler: Handler
    min_params: int = 0
    before_registration: bool = False


COMMANDS: dict[str, Command] = {}


def command(name: str, min_params: int = 0,
            before_registration: bool = False) -> Callable[[Handler], Handler]:
    """Declare a handler once with its metadata; the reader checks 451/461 for all."""

    def register(fn: Handler) -> Handler:
        COMMANDS[name] = Command(fn, min_params, before_registration)
        return fn

    return register


# --- handlers: registration --------------------------------------------------------------


@command("CAP", 1, before_registration=True)
def cmd_cap(hub: Hub, c: Client, msg: Message) -> None:
    sub = msg.params[0].upper()
    if sub == "LS":
        if not c.registered:
            c.cap_negotiating = True
        if len(msg.params) > 1 and msg.params[1].isdigit() and int(msg.params[1]) >= 302:
            # 302 implies cap-notify; our caps never change while running, so there is
            # never a CAP NEW or DEL to send.
            c.cap_version = 302
        listed = list(offered(hub, values=c.cap_version >= 302))
        sts = sts_policy(hub, c)
        if sts and c.cap_version >= 302:  # a cap with a value exists only for CAP 302
            listed.append("sts=" + sts)
        hub.send_many(c, cap_lines(hub, c, "LS", listed))
    elif sub == "LIST":
        hub.send_many(c, cap_lines(hub, c, "LIST", sorted(c.caps)))
    elif sub == "REQ":
        if not c.registered:
            c.cap_negotiating = True
        wanted = msg.params[1].split() if len(msg.params) > 1 else []
        text = " ".join(wanted)
        if wanted and all(w.lstrip("-") in offered(hub) for w in wanted):
            caps = set(c.caps)
            for w in wanted:
                if w.startswith("-"):
                    caps.discard(w[1:])
                else:
                    caps.add(w)
            if "sasl" not in caps:
                c.sasl = None  # an exchange in progress ends with the cap
            with hub.delivering():  # rooms count their tagged members
                c.set_caps(caps)
                hub.writer.queue(c, P.format_line(hub.config.name, "CAP", c.nick, "ACK", text))
        else:
            hub.send(c, P.format_line(hub.config.name, "CAP", c.nick, "NAK", text,
                                      truncate=True))
    elif sub == "END":
        c.cap_negotiating = False
        register(hub, c)
    else:
        hub.reply(c, P.ERR_INVALIDCAPCMD, P.echo_param(sub, 20), "Invalid CAP command")


def cap_lines(hub: Hub, c: Client, sub: str, caps: list[str]) -> list[bytes]:
    """``CAP <nick> LS :caps``, split over several lines with ``*`` (CAP 302) if long."""
    name, target = hub.config.name, c.nick
    room = P.MAX_LINE - len(f":{name} CAP {target} {sub} * :\r\n".encode()) - 1
    chunks: list[list[str]] = [[]]
    size = 0
    for cap in caps:
        if chunks[-1] and size + len(cap) + 1 > room and c.cap_version >= 302:
            chunks.append([])
            size = 0
        chunks[-1].append(cap)
        size += len(cap) + 1
    last = len(chunks) - 1
    return [P.format_line(name, "CAP", target, sub, *(["*"] if i < last else []),
                          " ".join(chunk), truncate=True, trailing=True)
            for i, chunk in enumerate(chunks)]


def sts_policy(hub: Hub, c: Client) -> str | None:
    """The IRCv3 sts value for ``c``: where TLS is (plaintext), or for how long to insist
    on it (TLS); None when the operator has not asked for STS."""
    if not hub.config.sts_duration or hub.tls_port is None:
        return None
    if c.tls is None:
        return f"port={hub.tls_port}"
    return f"duration={hub.config.sts_duration}"


@command("PASS", 1, before_registration=True)
def cmd_pass(hub: Hub, c: Client, msg: Message) -> None:
    if c.registered:
        hub.reply_error(c, P.ERR_ALREADYREGISTERED)
        return
    if login.insecure(hub, c):
        hub.send(c, P.format_line(
            hub.config.name, "FAIL", "PASS", "INSECURE_CONNECTION",
            f"Passwords are only accepted over TLS: connect to port {hub.tls_port}"))
        return
    c.password = msg.params[0]


@command("AUTHENTICATE", 1, before_registration=True)
def cmd_authenticate(hub: Hub, c: Client, msg: Message) -> None:
    login.cmd_authenticate(hub, c, msg)
    if c.registered and c.account is not None:
        operators.refused(hub, c)  # logged in, now, to an account banned server-wide


@command("REGISTER", 3, before_registration=True)
def cmd_register(hub: Hub, c: Client, msg: Message) -> None:
    login.cmd_register(hub, c, msg)
    if c.registered and c.account is not None:
        operators.refused(hub, c)


@command("VERIFY", 2, before_registration=True)
def cmd_verify(hub: Hub, c: Client, msg: Message) -> None:
    login.cmd_verify(hub, c, msg)


@command("NICK", 0, before_registration=True)
def cmd_nick(hub: Hub, c: Client, msg: Message) -> None:
    if not msg.params or not msg.params[0]:
        hub.reply_error(c, P.ERR_NONICKNAMEGIVEN)
        return
    new = msg.params[0]
    if not P.valid_nick(new):
        hub.reply_error(c, P.ERR_ERRONEUSNICKNAME, P.echo_param(new))
        return
    key = P.casefold(new)
    old = c.nick
    if c.lost_nicks and key in c.lost_nicks and not login.owns(c, key):
        hub.reply(c, P.ERR_NICKNAMEINUSE, new, "That nick is registered: log in to use it")
        return
    renamed = None
    with hub.delivering():
        if c.registered and login.owns(c, key):
            renamed = login.claim_from_guest(hub, c, key)  # the owner asks for it back
        holder = hub.reg.nicks.get(key)
        taken = holder is not None and holder is not c
        if not taken:
            if new == old:
                return
            hub.change_nick(c, new)
    if renamed:
        log.info("nick %s taken back for its owner, the guest is now %s", *renamed)
    if taken:
        hub.reply_error(c, P.ERR_NICKNAMEINUSE, new)
    elif c.registered:
        log.info("nick %s -> %s (%s)", old, new, c.host)
        login.protect_nick(hub, c)
    else:
        register(hub, c)


def register(hub: Hub, c: Client) -> None:
    """Complete ``c``'s registration once it has sent all it must (NICK, USER, CAP END)."""
    if not hub.ready(c):
        return
    if operators.refused(hub, c):  # a server ban: 465 and ERROR instead of the welcome
        return
    login.before_welcome(hub, c)
    hub.try_register(c)
    if c.registered:
        login.after_welcome(hub, c)


@command("USER", 4, before_registration=True)
def cmd_user(hub: Hub, c: Client, msg: Message) -> None:
    if c.registered:
        hub.reply_error(c, P.ERR_ALREADYREGISTERED)
        return
    if not msg.params[0] or not msg.params[3]:
        hub.reply_error(c, P.ERR_NEEDMOREPARAMS, "USER")
        return
    # Nothing usable left (all non-ASCII, say): a default, as Modern suggests, not an error.
    user = P.sanitize_user(msg.params[0], P.USERLEN - 1) or "user"
    c.user = "~" + user  # no ident lookup, so mark the user name as unverified
    c.realname = P.truncate_text(msg.params[3], NAMELEN)
    register(hub, c)


@command("PING", 1, before_registration=True)
def cmd_ping(hub: Hub, c: Client, msg: Message) -> None:
    hub.send(c, P.format_line(hub.config.name, "PONG", hub.config.name, msg.params[0],
                              truncate=True))


@command("PONG", 0, before_registration=True)
def cmd_pong(hub: Hub, c: Client, msg: Message) -> None:
    """Nothing to do: the reader counts any line as life (it resets the ping timer)."""


@command("QUIT", 0, before_registration=True)
def cmd_quit(hub: Hub, c: Client, msg: Message) -> None:
    text = P.truncate_text(msg.params[0], 300) if msg.params else ""
    reason = f"Quit: {text}" if text else "Quit"
    c.quit_reason = reason
    with hub.delivering():
        hub.goodbye(c, reason)


# --- handlers: rooms ---------------------------------------------------------------------


@command("JOIN", 1)
def cmd_join(hub: Hub, c: Client, msg: Message) -> None:
    if msg.params[0] == "0":
        part_all(hub, c, "Left all channels")
        return
    keys = msg.params[1].split(",") if len(msg.params) > 1 else []
    for i, name in enumerate(msg.params[0].split(",")):
        if name:
            join_one(hub, c, name, keys[i] if i < len(keys) else "")


def join_refusal(hub: Hub, c: Client, ch: Channel, key: str) -> tuple[str, ...] | None:
    """Why ``c`` may not join ``ch`` (the error numeric and the room), or None.  Lock held."""
    cfg = hub.config
    if cfg.max_members and len(ch.members) >= cfg.max_members:
        return (P.ERR_CHANNELISFULL, ch.name)
    by_op = c.invites.get(P.casefold(ch.name))
    if by_op:
        return None  # an operator's invitation gets past +i, +k, +l and bans
    if ch.banned(c):  # (+e exempts)
        return (P.ERR_BANNEDFROMCHAN, ch.name)
    if "i" in ch.modes and not ch.invex_match(c):  # (+I gets past +i)
        return (P.ERR_INVITEONLYCHAN, ch.name)
    if ch.key is not None and key != ch.key:
        return (P.ERR_BADCHANNELKEY, ch.name)
    if ch.limit and len(ch.members) >= ch.limit and by_op is None:
        # Any member's invitation gets past the limit (Modern), an outsider's nothing.
        return (P.ERR_CHANNELISFULL, ch.name)
    return None


def account_required(hub: Hub, c: Client, command: str, quiet: bool = False) -> bool:
    """On a private server (--require-account), refuse ``command`` to a guest, in words
    (unless ``quiet``: NOTICE is never answered)."""
    if not hub.config.require_account or c.account is not None:
        return False
    if not quiet:
        hub.send(c, P.format_line(hub.config.name, "FAIL", command, "ACCOUNT_REQUIRED",
                                  "Log in first: this server is for registered users"))
    return True


def join_one(hub: Hub, c: Client, name: str, chankey: str = "") -> None:
    cfg = hub.config
    if not P.valid_channel(name):
        hub.reply_error(c, P.ERR_NOSUCHCHANNEL, P.echo_param(name))
        return
    if account_required(hub, c, "JOIN"):
        return
    key = P.casefold(name)
    error: tuple[str, ...] | None = None
    replay = playback.wants_replay(hub, c)
    if readmarker.CAP in c.caps:
        readmarker.prepare(hub, c)  # its account's markers in memory: no disk I/O below
    holding = False
    with hub.delivering():
        ch = hub.reg.channels.get(key)
        if ch is not None and c in ch.members:
            return
        fresh = None
        if ch is None:
            # A room that existed before a restart comes back as it was, +i, +k and bans
            # included, and they apply to the first one in too.
            fresh = Channel(name)
            hub.restore_room(fresh)
        room = ch if ch is not None else fresh
        assert room is not None
        founder = room.founder is not None and login.owns(c, room.founder)
        if len(c.channels) >= cfg.max_channels:
            error = (P.ERR_TOOMANYCHANNELS, name)
        elif founder:
            pass  # its own room: no key, limit, ban or invitation stands in its way
        elif ch is not None:
            error = join_refusal(hub, c, ch, chankey)
        elif fresh is not None and fresh.folded in hub.saved_rooms:
            error = join_refusal(hub, c, fresh, chankey)
        if error is None:
            if replay:
                # Whatever the room says from now on waits until the replay of what it
                # said before has gone out, so old and new lines stay in order.
                holding = hub.writer.hold(c)
            if ch is None:
                assert fresh is not None
                ch = hub.reg.channels[key] = fresh
                restored = hub.saved_rooms.pop(key, None) is not None
                if (not restored and c.account is not None
                        and hub.founded(P.casefold(c.account)) < FOUNDED_MAX):
                    ch.founder = P.casefold(c.account)  # a new room is its creator's
                    hub.save_room(ch)
                # The first one in runs a room, unless the room has a founder: then only
                # the founder does.
                ch.add(c, "@" if ch.founder is None or login.owns(c, ch.founder) else "")
            else:
                ch.add(c, "@" if founder else "")
                c.invites.pop(key, None)
            c.channels[key] = ch
            line = P.format_line(c.prefix, "JOIN", ch.name)
            ext = P.format_line(c.prefix, "JOIN", ch.name, c.account or "*", c.realname,
                                trailing=True)
            joined = hub.to_room(ch, line, c, ext)
            presence.away_on_join(hub, c, ch)
            if ch.topic:
                hub.writer.queue(c, hub.numeric(c, P.RPL_TOPIC, ch.name, ch.topic))
                hub.writer.queue(c, hub.numeric(c, P.RPL_TOPICWHOTIME, ch.name, ch.topic_by,
                                                str(ch.topic_at)))
            readmarker.on_join(hub, c, ch)  # MARKREAD before the 366 (read-marker)
            hub.to_client(c, hub.names_lines(c, ch))
            mark = hub.history.appended if hub.history is not None else 0
    if error:
        hub.reply_error(c, *error)
        return
    log.info("join %s %s", c.nick, name)
    if replay:
        assert ch is not None
        old: list[bytes] = []
        try:
            old = playback.replay(hub, c, ch, joined.ms, mark)
        finally:  # never leave its output held, whatever happened
            with hub.delivering():
                hub.writer.insert_after_own(c, old)
                if holding:
                    hub.writer.put(c, [line for _, line in hub.writer.unhold(c)])


def leave(hub: Hub, c: Client, ch: Channel, line: bytes) -> None:
    """Tell every member (``c`` too) that ``c`` leaves ``ch``, then remove it.  Lock held."""
    hub.to_room(ch, line, c)
    hub.reg.remove_member(ch, c)


def part_all(hub: Hub, c: Client, reason: str) -> None:
    """JOIN 0: leave every room in one step (a KICK racing with it can't break it)."""
    with hub.delivering():
        for ch in list(c.channels.values()):
            leave(hub, c, ch, P.format_line(c.prefix, "PART", ch.name, reason, trailing=True))


@command("PART", 1)
def cmd_part(hub: Hub, c: Client, msg: Message) -> None:
    reason = msg.params[1] if len(msg.params) > 1 else ""
    for name in msg.params[0].split(","):
        if name:
            part_one(hub, c, name, reason)


def part_one(hub: Hub, c: Client, name: str, reason: str) -> None:
    with hub.delivering():
        ch = hub.reg.find_channel(name)
        if ch is None:
            error: bytes | None = hub.error(c, P.ERR_NOSUCHCHANNEL, P.echo_param(name))
        elif c not in ch.members:
            error = hub.error(c, P.ERR_NOTONCHANNEL, ch.name)
        else:
            error = None
            params = (ch.name, P.truncate_text(reason, 300)) if reason else (ch.name,)
            leave(hub, c, ch, P.format_line(c.prefix, "PART", *params, truncate=True,
                                            trailing=len(params) > 1))
    if error:
        hub.send(c, error)
    else:
        log.info("part %s %s", c.nick, name)


@command("TOPIC", 1)
def cmd_topic(hub: Hub, c: Client, msg: Message) -> None:
    name = msg.params[0]
    with hub.delivering():
        ch = hub.reg.find_channel(name)
        if ch is None:
            out = [hub.error(c, P.ERR_NOSUCHCHANNEL, P.echo_param(name))]
        elif len(msg.params) == 1:
            if c not in ch.members:
                out = [hub.error(c, P.ERR_NOTONCHANNEL, ch.name)]
            elif not ch.topic:
                out = [hub.numeric(c, P.RPL_NOTOPIC, ch.name, "No topic is set")]
            else:
                out = [hub.numeric(c, P.RPL_TOPIC, ch.name, ch.topic),
                       hub.numeric(c, P.RPL_TOPICWHOTIME, ch.name, ch.topic_by, str(ch.topic_at))]
        elif c not in ch.members and not operators.is_oper(c):
            out = [hub.error(c, P.ERR_NOTONCHANNEL, ch.name)]
        elif "t" in ch.modes and not operators.room_power(c, ch):
            out = [hub.error(c, P.ERR_CHANOPRIVSNEEDED, ch.name)]
        else:
            out = []
            if c not in ch.members or ("t" in ch.modes and operators.room_power(c, ch)
                                       == operators.OVERRIDE):
                operators.audit_override(c, ch, "set the topic")
            ch.topic = P.truncate_text(msg.params[1], P.TOPICLEN)
            ch.topic_by = c.prefix
            ch.topic_at = int(time.time())
            line = P.format_line(c.prefix, "TOPIC", ch.name, ch.topic, truncate=True,
                                 trailing=True)
            hub.to_room(ch, line, c)
            hub.save_room(ch)
        hub.to_client(c, out)


@command("NAMES", 0)
def cmd_names(hub: Hub, c: Client, msg: Message) -> None:
    if not msg.params:
        hub.reply(c, P.RPL_ENDOFNAMES, "*", "End of /NAMES list")
        return
    # Names of every room asked for, then one 366 naming the whole list (RFC 2812, Modern).
    with hub.delivering():
        for name in msg.params[0].split(",")[:10]:
            ch = hub.reg.find_channel(name)
            if ch is not None and ch.visible_to(c):
                hub.to_client(c, hub.names_lines(c, ch)[:-1])
        hub.writer.queue(c, hub.numeric(c, P.RPL_ENDOFNAMES, P.echo_param(msg.params[0], 200),
                                        "End of /NAMES list"))


def list_filter(params: list[str], now: float) -> Callable[[str, Channel], bool]:
    """LIST's names and ELIST conditions (ISUPPORT ELIST=CMNTU) as one test of a room.

    ``>n``/``<n``: more/fewer than n users; ``C>n``/``C<n``: created more/less than n
    minutes ago; ``T>n``/``T<n``: topic set more/less than n minutes ago (a room without a
    topic fails both); ``!mask``: name not matching; a name or wildcard mask: rooms that
    match any of them.  Every condition must hold.  A condition whose number is not a
    number is ignored.  Lock-free: the test runs under the caller's lock.
    """
    names: set[str] = set()
    masks: list[Callable[[str], bool]] = []
    nots: list[Callable[[str], bool]] = []
    tests: list[Callable[[Channel], bool]] = []
    for item in (i for param in params[:2] for i in param.split(",") if i):
        kind = item[0] if item[0] in "CT" and item[1:2] in ("<", ">") else ""
        rest = item[len(kind):]
        if rest[:1] in ("<", ">"):
            if not rest[1:].isdigit():
                continue
            tests.append(_elist_test(kind, int(rest[1:]), rest[0] == ">", now))
        elif item[0] == "!" and len(item) > 1:
            nots.append(P.mask_matcher(P.casefold(item[1:])))
        elif "*" in item or "?" in item:
            masks.append(P.mask_matcher(P.casefold(item)))
        else:
            names.add(P.casefold(item))

    def test(key: str, ch: Channel) -> bool:
        if (names or masks) and key not in names and not any(m(key) for m in masks):
            return False
        return not any(m(key) for m in nots) and all(t(ch) for t in tests)
    return test


def _elist_test(kind: str, n: int, more: bool, now: float) -> Callable[[Channel], bool]:
    """One ELIST condition: users (``kind`` ""), creation (``C``) or topic time (``T``)."""
    if not kind:
        return lambda ch: len(ch.members) > n if more else len(ch.members) < n
    edge = now - 60 * n  # "more than n minutes ago" is before the edge

    def test(ch: Channel) -> bool:
        if kind == "T" and not ch.topic:
            return False
        stamp = ch.created if kind == "C" else ch.topic_at
        return stamp < edge if more else stamp > edge
    return test


@command("LIST", 0)
def cmd_list(hub: Hub, c: Client, msg: Message) -> None:
    wanted = list_filter(list(msg.params), time.time()) if msg.params else None
    with hub.delivering():
        lines = [hub.numeric(c, P.RPL_LISTSTART, "Channel", "Users  Name")]
        for key, ch in hub.reg.channels.items():
            if (wanted is None or wanted(key, ch)) and ch.visible_to(c):
                lines.append(hub.numeric(c, P.RPL_LIST, ch.name, str(len(ch.members)),
                                         f"[+{''.join(sorted(ch.modes))}] {ch.topic}"))
        lines.append(hub.numeric(c, P.RPL_LISTEND, "End of /LIST"))
        hub.to_client(c, lines)


# --- handlers: messages ------------------------------------------------------------------


@command("PRIVMSG", 0)
def cmd_privmsg(hub: Hub, c: Client, msg: Message) -> None:
    relay(hub, c, msg, notice=False)


@command("NOTICE", 0)
def cmd_notice(hub: Hub, c: Client, msg: Message) -> None:
    relay(hub, c, msg, notice=True)


@command("TAGMSG", 1)
def cmd_tagmsg(hub: Hub, c: Client, msg: Message) -> None:
    """Only tags (typing notices, reactions): for message-tags clients, like PRIVMSG."""
    relay(hub, c, msg, notice=False, tagmsg=True)


def relay(hub: Hub, c: Client, msg: Message, notice: bool, tagmsg: bool = False) -> None:
    """PRIVMSG/NOTICE/TAGMSG to rooms (everyone but the sender) and nicks.

    NOTICE never errors.  Each target is one event (its own msgid and time); the sender's
    client-only tags go to message-tags recipients; echo-message senders get their copy.
    """
    cmd = msg.command
    if not msg.params or not msg.params[0]:
        if not notice:
            hub.reply(c, P.ERR_NORECIPIENT, f"No recipient given ({cmd})")
        return
    if not tagmsg and (len(msg.params) < 2 or not msg.params[1]):
        if not notice:
            hub.reply(c, P.ERR_NOTEXTTOSEND, "No text to send")
        return
    if hub.config.require_account and account_required(hub, c, cmd, quiet=notice):
        return  # (the first test keeps the call off the hot path of an open server)
    text = () if tagmsg else (msg.params[1],)
    tags = P.client_tags(msg.tags) if msg.tags else None
    c.last_message = time.monotonic()
    errors: list[bytes] = []
    away: list[bytes] = []
    # Each line is formatted once, before taking the lock (only this thread changes c.prefix).
    targets = []
    for target in msg.params[0].split(",")[:4]:
        status = ""
        while target[:1] in "@+" and len(target) > 1:
            status, target = status + target[0], target[1:]
        if target:
            targets.append((status, target, P.format_line(c.prefix, cmd, status + target, *text,
                                                          truncate=True, trailing=not tagmsg)))
    history = hub.history
    # What the store keeps: the sender's tags as relayed (a typing notice: nothing at all).
    stored_tags = P.tag_section(tags)[1:-1] if tags else None
    keep = history is not None and not (tagmsg and (not tags or PASSING_TAGS.issuperset(tags)))
    store = history.add if keep and history is not None else None
    if presence.BOT_MODE in c.modes:
        # bot-mode's tag rides with the client tags, so only message-tags clients get it
        # and nobody else's delivery changes; the store keeps what the bot sent.
        tags = {**tags, "bot": ""} if tags else {"bot": ""}
    now = time.time()
    # The hot path: the lock and the wake-up are spelled out rather than taken through
    # delivering(), whose generator costs about 2 us a message (10 % of a 50-member fan-out).
    with hub.reg.lock:
        q = hub.writer.queue
        for status, target, line in targets:
            if P.is_channel(target):
                ch = hub.reg.channels.get(P.casefold(target))
                if ch is None:
                    errors.append(hub.error(c, P.ERR_NOSUCHNICK, target))
                    continue
                mode = ch.members.get(c)
                if (mode is None and "n" in ch.modes) or ("m" in ch.modes and not mode):
                    errors.append(hub.error(c, P.ERR_CANNOTSENDTOCHAN, ch.name))
                    continue
                if not mode and ch.bans:  # (a room without +b entries pays nothing)
                    why = ch.silenced(c)  # a ban or a $m: mute, unless +e exempts
                    if why is not None:
                        errors.append(hub.numeric(c, P.ERR_CANNOTSENDTOCHAN, ch.name, why))
                        continue
                ms = hub.clock.stamp(now)
                if store is not None and not status:  # a message to "@#room" is the ops' only
                    store(ch.folded, ms, not tagmsg, line, stored_tags)
                if not (status or ch.tagged or c.echo):
                    # The common case: nobody here takes tags, so the plain line, as before
                    # (no Event object either: it would only cost time on the hot path).
                    if not tagmsg:
                        for m in ch.members:
                            if m is not c:
                                q(m, line)
                    continue
                ev = Event(line, hub.clock, ms, tags, tagmsg, c.account)
                if status:
                    for m, pfx in ch.members.items():
                        if m is not c and ("@" in pfx or ("+" in status and "+" in pfx)):
                            hub.deliver(m, ev)
                else:
                    hub.fan_out(ch, ev, skip=c)
                if c.echo:
                    hub.deliver(c, ev)
            else:
                peer = hub.reg.find_nick(target)
                if peer is None:
                    errors.append(hub.error(c, P.ERR_NOSUCHNICK, target))
                    continue
                ev = Event(line, hub.clock, hub.clock.stamp(now), tags, tagmsg, c.account)
                if c.echo:
                    hub.deliver(c, ev)
                if peer is c:
                    # To yourself: the echo is the reply, the copy you receive is not (it
                    # never takes a label), and without echo-message there is only that.
                    out = ev.line_for(c)
                    if out is not None:
                        hub.writer.queue_aside(c, out)
                else:
                    hub.deliver(peer, ev)
                if keep:
                    said = (ev.ms, not tagmsg, line, stored_tags)
                    c.remember_talk(peer.nick, said)
                    if peer is not c:
                        peer.remember_talk(c.nick, said)
                if peer.away is not None and not notice and not tagmsg:
                    away.append(hub.numeric(c, P.RPL_AWAY, peer.nick, peer.away))
        if not notice:
            for line in errors + away:
                q(c, line)
        wake = hub.writer.needs_wake()
    if wake:
        hub.writer.wake()


@command("MARKREAD", 0)
def cmd_markread(hub: Hub, c: Client, msg: Message) -> None:
    readmarker.cmd_markread(hub, c, msg)  # FAIL NEED_MORE_PARAMS itself, not 461


@command("CHATHISTORY", 1)
def cmd_chathistory(hub: Hub, c: Client, msg: Message) -> None:
    if hub.history is None:
        hub.reply_error(c, P.ERR_UNKNOWNCOMMAND, "CHATHISTORY")
        return
    playback.cmd_chathistory(hub, c, msg)


# --- handlers: queries -------------------------------------------------------------------


@command("LUSERS", 0)
def cmd_lusers(hub: Hub, c: Client, msg: Message) -> None:
    with hub.reg.lock:
        lines = hub.lusers_lines(c)
    hub.send_many(c, lines)


@command("MOTD", 0)
def cmd_motd(hub: Hub, c: Client, msg: Message) -> None:
    hub.send_many(c, hub.motd_lines(c))


@command("VERSION", 0)
def cmd_version(hub: Hub, c: Client, msg: Message) -> None:
    lines = [hub.numeric(c, P.RPL_VERSION, VERSION, hub.config.name, "threaded IRC chat server")]
    hub.send_many(c, lines + hub.isupport_lines(c))


@command("TIME", 0)
def cmd_time(hub: Hub, c: Client, msg: Message) -> None:
    now = time.strftime("%A %B %d %Y -- %H:%M:%S +00:00", time.gmtime())
    hub.reply(c, P.RPL_TIME, hub.config.name, now)


def _who_line(hub: Hub, c: Client, m: Client, ch: Channel | None) -> bytes:
    return hub.numeric(c, P.RPL_WHOREPLY, ch.name if ch else "*", m.user, m.host,
                       hub.config.name, m.nick, presence.who_flags(c, m, ch),
                       f"0 {m.realname}")


@command("WHO", 0)
def cmd_who(hub: Hub, c: Client, msg: Message) -> None:
    mask = msg.params[0] if msg.params else "*"
    lines: list[bytes] = []
    # "o": server operators only (RFC 2812 3.6.1); flags come before a WHOX "%fields".
    opers_only = len(msg.params) > 1 and "o" in msg.params[1].split("%")[0]
    whox = presence.whox_request(msg.params)

    def line(m: Client, ch: Channel | None) -> bytes:
        if whox is None:
            return _who_line(hub, c, m, ch)
        return presence.whox_line(hub, c, m, ch, *whox)

    with hub.reg.lock:
        if P.is_channel(mask):
            ch = hub.reg.find_channel(mask)
            if ch is not None and ch.visible_to(c):
                # Seen from outside the room, its invisible (+i) members stay hidden.
                inside = c in ch.members
                lines = [line(m, ch) for m in ch.members
                         if (not opers_only or "o" in m.modes)
                         and (inside or "i" not in m.modes)]
        else:
            folded = P.casefold(mask)
            exact = hub.reg.find_nick(mask)
            if exact is not None:
                if not opers_only or "o" in exact.modes:
                    lines = [line(exact, None)]
            elif any(ch in folded for ch in "*?"):
                match = P.mask_matcher(folded)
                for key, m in hub.reg.nicks.items():
                    # A mask finds an invisible user only for itself or a room-mate.
                    if (m.registered and match(key) and (not opers_only or "o" in m.modes)
                            and ("i" not in m.modes or m is c
                                 or not m.channels.keys().isdisjoint(c.channels))):
                        lines.append(line(m, None))
                        if len(lines) >= 200:
                            break
    shown = P.echo_param(mask)
    hub.send_many(c, lines + [hub.numeric(c, P.RPL_ENDOFWHO, shown, "End of WHO list")])


@command("WHOIS", 1)
def cmd_whois(hub: Hub, c: Client, msg: Message) -> None:
    nick = msg.params[-1].split(",")[0]
    if not nick:
        hub.reply_error(c, P.ERR_NONICKNAMEGIVEN)
        return
    shown = P.echo_param(nick)
    with hub.reg.lock:
        m = hub.reg.find_nick(nick)
        if m is None:
            lines = [hub.error(c, P.ERR_NOSUCHNICK, shown)]
        else:
            lines = [hub.numeric(c, P.RPL_WHOISUSER, m.nick, m.user, m.host, "*", m.realname),
                     hub.numeric(c, P.RPL_WHOISSERVER, m.nick, hub.config.name,
                                 hub.config.network)]
            multi = "multi-prefix" in c.caps
            rooms = [(pfx if multi else pfx[:1]) + ch.name
                     for ch in m.channels.values() if ch.visible_to(c)
                     for pfx in (ch.members[m],)]
            if rooms:
                lines.append(hub.numeric(c, P.RPL_WHOISCHANNELS, m.nick, " ".join(rooms)))
            if "o" in m.modes:
                lines.append(hub.numeric(c, P.RPL_WHOISOPERATOR, m.nick,
                                         "is an IRC operator"))
            if presence.BOT_MODE in m.modes:
                lines.append(hub.numeric(c, P.RPL_WHOISBOT, m.nick,
                                         f"is a bot on {hub.config.network}"))
            if m.away is not None:
                lines.append(hub.numeric(c, P.RPL_AWAY, m.nick, m.away))
            if m.account is not None:
                lines.append(hub.numeric(c, P.RPL_WHOISACCOUNT, m.nick, m.account,
                                         "is logged in as"))
            idle = int(time.monotonic() - m.last_message)
            lines.append(hub.numeric(c, P.RPL_WHOISIDLE, m.nick, str(idle), str(int(m.signon)),
                                     "seconds idle, signon time"))
            shown = m.nick
    lines.append(hub.numeric(c, P.RPL_ENDOFWHOIS, shown, "End of /WHOIS list"))
    hub.send_many(c, lines)


@command("WHOWAS", 0)
def cmd_whowas(hub: Hub, c: Client, msg: Message) -> None:
    """Most recent first; a count <= 0 means all (RFC 2812 3.6.3).  Wildcards allowed."""
    if not msg.params or not msg.params[0]:
        hub.reply_error(c, P.ERR_NONICKNAMEGIVEN)
        return
    try:
        count = int(msg.params[1]) if len(msg.params) > 1 else 0
    except ValueError:
        count = 0
    lines: list[bytes] = []
    with hub.reg.lock:
        # Each nick (up to 10) answers in turn, 406 for one never seen; 369 ends it all.
        for target in [t for t in msg.params[0].split(",") if t][:10]:
            match = P.mask_matcher(P.casefold(target))
            found = 0
            for folded, nick, user, host, real in reversed(hub.reg.whowas):
                if match(folded):
                    lines.append(hub.numeric(c, P.RPL_WHOWASUSER, nick, user, host, "*", real))
                    lines.append(hub.numeric(c, P.RPL_WHOISSERVER, nick, hub.config.name,
                                             hub.config.network))
                    found += 1
                    if 0 < count <= found:
                        break
            if not found:
                lines.append(hub.numeric(c, P.ERR_WASNOSUCHNICK, target,
                                         "There was no such nickname"))
    lines.append(hub.numeric(c, P.RPL_ENDOFWHOWAS, P.echo_param(msg.params[0], 200),
                             "End of WHOWAS"))
    hub.send_many(c, lines)


@command("USERHOST", 1)
def cmd_userhost(hub: Hub, c: Client, msg: Message) -> None:
    replies = []
    with hub.reg.lock:
        for nick in msg.params[:5]:
            m = hub.reg.find_nick(nick)
            if m is not None:
                replies.append(f"{m.nick}={'-' if m.away is not None else '+'}{m.user}@{m.host}")
    hub.reply(c, P.RPL_USERHOST, " ".join(replies))


@command("ISON", 1)
def cmd_ison(hub: Hub, c: Client, msg: Message) -> None:
    words = " ".join(msg.params).split()
    with hub.reg.lock:
        online = [m.nick for w in words[:50] for m in (hub.reg.find_nick(w),) if m is not None]
    hub.reply(c, P.RPL_ISON, " ".join(online))


@command("AWAY", 0)
def cmd_away(hub: Hub, c: Client, msg: Message) -> None:
    presence.cmd_away(hub, c, msg)


@command("SETNAME", 1)
def cmd_setname(hub: Hub, c: Client, msg: Message) -> None:
    presence.cmd_setname(hub, c, msg)


@command("MONITOR", 1)
def cmd_monitor(hub: Hub, c: Client, msg: Message) -> None:
    presence.cmd_monitor(hub, c, msg)


# --- handlers: operators -----------------------------------------------------------------


@command("MODE", 1)
def cmd_mode(hub: Hub, c: Client, msg: Message) -> None:
    target = msg.params[0]
    if P.is_channel(target):
        channel_mode(hub, c, target, msg.params[1:])
    else:
        user_mode(hub, c, target, msg.params[1:])


@command("KICK", 2)
def cmd_kick(hub: Hub, c: Client, msg: Message) -> None:
    """KICK #a user[,user] or KICK #a,#b ua,ub (channels paired with users, RFC 2812)."""
    rooms = [r for r in msg.params[0].split(",") if r][:4]
    nicks = [n for n in msg.params[1].split(",") if n][:4]
    if len(rooms) == 1:
        pairs = [(rooms[0], n) for n in nicks]
    elif len(rooms) == len(nicks):
        pairs = list(zip(rooms, nicks))
    else:
        hub.reply_error(c, P.ERR_NEEDMOREPARAMS, "KICK")
        return
    reason = msg.params[2] if len(msg.params) > 2 and msg.params[2] else c.nick
    reason = P.truncate_text(reason, P.KICKLEN)
    with hub.delivering():
        for room, nick in pairs:
            error = kick_one(hub, c, room, nick, reason)
            if error:
                hub.writer.queue(c, error)


def kick_one(hub: Hub, c: Client, room: str, nick: str, reason: str) -> bytes | None:
    """Remove ``nick`` from ``room``; the error reply if not allowed.  Caller holds the lock."""
    ch = hub.reg.find_channel(room)
    if ch is None:
        return hub.error(c, P.ERR_NOSUCHCHANNEL, room)
    power = operators.room_power(c, ch)
    if c not in ch.members and power != operators.OVERRIDE:
        return hub.error(c, P.ERR_NOTONCHANNEL, ch.name)
    if not power:
        return hub.error(c, P.ERR_CHANOPRIVSNEEDED, ch.name)
    victim = hub.reg.find_nick(nick)
    if victim is None or victim not in ch.members:
        return hub.error(c, P.ERR_USERNOTINCHANNEL, nick, ch.name)
    line = P.format_line(c.prefix, "KICK", ch.name, victim.nick, reason, truncate=True,
                         trailing=True)
    hub.to_room(ch, line, c)
    hub.reg.remove_member(ch, victim)
    if power == operators.OVERRIDE:
        operators.audit_override(c, ch, f"kicked {victim.nick} ({reason})")
    return None


@command("INVITE", 2)
def cmd_invite(hub: Hub, c: Client, msg: Message) -> None:
    nick, name = msg.params[0], msg.params[1]
    out: list[bytes] = []
    with hub.delivering():
        target = hub.reg.find_nick(nick)
        ch = hub.reg.find_channel(name)
        if ch is None:
            out.append(hub.error(c, P.ERR_NOSUCHCHANNEL, P.echo_param(name)))
        elif c not in ch.members:
            out.append(hub.error(c, P.ERR_NOTONCHANNEL, ch.name))
        elif "i" in ch.modes and "@" not in ch.members[c]:
            out.append(hub.error(c, P.ERR_CHANOPRIVSNEEDED, ch.name))
        elif target is None:
            out.append(hub.error(c, P.ERR_NOSUCHNICK, P.echo_param(nick)))
        elif target in ch.members:
            out.append(hub.error(c, P.ERR_USERONCHANNEL, target.nick, ch.name))
        else:
            target.invites[P.casefold(ch.name)] = "@" in ch.members[c]
            out.append(hub.numeric(c, P.RPL_INVITING, target.nick, ch.name))
            hub.writer.queue(target, P.format_line(c.prefix, "INVITE", target.nick, ch.name))
        hub.to_client(c, out)



# --- handlers: server operators (see the operators module) -------------------------------


@command("OPER", 2)
def cmd_oper(hub: Hub, c: Client, msg: Message) -> None:
    operators.cmd_oper(hub, c, msg)


@command("KILL", 2)
def cmd_kill(hub: Hub, c: Client, msg: Message) -> None:
    operators.cmd_kill(hub, c, msg)


@command("WALLOPS", 1)
def cmd_wallops(hub: Hub, c: Client, msg: Message) -> None:
    operators.cmd_wallops(hub, c, msg)


@command("KLINE", 1)
def cmd_kline(hub: Hub, c: Client, msg: Message) -> None:
    operators.cmd_kline(hub, c, msg)


@command("UNKLINE", 1)
def cmd_unkline(hub: Hub, c: Client, msg: Message) -> None:
    operators.cmd_unkline(hub, c, msg)


@command("STATS", 1)
def cmd_stats(hub: Hub, c: Client, msg: Message) -> None:
    operators.cmd_stats(hub, c, msg)


@command("INFO", 0)
def cmd_info(hub: Hub, c: Client, msg: Message) -> None:
    operators.cmd_info(hub, c, msg)


@command("HELP", 0)
def cmd_help(hub: Hub, c: Client, msg: Message) -> None:
    operators.cmd_help(hub, c, msg)


@command("ADMIN", 0)
def cmd_admin(hub: Hub, c: Client, msg: Message) -> None:
    operators.cmd_admin(hub, c, msg)
