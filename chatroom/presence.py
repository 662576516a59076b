"""Who is around and what they look like: MONITOR, AWAY (away-notify), SETNAME, bot mode
and WHOX.

* MONITOR (IRCv3 monitor): each client's list lives on it (``Client.monitoring``) and, the
  other way round, in ``Registry.watchers``; the hub tells the watchers (730/731) when a
  nick comes or goes, since every way of getting or losing a nick passes through it.
* Changes to a user that others may track (AWAY, SETNAME, and ACCOUNT in ``login``) go to
  :meth:`Registry.audience`: room-mates with the cap, and watchers with extended-monitor.
* WHOX (``WHO <mask> %fields[,token]``): the fields of one 354, in the spec's order.

Called from reader threads through the handlers; each function takes the registry lock
itself unless it says "lock held".
"""

from __future__ import annotations

import re
import time

from chatroom import protocol as P
from chatroom.hub import Hub
from chatroom.protocol import Message
from chatroom.registry import MONITOR_MAX, NAMELEN, Channel, Client

BOT_MODE = "B"  # ISUPPORT BOT=B: the user mode, and the WHO flag
WHOX_FIELDS = "tcuihsnfdlaor"  # the standard fields, in the order a 354 gives them
_TOKEN_RE = re.compile(r"[0-9]{1,3}\Z")
# A MONITOR target list echoed in 734 is cut to this many bytes (at a comma), so the
# reply fits in a line whatever the client sent.
_ECHO_TARGETS = 300


# --- MONITOR ---------------------------------------------------------------------------


def cmd_monitor(hub: Hub, c: Client, msg: Message) -> None:
    op = msg.params[0]
    targets = [t for t in msg.params[1].split(",") if t] if len(msg.params) > 1 else []
    if op in ("+", "-") and not targets:
        hub.reply_error(c, P.ERR_NEEDMOREPARAMS, "MONITOR")
        return
    with hub.delivering():
        if op == "+":
            hub.to_client(c, _add(hub, c, targets))
        elif op == "-":
            for t in targets:
                _unwatch(hub, c, P.casefold(t))
        elif op in ("C", "c"):
            hub.reg.unwatch_all(c)
        elif op in ("L", "l"):
            listed = list((c.monitoring or {}).values())
            hub.to_client(c, _lists(hub, c, P.RPL_MONLIST, listed))
            hub.writer.queue(c, hub.numeric(c, P.RPL_ENDOFMONLIST, "End of MONITOR list"))
        elif op in ("S", "s"):
            hub.to_client(c, _status(hub, c, list((c.monitoring or {}).values())))
        else:
            hub.writer.queue(c, hub.numeric(c, P.ERR_UNKNOWNERROR, "MONITOR",
                                            P.echo_param(op, 20), "Unknown MONITOR modifier"))


def _add(hub: Hub, c: Client, targets: list[str]) -> list[bytes]:
    """MONITOR +: watch each valid nick until the list is full; the status of those taken
    (730/731) and, if some did not fit, 734 with them as sent.  Lock held."""
    if c.monitoring is None:
        c.monitoring = {}
    taken: list[str] = []
    left: list[str] = []
    for i, t in enumerate(targets):
        if not P.valid_nick(t):
            continue  # a target must be a nick; masks and garbage are not watched
        key = P.casefold(t)
        if key not in c.monitoring:
            if len(c.monitoring) >= MONITOR_MAX:
                left = targets[i:]
                break
            c.monitoring[key] = t
            hub.reg.watchers.setdefault(key, set()).add(c)
        taken.append(t)
    lines = _status(hub, c, taken)
    if left:
        echo = ",".join(left)
        if len(echo.encode()) > _ECHO_TARGETS:
            echo = P.truncate_text(echo, _ECHO_TARGETS).rsplit(",", 1)[0] or "*"
        lines.append(hub.numeric(c, P.ERR_MONLISTFULL, str(MONITOR_MAX), P.echo_param(
            echo, _ECHO_TARGETS), "Monitor list is full."))
    if not c.monitoring:
        c.monitoring = None
    return lines


def _unwatch(hub: Hub, c: Client, key: str) -> None:
    """Take one casefolded nick off ``c``'s list.  Lock held."""
    if c.monitoring is None or c.monitoring.pop(key, None) is None:
        return
    watching = hub.reg.watchers.get(key)
    if watching is not None:
        watching.discard(c)
        if not watching:
            del hub.reg.watchers[key]
    if not c.monitoring:
        c.monitoring = None


def _status(hub: Hub, c: Client, nicks: list[str]) -> list[bytes]:
    """730 for those of ``nicks`` online (as nick!user@host), 731 for the rest.  Lock held."""
    online, offline = [], []
    for nick in nicks:
        m = hub.reg.find_nick(nick)
        if m is not None:
            online.append(m.prefix)
        else:
            offline.append(nick)
    return (_lists(hub, c, P.RPL_MONONLINE, online)
            + _lists(hub, c, P.RPL_MONOFFLINE, offline))


