"""MODE: user modes (``+i``) and room modes (flags, key, limit, bans, ``+o``/``+v``).

Called from reader threads through the ``MODE`` handler.  :class:`ModeChange` lives only
while the registry lock is held; :func:`user_mode` and :func:`channel_mode` take it.
"""

from __future__ import annotations

import time

from chatroom import operators
from chatroom import protocol as P
from chatroom.hub import Hub
from chatroom.registry import MAX_BANS, Ban, Channel, Client, list_entry


def user_mode(hub: Hub, c: Client, nick: str, args: tuple[str, ...]) -> None:
    if P.casefold(nick) != P.casefold(c.nick):
        with hub.reg.lock:
            exists = hub.reg.find_nick(nick) is not None
        if not exists:
            hub.reply_error(c, P.ERR_NOSUCHNICK, P.echo_param(nick))
        else:
            hub.reply(c, P.ERR_USERSDONTMATCH, "Cant change mode for other users")
        return
    if not args:
        hub.reply(c, P.RPL_UMODEIS, "+" + "".join(sorted(c.modes)))
        return
    adding, changed, unknown = True, [], False
    for ch in args[0]:
        if ch in "+-":
            adding = ch == "+"
        elif ch == "i":
            if adding != ("i" in c.modes):
                with hub.reg.lock:
                    (c.modes.add if adding else c.modes.discard)("i")
                    hub.reg.invisible_count += 1 if adding else -1
                changed.append(("+" if adding else "-") + "i")
        elif ch == "o":
            # Anyone may drop +o; only OPER gives it (Modern: a "+o" is ignored).
            if not adding and "o" in c.modes:
                with hub.reg.lock:
                    c.modes.discard("o")
                changed.append("-o")
                operators.audit_deoper(c)
        elif ch in "wB":  # +w: WALLOPS; +B: a bot (bot-mode, ISUPPORT BOT=B)
            if adding != (ch in c.modes):
                with hub.reg.lock:
                    (c.modes.add if adding else c.modes.discard)(ch)
                changed.append(("+" if adding else "-") + ch)
        else:
            unknown = True
    if changed:
        hub.send(c, P.format_line(c.prefix, "MODE", c.nick, "".join(changed)))
    if unknown:
        hub.reply(c, P.ERR_UMODEUNKNOWNFLAG, "Unknown MODE flag")


FLAG_MODES = "imnst"
# The list modes: each one's entry and end numerics, and its end and full texts.
LIST_MODES = {"b": (P.RPL_BANLIST, P.RPL_ENDOFBANLIST, "End of channel ban list",
                    "Channel ban list is full"),
              "e": (P.RPL_EXCEPTLIST, P.RPL_ENDOFEXCEPTLIST, "End of channel exception list",
                    "Channel exception list is full"),
              "I": (P.RPL_INVEXLIST, P.RPL_ENDOFINVEXLIST,
                    "End of channel invite exception list",
                    "Channel invite exception list is full")}


def channel_mode(hub: Hub, c: Client, name: str, args: tuple[str, ...]) -> None:
    out: list[bytes] = []
    with hub.delivering():
        ch = hub.reg.find_channel(name)
        if ch is None:
            out.append(hub.error(c, P.ERR_NOSUCHCHANNEL, name))
        elif not args:
            out.append(hub.numeric(c, P.RPL_CHANNELMODEIS, ch.name,
                                   *ch.mode_string(show_key=c in ch.members)))
            out.append(hub.numeric(c, P.RPL_CREATIONTIME, ch.name, str(ch.created)))
        else:
            out += ModeChange(hub, c, ch).apply(args[0], list(args[1:]))
        hub.to_client(c, out)


