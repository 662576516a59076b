"""What the server says, in the user's words: goodbyes, refused joins and mode changes.

IRC servers speak to IRC clients ("Closing Link: 10.0.0.5 (Excess Flood)", "Cannot join
channel (+b)", "sets mode +b bob!*@*"); a desktop user should never have to know that.
Pure functions over text, no state, no Tk; the session calls them on its network thread.
"""

from __future__ import annotations

import re

from chatroom import protocol as P

# "Closing Link: <host> (<reason>)", as ircd servers (and ours) word the ERROR that
# precedes a disconnect; the host is of no use to the user.
_CLOSING = re.compile(r"^\s*closing link:?\s*[^\s(]*\s*(?:\((?P<reason>.*)\))?\s*$",
                      re.IGNORECASE | re.DOTALL)

# Reasons (lower case, by their start) that mean something other than their words.
_REASONS = (
    ("server shutting down", "the server is shutting down"),
    ("excess flood", "you sent too much too quickly"),
    ("max sendq exceeded", "you were not reading fast enough"),
    ("sendq exceeded", "you were not reading fast enough"),
    ("ping timeout", "the connection stopped answering"),
    ("read timeout", "the connection stopped answering"),
    ("registration timed out", "joining took too long"),
    ("bad password", "the server password was wrong"),
)


def goodbye(text: str) -> str:
    """The server's ERROR text as a reason for a sentence ("… because <reason>")."""
    m = _CLOSING.match(text)
    reason = (m.group("reason") or "" if m else text).strip()
    low = reason.lower()
    for start, words in _REASONS:
        if low.startswith(start):
            return words
    if low.startswith("killed"):  # "Killed (oper (reason))": who and why still matter
        return f"a server operator removed you: {reason}"
    if low.startswith("quit"):  # our own QUIT echoed back: "Quit: <our message>"
        return "you left"
    return reason or "the server closed the connection"


# Join refusals by numeric: the server's text names the mode letter, not the reason.
_REFUSALS = {
    P.ERR_BANNEDFROMCHAN: "you are banned from {room}",
    P.ERR_INVITEONLYCHAN: "{room} is invite-only: someone in it has to invite you first",
    P.ERR_BADCHANNELKEY: "{room} needs a password, and the one given was missing or wrong",
    P.ERR_CHANNELISFULL: "{room} is full",
}


def join_refused(code: str, room: str, text: str) -> str:
    """Why the server would not let us into ``room`` (a clause, no full stop)."""
    words = _REFUSALS.get(code)
    return words.format(room=room) if words else (text or "the server refused")


# Flag modes: what "+x" and "-x" do, as a verb phrase after the setter's name.
_FLAGS = {
    "i": ("made the room invite-only", "opened the room to everyone"),
    "m": ("made the room moderated: only operators and voiced members can talk",
          "let everyone in the room talk again"),
    "n": ("stopped messages from outside the room", "allowed messages from outside the room"),
    "t": ("let only operators change the topic", "let everyone change the topic"),
    "s": ("made the room secret", "made the room visible in the room list"),
    "p": ("made the room private", "made the room public"),
}
_MEMBER = {  # prefix modes: (+, -), {nick} is the member
    "q": ("made {nick} an owner of the room", "took ownership of the room from {nick}"),
    "a": ("made {nick} an administrator of the room", "took {nick}'s administrator role"),
    "o": ("made {nick} a room operator", "took {nick}'s operator role"),
    "h": ("made {nick} a half-operator", "took {nick}'s half-operator role"),
    "v": ("gave {nick} a voice", "took {nick}'s voice"),
}
_LISTS = {  # list modes: (+, -), {mask} is the entry
    "b": ("banned {mask}", "lifted the ban on {mask}"),
    "e": ("exempted {mask} from bans", "removed the ban exception for {mask}"),
    "I": ("let {mask} in without an invitation", "removed the invitation exception for {mask}"),
}


def _mask(mask: str) -> str:
    """A ban mask as a person: "bob!*@*" is "bob", anything wider stays a pattern."""
    nick, bang, rest = mask.partition("!")
    if bang and rest in ("*@*", "*") and nick and "*" not in nick and "?" not in nick:
        return nick
    return mask


def mode_change(modes: str, args: list[str], list_modes: str, always: str,
                when_set: str) -> list[str]:
    """A room MODE change as phrases ("banned bob", "made ann a room operator"), one per mode.

    ``list_modes``, ``always`` and ``when_set`` are the server's CHANMODES groups A, B and
    C (which modes take an argument); prefix modes are the ones in ``_MEMBER``.
    """
    phrases: list[str] = []
    sign = "+"
    rest = list(args)
    for ch in modes:
        if ch in "+-":
            sign = ch
            continue
        on = sign == "+"
        takes = (ch in _MEMBER or ch in list_modes or ch in always
                 or (ch in when_set and on))
        arg = rest.pop(0) if takes and rest else ""
        if ch in _MEMBER and arg:
            phrases.append(_MEMBER[ch][0 if on else 1].format(nick=arg))
        elif ch in _LISTS and arg:
            phrases.append(_LISTS[ch][0 if on else 1].format(mask=_mask(arg)))
        elif ch == "k":
            phrases.append("set a password for the room" if on
                           else "removed the room's password")
        elif ch == "l":
            phrases.append(f"limited the room to {arg} people" if on and arg
                           else "removed the room's size limit")
        elif ch in _FLAGS:
            phrases.append(_FLAGS[ch][0 if on else 1])
        else:
            phrases.append(f"set the room's mode {sign}{ch}{' ' + arg if arg else ''}")
    return phrases


def mode_sentence(setter: str, modes: str, args: list[str], list_modes: str, always: str,
                  when_set: str) -> str:
    """One line for the log: "ann banned bob and made cid a room operator"."""
    phrases = mode_change(modes, args, list_modes, always, when_set)
    if not phrases:
        return f"{setter} changed the room's settings"
    if len(phrases) == 1:
        return f"{setter} {phrases[0]}"
    return f"{setter} {', '.join(phrases[:-1])} and {phrases[-1]}"
