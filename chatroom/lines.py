"""How events look as lines of the log: text pieces with their tag names, no Tk.

A line is a list of ``(text, tags)`` pieces (:data:`Parts`); the chat view inserts each
piece with its tags in one ``Text.insert`` call, so no index is ever computed from a
Python string offset.  Pure functions of their arguments; the app calls them on the Tk
thread, and tests may call them from anywhere.
"""

from __future__ import annotations

import re
import time

from chatroom.events import UserJoined, UserLeft, UserQuit, UserRenamed

Parts = list[tuple[str, tuple[str, ...]]]

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


def stamp(ts: float) -> str:
    """The time in front of a line: ``[14:05] `` (local time)."""
    return time.strftime("[%H:%M] ", time.localtime(ts))


def message(ts: float, sender: str, text: str, *, own: bool, action: bool = False,
            private: bool = False, notice: bool = False, to: str | None = None
            ) -> tuple[Parts, tuple[str, ...]]:
    """A message line and the tags of the whole line (background: own, private).

    ``own`` for what we said (shown at once, IRC does not echo it); ``to`` for our own
    private message to that nick; ``private`` for one to us.
    """
    nick_tag = ("own_nick",) if own else ("nick",)
    line_tags: tuple[str, ...] = ("own",) if own else ()
    if private or to:
        line_tags = ("private",)
    parts: Parts = [(stamp(ts), ("time",))]
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
    return parts, line_tags


def event(text: str, ts: float | None = None) -> Parts:
    """A small grey line about the room (someone joined, the topic changed)."""
    return [(stamp(ts or time.time()), ("time",)), ("— " + text, ("event",))]


def plain(text: str, tag: str) -> Parts:
    """A line of one kind (``info``, ``error``, ``notice``), no time in front."""
    return [(text, (tag,))]


def help_row(command: str, what: str) -> Parts:
    """One row of /help: the descriptions line up at a tab stop (the ``help`` tag)."""
    return [(f"{command}\t{what}", ("help",))]


def _reason(reason: str) -> str:
    return f" ({reason})" if reason else ""


def membership(ev: UserJoined | UserLeft | UserQuit | UserRenamed) -> str:
    """What a change of the member list says in the log."""
    match ev:
        case UserJoined(nick=nick, room=room):
            return f"{nick} joined {room}"
        case UserLeft(nick=nick, room=room, reason=reason, kicked_by=by) if by:
            return f"{nick} was removed from {room} by {by}" + _reason(reason)
        case UserLeft(nick=nick, room=room, reason=reason):
            return f"{nick} left {room}" + _reason(reason)
        case UserQuit(nick=nick, reason=reason):
            return f"{nick} quit" + _reason(reason)
        case UserRenamed(new=new, is_self=True):
            return f"You are now known as {new}"
        case UserRenamed(old=old, new=new):
            return f"{old} is now known as {new}"
    raise TypeError(ev)  # pragma: no cover - the union above is complete


def topic_changed(by: str, text: str) -> str:
    return f"{by} set the topic: {text}" if text else f"{by} cleared the topic"


def removed(room: str, by: str | None, reason: str) -> str:
    """We were kicked (or parted by the server): say so and what to do."""
    who = f" by {by}" if by else ""
    return (f"You were removed from {room}{who}" + _reason(reason)
            + ". Type /join to join again, or go Back to Login.")


def connection_lost(reason: str, will_retry: bool) -> str:
    return f"Connection lost: {reason.rstrip('.')}." + (" Reconnecting…" if will_retry else "")
