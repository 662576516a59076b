"""Server operators: OPER, KILL, WALLOPS, server bans (KLINE, UNKLINE, STATS K), and the
server's own INFO, HELP and ADMIN.

* **Who is an operator**: an account named by ``--oper`` or made one by the admin command
  line (``account oper NAME``, kept by :mod:`chatroom.moderation`).  ``OPER <name>
  <password>`` checks the account's password exactly as a SASL login does
  (:func:`chatroom.login.check_password`: the same hashing pool, the same throttles,
  outside the registry lock) and gives user mode ``+o``.  Modern's order: a name that is
  no operator's gets 491 before any password is looked at; a wrong password 464.
* **Powers**: an operator acts as a room operator in every room (:func:`room_power` is the
  one check the room commands make), may KILL anyone, send WALLOPS, and ban an address
  or an account server-wide for a time.
* **Audit**: every operator action, granted or refused, is logged with who did it and to
  whom; a password never is.

Runs on the reader thread of the client that sent the line.  Store calls (disk I/O) and
password checks happen outside the registry lock; changes to clients take it through
:meth:`Hub.delivering`.
"""

from __future__ import annotations

import logging
import math
import re
import time

from chatroom import login
from chatroom import protocol as P
from chatroom.accounts import Account
from chatroom.config import VERSION
from chatroom.hub import Hub, conn_key
from chatroom.moderation import ACCOUNT_PREFIX, ModerationError, ServerBan, ban_mask
from chatroom.protocol import Message
from chatroom.registry import Channel, Client

log = logging.getLogger(__name__)