class ModeChange:
    """One MODE command on a room: apply what is allowed, broadcast it as one line.

    Lives only while the registry lock is held.  Unknown modes get 472, bad parameters
    696, a non-operator 482 (once); list queries (``MODE #a b``) are answered in place.
    """

    def __init__(self, hub: Hub, c: Client, ch: Channel) -> None:
        self.hub, self.c, self.ch = hub, c, ch
        # A server operator counts as the room's operator; what it changes so is audited.
        self.power = operators.room_power(c, ch)
        self.is_op = bool(self.power)
        self.replies: list[bytes] = []
        self.applied: list[tuple[str, str, str | None]] = []  # (sign, mode, argument)
        self.denied = False

    def apply(self, modestr: str, params: list[str]) -> list[bytes]:
        adding = True
        for mch in modestr:
            if mch in "+-":
                adding = mch == "+"
            elif mch in LIST_MODES:
                self._list(adding, mch, params.pop(0) if params else None)
            elif mch in FLAG_MODES:
                if self._allowed():
                    self._flag(adding, mch)
            elif mch == "k":
                arg = params.pop(0) if params and (adding or params) else None
                if self._allowed():
                    self._key(adding, arg)
            elif mch == "l":
                arg = params.pop(0) if adding and params else None
                if self._allowed():
                    self._limit(adding, arg)
            elif mch in "ov":
                arg = params.pop(0) if params else None
                if self._allowed() and arg is not None:
                    self._member(adding, mch, arg)
            else:
                self._unknown(mch)
        if self.denied:
            self.replies.append(self._err(P.ERR_CHANOPRIVSNEEDED, self.ch.name))
        self._broadcast()
        return self.replies

    def _num(self, code: str, *params: str) -> bytes:
        return self.hub.numeric(self.c, code, *params)

    def _err(self, code: str, *params: str) -> bytes:
        return self.hub.error(self.c, code, *params)

    def _allowed(self) -> bool:
        if not self.is_op:
            self.denied = True
        return self.is_op

    def _unknown(self, mch: str) -> None:
        self.replies.append(self._num(P.ERR_UNKNOWNMODE, mch, "is unknown mode char to me"))

    def _invalid(self, mch: str, arg: str, why: str) -> None:
        self.replies.append(self._num(P.ERR_INVALIDMODEPARAM, self.ch.name, mch, arg, why))

    def _flag(self, adding: bool, mch: str) -> None:
        if adding != (mch in self.ch.modes):
            (self.ch.modes.add if adding else self.ch.modes.discard)(mch)
            self.applied.append(("+" if adding else "-", mch, None))

    def _key(self, adding: bool, arg: str | None) -> None:
        if not adding:
            if self.ch.key is not None:
                self.ch.key = None
                self.applied.append(("-", "k", "*"))
            return
        if arg is None:
            return  # +k with no key: nothing to set, as established servers do
        if not arg or len(arg) > 23 or any(ch in arg for ch in " ,:") or not arg.isprintable():
            self._invalid("k", "*", "Key must be 1-23 printable characters, no spaces")
            return
        self.ch.key = arg
        self.applied.append(("+", "k", arg))

    def _limit(self, adding: bool, arg: str | None) -> None:
        if not adding:
            if self.ch.limit:
                self.ch.limit = 0
                self.applied.append(("-", "l", None))
            return
        if arg is None:
            return
        if not arg.isdigit() or not 0 < int(arg) <= 1_000_000:
            self._invalid("l", P.echo_param(arg, 20), "Limit must be a positive number")
            return
        self.ch.limit = int(arg)
        self.applied.append(("+", "l", str(self.ch.limit)))

    def _entries(self, mch: str) -> list[Ban]:
        ch = self.ch
        return ch.bans if mch == "b" else ch.excepts if mch == "e" else ch.invex

    def _list(self, adding: bool, mch: str, arg: str | None) -> None:
        """+b, +e or +I: a query without an argument, else add or remove one entry."""
        ch, entries = self.ch, self._entries(mch)
        code, end, end_text, full_text = LIST_MODES[mch]
        if arg is None:  # a query of the list, allowed to anyone who can see the room
            for b in entries:
                self.replies.append(self._num(code, ch.name, b.mask, b.by, str(b.at)))
            self.replies.append(self._num(end, ch.name, end_text))
            return
        if not self._allowed():
            return
        entry = list_entry(P.echo_param(arg, 100), self.c.prefix, int(time.time()),
                           mute_ok=mch == "b")
        if isinstance(entry, str):  # a malformed extban: refused, in words, not stored
            self._invalid(mch, P.echo_param(arg, 100), entry)
            return
        known = next((b for b in entries if b.mask == entry.mask), None)
        if adding and known is None:
            if len(entries) >= MAX_BANS:
                self.replies.append(self._num(P.ERR_BANLISTFULL, ch.name, mch, full_text))
                return
            entries.append(entry)
            self.applied.append(("+", mch, entry.mask))
        elif not adding and known is not None:
            entries.remove(known)
            self.applied.append(("-", mch, entry.mask))

    def _member(self, adding: bool, mch: str, nick: str) -> None:
        hub, ch = self.hub, self.ch
        member = hub.reg.find_nick(nick)
        if member is None:
            self.replies.append(self._err(P.ERR_NOSUCHNICK, nick))
            return
        if member not in ch.members:
            self.replies.append(self._err(P.ERR_USERNOTINCHANNEL, member.nick, ch.name))
            return
        sym = "@" if mch == "o" else "+"
        pfx = ch.members[member]
        if adding and sym not in pfx:
            ch.members[member] = "".join(s for s in "@+" if s in pfx or s == sym)
            self.applied.append(("+", mch, member.nick))
        elif not adding and sym in pfx:
            ch.members[member] = pfx.replace(sym, "")
            self.applied.append(("-", mch, member.nick))

    def _broadcast(self) -> None:
        if not self.applied:
            return
        modes, margs, sign = "", [], ""
        for s, m, a in self.applied:
            if s != sign:
                modes += s
                sign = s
            modes += m
            if a is not None:
                margs.append(a)
        line = P.format_line(self.c.prefix, "MODE", self.ch.name, modes, *margs)
        if self.power == operators.OVERRIDE:
            operators.audit_override(self.c, self.ch, f"set MODE {' '.join([modes, *margs])}")
        self.hub.to_room(self.ch, line, self.c)
        self.hub.save_room(self.ch)