def _lists(hub: Hub, c: Client, code: str, items: list[str]) -> list[bytes]:
    """``code`` replies whose comma-separated lists of ``items`` each fit in a line."""
    head = len(P.format_line(hub.config.name, code, c.nick, "x", trailing=True)) - 1
    room = P.MAX_LINE - head
    lines: list[bytes] = []
    batch: list[str] = []
    size = 0
    for item in items:
        n = len(item.encode()) + 1
        if batch and size + n > room:
            lines.append(hub.numeric(c, code, ",".join(batch)))
            batch, size = [], 0
        batch.append(item)
        size += n
    if batch:
        lines.append(hub.numeric(c, code, ",".join(batch)))
    return lines


# --- AWAY, SETNAME ---------------------------------------------------------------------


def cmd_away(hub: Hub, c: Client, msg: Message) -> None:
    """Modern: no text, or an empty one, means back; we count blank text as empty (a
    client that sends "AWAY : " means nothing by the space)."""
    text = msg.params[0] if msg.params else ""
    if not text.strip():
        new = None
        reply = hub.numeric(c, P.RPL_UNAWAY, "You are no longer marked as being away")
    else:
        new = P.truncate_text(text, P.AWAYLEN)
        reply = hub.numeric(c, P.RPL_NOWAWAY, "You have been marked as being away")
    with hub.delivering():
        old, c.away = c.away, new
        if old != new:  # away-notify: a set, a change or a return, never a repeat
            line = (P.format_line(c.prefix, "AWAY", new, trailing=True) if new is not None
                    else P.format_line(c.prefix, "AWAY"))
            for m in hub.reg.audience(c, "away-notify"):
                hub.writer.queue(m, line)
        hub.writer.queue(c, reply)


def away_on_join(hub: Hub, c: Client, ch: Channel) -> None:
    """away-notify: the room learns that ``c``, who just joined it, is away.  Lock held."""
    if c.away is None:
        return
    line = P.format_line(c.prefix, "AWAY", c.away, trailing=True)
    for m in ch.members:
        if m is not c and "away-notify" in m.caps:
            hub.writer.queue(m, line)


# IRC's formatting codes (bold, colour, reset, reverse, italics, strikethrough, underline)
# are fine in a realname; any other control character is not.
_FORMATTING = frozenset("\x02\x03\x0f\x16\x1d\x1e\x1f")


def realname_ok(text: str) -> bool:
    return (bool(text.strip()) and len(text.encode()) <= NAMELEN
            and not any((ch < " " or ch == "\x7f") and ch not in _FORMATTING for ch in text))


def cmd_setname(hub: Hub, c: Client, msg: Message) -> None:
    text = msg.params[0]
    if not realname_ok(text):
        hub.send(c, P.format_line(hub.config.name, "FAIL", "SETNAME", "INVALID_REALNAME",
                                  "Realname is not valid"))
        return
    with hub.delivering():
        c.realname = text
        line = P.format_line(c.prefix, "SETNAME", text, trailing=True)
        # The spec: without the cap the change is silent, even to the one who made it.
        if "setname" in c.caps:
            hub.writer.queue(c, line)
        for m in hub.reg.audience(c, "setname"):
            hub.writer.queue(m, line)


# --- WHO flags and WHOX ----------------------------------------------------------------


def who_flags(c: Client, m: Client, ch: Channel | None) -> str:
    """``m``'s WHO flags as ``c`` sees them: H/G, ``*`` (operator), ``B`` (bot), the room
    prefix (all of it with multi-prefix).  Lock held."""
    flags = "G" if m.away is not None else "H"
    if "o" in m.modes:
        flags += "*"
    if BOT_MODE in m.modes:
        flags += BOT_MODE
    if ch is not None:
        pfx = ch.members.get(m, "")
        flags += pfx if "multi-prefix" in c.caps else pfx[:1]
    return flags


def whox_request(params: tuple[str, ...]) -> tuple[str, str] | None:
    """(fields, token) of a WHOX query (``WHO <mask> [flags]%fields[,token]``), or None
    for plain WHO.  Letters we don't know are ignored, as the spec asks; a token that is not
    one to three digits is no token, and ``t`` then says ``0``."""
    if len(params) < 2 or "%" not in params[1]:
        return None
    spec = params[1].split("%", 1)[1]
    asked, _, token = spec.partition(",")
    fields = "".join(f for f in WHOX_FIELDS if f in asked)
    return fields, token if _TOKEN_RE.match(token) else "0"


def whox_line(hub: Hub, c: Client, m: Client, ch: Channel | None, fields: str,
              token: str) -> bytes:
    """One 354: exactly ``fields`` of ``m``, in the standard order.  Lock held."""
    values: list[str] = []
    for f in fields:
        if f == "t":
            values.append(token)
        elif f == "c":
            room = ch if ch is not None else next(
                (r for r in m.channels.values() if r.visible_to(c)), None)
            values.append(room.name if room is not None else "*")
        elif f == "u":
            values.append(m.user)
        elif f in "ih":
            values.append(m.host)  # no reverse lookups: the host is the address
        elif f == "s":
            values.append(hub.config.name)
        elif f == "n":
            values.append(m.nick)
        elif f == "f":
            values.append(who_flags(c, m, ch))
        elif f == "d":
            values.append("0")
        elif f == "l":
            values.append(str(int(time.monotonic() - m.last_message)))
        elif f == "a":
            values.append(m.account or "0")
        elif f == "o":
            values.append("n/a")  # no op levels here
        else:
            values.append(m.realname)
    return hub.numeric(c, P.RPL_WHOSPCRPL, *values)