OVERRIDE = "override"  # room_power: allowed only because the client is a server operator
REASON_MAX = 300
# A ban's duration: a number of minutes (as KLINE always took it) or with a unit.
DURATION_RE = re.compile(r"([0-9]{1,9})([smhdw]?)\Z")
UNIT_SECONDS = {"": 60, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DURATION_MAX = 10 * 365 * 86400


def is_oper(c: Client) -> bool:
    return "o" in c.modes


def room_power(c: Client, ch: Channel) -> str:
    """May ``c`` act as an operator of ``ch``?  ``"op"`` as one of its operators,
    :data:`OVERRIDE` only as a server operator (the caller audits what it then does),
    ``""`` not at all.  Lock held."""
    if "@" in ch.members.get(c, ""):
        return "op"
    return OVERRIDE if "o" in c.modes else ""


def audit_override(c: Client, ch: Channel, what: str) -> None:
    log.info("oper override: %s %s in %s", c.prefix, what, ch.name)


def audit_deoper(c: Client) -> None:
    log.warning("oper: %s is no longer a server operator (MODE -o)", c.prefix)


def _refuse(hub: Hub, c: Client, command: str, target: str = "") -> None:
    log.info("oper: %s refused %s%s: not an operator", c.prefix, command,
             f" {target}" if target else "")
    hub.reply(c, P.ERR_NOPRIVILEGES, "Permission Denied- You're not an IRC operator")


def _notice(hub: Hub, c: Client, text: str) -> bytes:
    return P.format_line(hub.config.name, "NOTICE", c.nick, text, truncate=True)


# --- OPER --------------------------------------------------------------------------------


def oper_account(hub: Hub, name: str) -> Account | None:
    """The account ``name`` if it may become an operator (disk I/O: never under a lock)."""
    if hub.accounts is None or not P.valid_nick(name):
        return None
    account = hub.accounts.get(name)
    if account is None:
        return None
    if account.key in {P.casefold(n) for n in hub.config.opers}:
        return account
    created = hub.moderation.oper_created(account.key) if hub.moderation else None
    # The same account, not a later one that took a deleted operator's name.
    return account if created is not None and created == account.created else None


def cmd_oper(hub: Hub, c: Client, msg: Message) -> None:
    name, password = msg.params[0], msg.params[1]
    shown = P.echo_param(name, 40)
    if login.insecure(hub, c):
        log.info("oper: %s refused OPER as %r: not over TLS", c.prefix, shown)
        hub.send(c, P.format_line(
            hub.config.name, "FAIL", "OPER", "INSECURE_CONNECTION",
            f"Passwords are only accepted over TLS: connect to port {hub.tls_port}"))
        return
    account = oper_account(hub, name)
    if account is None:
        log.warning("oper: %s failed OPER as %r: not an operator account", c.prefix, shown)
        hub.reply(c, P.ERR_NOOPERHOST, "No O-lines for your host")
        return
    assert hub.accounts is not None
    check = login.check_password(hub.accounts, hub.login_throttle, hub.address_throttle,
                                 account.name, password, c.host, (conn_key(c),))
    if check.account is None:
        wait = (f": too many failed attempts, try again in {max(1, math.ceil(check.wait))} s"
                if check.wait > 0 else "")
        log.warning("oper: %s failed OPER as %s: %s", c.prefix, account.name,
                    "throttled" if wait else "wrong password")
        hub.reply(c, P.ERR_PASSWDMISMATCH, "Password incorrect" + wait)
        return
    with hub.delivering():
        new = "o" not in c.modes
        c.modes.add("o")
        hub.writer.queue(c, hub.numeric(c, P.RPL_YOUREOPER, "You are now an IRC operator"))
        if new:
            hub.writer.queue(c, P.format_line(c.prefix, "MODE", c.nick, "+o"))
    log.warning("oper: %s is now a server operator (account %s)", c.prefix, account.name)


# --- KILL and WALLOPS ----------------------------------------------------------------------


def cmd_kill(hub: Hub, c: Client, msg: Message) -> None:
    nick = msg.params[0]
    if not is_oper(c):
        _refuse(hub, c, "KILL", P.echo_param(nick, 40))
        return
    comment = P.truncate_text(msg.params[1], REASON_MAX) or c.nick
    # Modern: the victim gets the KILL, everyone sharing a room with it a QUIT saying who
    # did it and why, then the victim an ERROR, and its connection is closed.
    reason = f"Killed ({c.nick} ({comment}))"
    with hub.delivering():
        victim = hub.reg.find_nick(nick)
        if victim is None:
            hub.writer.queue(c, hub.error(c, P.ERR_NOSUCHNICK, P.echo_param(nick)))
        else:
            target = victim.prefix
            hub.writer.queue(victim, P.format_line(c.prefix, "KILL", victim.nick, comment,
                                                   truncate=True, trailing=True))
            if victim.quit_reason is None:
                victim.quit_reason = reason
            hub.goodbye(victim, reason)
    if victim is None:
        log.info("oper: %s KILL %s: no such nick", c.prefix, P.echo_param(nick, 40))
    else:
        log.warning("oper: %s KILL %s (%s)", c.prefix, target, comment)


def cmd_wallops(hub: Hub, c: Client, msg: Message) -> None:
    if not is_oper(c):
        _refuse(hub, c, "WALLOPS")
        return
    text = P.truncate_text(msg.params[0], REASON_MAX)
    line = P.format_line(c.prefix, "WALLOPS", text, truncate=True, trailing=True)
    count = 0
    with hub.delivering():
        for m in hub.reg.clients:
            if m.registered and ("w" in m.modes or "o" in m.modes):
                hub.writer.queue(m, line)
                count += 1
    log.warning("oper: %s WALLOPS to %d: %s", c.prefix, count, text)


# --- server bans -------------------------------------------------------------------------


def parse_duration(text: str) -> float | None:
    """Seconds from ``30`` (minutes), ``90s``, ``2h``, ``1d``, ``1w``; None if not one."""
    match = DURATION_RE.match(text)
    if match is None:
        return None
    return float(min(int(match.group(1)) * UNIT_SECONDS[match.group(2)], DURATION_MAX))


def _describe(ban: ServerBan, now: float) -> str:
    left = f"for {math.ceil(ban.expires - now)} s" if ban.expires else "permanently"
    return f"{ban.mask} {left} ({ban.reason})"


def cmd_kline(hub: Hub, c: Client, msg: Message) -> None:
    """``KLINE [duration] <user@host|host|$a:account> [:reason]``."""
    params = list(msg.params)
    if not is_oper(c):
        _refuse(hub, c, "KLINE", P.echo_param(params[-1], 40))
        return
    seconds = parse_duration(params[0]) if len(params) > 1 else None
    if seconds is not None:
        params.pop(0)
    mask = ban_mask(params[0])
    if mask is None:
        hub.send(c, _notice(hub, c, f"Invalid ban mask {P.echo_param(params[0], 60)}: give "
                                    "user@host, a host (or CIDR block), or $a:account"))
        return
    reason = P.truncate_text(params[1], REASON_MAX) if len(params) > 1 and params[1] else ""
    reason = reason or "No reason given"
    now = time.time()
    ban = ServerBan(mask, reason, c.prefix, now, now + seconds if seconds else 0.0)
    if ban.matches(c.user, c.host, c.account):
        hub.send(c, _notice(hub, c, f"Not banning {mask}: it matches you"))
        return
    assert hub.moderation is not None
    try:
        hub.moderation.add_ban(ban)
    except ModerationError as exc:
        log.error("oper: %s KLINE %s failed: %s", c.prefix, mask, exc)
        hub.send(c, _notice(hub, c, f"Could not store the ban on {mask}"))
        return
    why = f"K-Lined ({reason})"
    hit: list[str] = []
    with hub.delivering():
        for m in list(hub.reg.clients):
            if m.registered and m is not c and ban.matches(m.user, m.host, m.account):
                hit.append(m.prefix)
                hub.writer.queue(m, hub.numeric(m, P.ERR_YOUREBANNEDCREEP,
                                                f"You are banned from this server: {reason}"))
                if m.quit_reason is None:
                    m.quit_reason = why
                hub.goodbye(m, why)
        hub.writer.queue(c, _notice(hub, c, f"Added server ban {_describe(ban, now)}"
                                            + (f"; disconnected {len(hit)}" if hit else "")))
    log.warning("oper: %s KLINE %s: disconnected %s", c.prefix, _describe(ban, now),
                ", ".join(hit) or "nobody")


def cmd_unkline(hub: Hub, c: Client, msg: Message) -> None:
    if not is_oper(c):
        _refuse(hub, c, "UNKLINE", P.echo_param(msg.params[0], 40))
        return
    mask = ban_mask(msg.params[0])
    assert hub.moderation is not None
    try:
        gone = mask is not None and hub.moderation.remove_ban(mask)
    except ModerationError as exc:
        log.error("oper: %s UNKLINE %s failed: %s", c.prefix, mask, exc)
        gone = False
    shown = mask or P.echo_param(msg.params[0], 60)
    log.warning("oper: %s UNKLINE %s%s", c.prefix, shown, "" if gone else ": no such ban")
    hub.send(c, _notice(hub, c, f"Removed server ban {shown}" if gone
                        else f"No server ban on {shown}"))


def refused(hub: Hub, c: Client) -> bool:
    """Is ``c`` banned from the server?  Then it is told (465) and disconnected.  Called at
    registration, and when a registered connection logs in to an account.  No lock held."""
    if hub.moderation is None:
        return False
    ban = hub.moderation.find(c.user, c.host, c.account)
    if ban is None:
        return False
    log.info("banned connection %s:%d (%s!%s@%s, account %s) refused by %s", c.host,
             c.addr[1], c.nick, c.user, c.host, c.account, ban.mask)
    hub.reply(c, P.ERR_YOUREBANNEDCREEP, f"You are banned from this server: {ban.reason}")
    hub.kill(c, f"K-Lined ({ban.reason})")
    return True


def cmd_stats(hub: Hub, c: Client, msg: Message) -> None:
    """``STATS K`` (operators): the server bans, one 216 each; any other letter: only 219."""
    query = msg.params[0][:1] or "*"
    lines: list[bytes] = []
    if query in "kK":
        if not is_oper(c):
            _refuse(hub, c, "STATS K")
            return
        assert hub.moderation is not None
        now = time.time()
        for ban in hub.moderation.bans():
            if ban.mask.startswith(ACCOUNT_PREFIX):
                host, user = ban.mask, "*"
            else:
                user, _, host = ban.mask.rpartition("@")
            until = (time.strftime("until %Y-%m-%d %H:%M:%S UTC", time.gmtime(ban.expires))
                     if ban.expires else "permanent")
            lines.append(hub.numeric(c, P.RPL_STATSKLINE, "K", host, "*", user,
                                     f"{ban.reason} (by {ban.by.split('!')[0]}, {until}, "
                                     f"{math.ceil(ban.expires - now) if ban.expires else 0} s)"))
    lines.append(hub.numeric(c, P.RPL_ENDOFSTATS, P.echo_param(query, 1),
                             "End of /STATS report"))
    hub.send_many(c, lines)


# --- INFO, HELP, ADMIN -------------------------------------------------------------------


def _not_us(hub: Hub, c: Client, msg: Message) -> bool:
    """A query for another server (we are the only one): 402."""
    if msg.params and P.casefold(msg.params[0]) != P.casefold(hub.config.name):
        hub.reply(c, P.ERR_NOSUCHSERVER, P.echo_param(msg.params[0]), "No such server")
        return True
    return False


def cmd_info(hub: Hub, c: Client, msg: Message) -> None:
    if _not_us(hub, c, msg):
        return
    text = [f"{VERSION}: a threaded chat server speaking IRC and IRCv3,",
            "written in Python with nothing but its standard library.",
            f"Server {hub.config.name} of the {hub.config.network} network,",
            f"running since {hub.created}."]
    hub.send_many(c, [hub.numeric(c, P.RPL_INFO, t) for t in text]
                  + [hub.numeric(c, P.RPL_ENDOFINFO, "End of INFO list")])


def cmd_admin(hub: Hub, c: Client, msg: Message) -> None:
    if _not_us(hub, c, msg):
        return
    cfg = hub.config
    hub.send_many(c, [
        hub.numeric(c, P.RPL_ADMINME, cfg.name, "Administrative info"),
        hub.numeric(c, P.RPL_ADMINLOC1, f"{cfg.name}, a server of the {cfg.network} network"),
        hub.numeric(c, P.RPL_ADMINLOC2, "Ask a server operator: WHO * o lists them"),
        hub.numeric(c, P.RPL_ADMINEMAIL, "No e-mail address is published"),
    ])


HELP_TOPICS = {
    "JOIN": ["JOIN #room[,#room] [key]: enter rooms (made on first join).",
             "JOIN 0 leaves every room."],
    "PART": ["PART #room [:reason]: leave a room."],
    "PRIVMSG": ["PRIVMSG <#room|nick> :text: say something to a room or a person."],
    "NOTICE": ["NOTICE <#room|nick> :text: like PRIVMSG, never answered automatically."],
    "NICK": ["NICK <newnick>: change your nick."],
    "TOPIC": ["TOPIC #room [:text]: show or set a room's topic."],
    "MODE": ["MODE #room [+-modes [args]]: room modes (o v b k l i m n s t).",
             "MODE <yournick> [+-iw]: your own modes (i invisible, w wallops)."],
    "KICK": ["KICK #room nick [:reason]: remove someone from a room (operators)."],
    "INVITE": ["INVITE nick #room: invite someone into a room."],
    "WHO": ["WHO <#room|mask> [o]: who is there (flags: H here, G away, * operator)."],
    "WHOIS": ["WHOIS nick: who someone is."],
    "AWAY": ["AWAY [:text]: mark yourself away (no text: back)."],
    "QUIT": ["QUIT [:reason]: leave the server."],
    "REGISTER": ["REGISTER * * :password: create an account named after your nick."],
    "OPER": ["OPER <account> <password>: become a server operator (user mode +o)."],
    "KILL": ["KILL nick :reason: disconnect someone (server operators)."],
    "WALLOPS": ["WALLOPS :text: tell every operator and +w user (server operators)."],
    "KLINE": ["KLINE [duration] <user@host|host|cidr|$a:account> [:reason]: ban from",
              "the server (operators); duration in minutes, or 30s, 2h, 1d, 1w;",
              "none: for ever.  STATS K lists the bans, UNKLINE <mask> lifts one."],
    "UNKLINE": ["UNKLINE <mask>: lift a server ban (server operators)."],
    "STATS": ["STATS K: the server bans (server operators)."],
    "INFO": ["INFO: about this server's software."],
    "ADMIN": ["ADMIN: who runs this server."],
    "HELP": ["HELP [topic]: this help."],
}


def cmd_help(hub: Hub, c: Client, msg: Message) -> None:
    asked = msg.params[0] if msg.params and msg.params[0] else ""
    subject = P.echo_param(asked, 30) if asked else "*"
    if not asked:
        text = ["** Help System **", "",
                "Try HELP <topic> for one of these topics:",
                " ".join(HELP_TOPICS)]
    elif asked.upper() in HELP_TOPICS:
        text = [f"** The {asked.upper()} command **", "", *HELP_TOPICS[asked.upper()]]
    else:
        hub.reply(c, P.ERR_HELPNOTFOUND, subject, "No help available on this topic")
        return
    lines = [hub.numeric(c, P.RPL_HELPSTART, subject, text[0])]
    lines += [hub.numeric(c, P.RPL_HELPTXT, subject, t) for t in text[1:]]
    lines.append(hub.numeric(c, P.RPL_ENDOFHELP, subject, "End of /HELP"))
    hub.send_many(c, lines)
