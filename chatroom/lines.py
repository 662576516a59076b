"""How events look as lines of the log: text pieces with their tag names, no Tk.

A line is a list of ``(text, tags)`` pieces (:data:`Parts`); the chat view inserts each
piece with its tags in one ``Text.insert`` call, so no index is ever computed from a
Python string offset.  Pure functions of their arguments; the app calls them on the Tk
thread, and tests may call them from anywhere.

A room's lines look the same live and from its history (:func:`render`); history lines
get the ``history`` tag on top (greyed), and :func:`dated` puts a day line in front of a
line whose local date differs from the line before it.
"""

from __future__ import annotations

import re
import time

from chatroom.events import (
    Message,
    Notice,
    RoomLine,
    Topic,
    UserJoined,
    UserLeft,
    UserQuit,
    UserRenamed,
)
from chatroom.transfer import is_file_link

Parts = list[tuple[str, tuple[str, ...]]]
Row = tuple[Parts, tuple[str, ...]]  # one line: its pieces and the tags of the whole line
Day = tuple[int, int, int]  # a local date: (year, month, day)
HISTORY = "history"  # the line tag of lines from the room's history

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
            private: bool = False, notice: bool = False, to: str | None = None,
            mention: bool = False, filehost: str | None = None
            ) -> tuple[Parts, tuple[str, ...]]:
    """A message line and the tags of the whole line (background: own, private, mention).

    ``own`` for what we said (the server's echo, or our line shown at once by a server
    that does not echo); ``to`` for our own private message to that nick; ``private`` for
    one to us (both shown in a room's log; a private conversation's own log shows them as
    plain messages); ``mention`` for a line that names us.  Web addresses in the text
    get the ``link`` tag; a file on the server's file host (``filehost``, its upload URL)
    also gets a "Save…" after it (the ``save`` tag).
    """
    nick_tag = ("own_nick",) if own else ("nick",)
    line_tags: tuple[str, ...] = ("own",) if own else ()
    if private or to:
        line_tags = ("private",)
    if mention and not own:
        line_tags = ("mention",)
    parts: Parts = [(stamp(ts), ("time",))]
    if action:
        parts += [("* ", ("action",)), (sender, nick_tag + ("action",)), (" ", ("action",))]
        parts += links(text, ("action",), filehost)
    elif to:
        parts += [(sender, nick_tag), (f" → {to} ", ()), ("(private)", ("private_label",)),
                  (": ", ())] + links(text, (), filehost)
    elif private:
        parts += [(sender, nick_tag), (" ", ()), ("(private)", ("private_label",)),
                  (": ", ())] + links(text, (), filehost)
    elif notice:
        parts += [(f"-{sender}- ", nick_tag)] + links(text, ("notice",), filehost)
    else:
        parts += [(sender, nick_tag), (": ", ())] + links(text, (), filehost)
    if private and action:
        parts.insert(1, ("(private) ", ("private_label",)))
    # A message of several lines: the lines after the first (and every wrapped display
    # line) start under the text, not under the time.
    return _continued(parts), line_tags + ("msg",)


def _continued(parts: Parts) -> Parts:
    """``parts`` with the text after the message's first new line tagged ``cont``."""
    out: Parts = []
    after = False
    for text, tags in parts:
        if after:
            out.append((text, tags + ("cont",)))
            continue
        head, nl, rest = text.partition("\n")
        if not nl:
            out.append((text, tags))
            continue
        after = True
        out.append((head + nl, tags))
        if rest:
            out.append((rest, tags + ("cont",)))
    return out


# A web address in a line: http(s) up to white space or a character no URL has bare; the
# punctuation that usually ends a sentence is not part of it, nor a closing bracket that
# closes one opened before the address.
_URL_RE = re.compile(r"\bhttps?://[^\s<>\"\x00-\x1f\x7f]+", re.IGNORECASE)
_URL_TAIL = ".,;:!?'\"*"
_BRACKETS = {")": "(", "]": "[", "}": "{", ">": "<"}


def _url_end(url: str) -> str:
    while url:
        last = url[-1]
        if last in _URL_TAIL:
            url = url[:-1]
        elif last in _BRACKETS and url.count(last) > url.count(_BRACKETS[last]):
            url = url[:-1]
        else:
            break
    return url


def find_links(text: str) -> list[tuple[int, int]]:
    """Where the web addresses in ``text`` are: (start, end) offsets."""
    found = []
    for m in _URL_RE.finditer(text):
        url = _url_end(m.group())
        if len(url) > len("https://"):
            found.append((m.start(), m.start() + len(url)))
    return found


SAVE = "Save…"  # the action after a link to a file on the server's file host


def links(text: str, tags: tuple[str, ...] = (), filehost: str | None = None) -> Parts:
    """``text`` as pieces with ``tags``, its web addresses also tagged ``link``; a file on
    the file host whose upload URL is ``filehost`` gets the ``file`` tag and a Save…."""
    parts: Parts = []
    at = 0
    for start, end in find_links(text):
        if start > at:
            parts.append((text[at:start], tags))
        url = text[start:end]
        if is_file_link(url, filehost):
            parts.append((url, tags + ("link", "file")))
            parts.append((" ", tags))
            parts.append((SAVE, ("save",)))
        else:
            parts.append((url, tags + ("link",)))
        at = end
    if at < len(text) or not parts:
        parts.append((text[at:], tags))
    return parts


def event(text: str, ts: float | None = None) -> Parts:
    """A small grey line about the room (someone joined, the topic changed)."""
    return [(stamp(ts or time.time()), ("time",)), ("— " + text, ("event",))]


def render(ev: RoomLine, *, me: str = "", conversation: bool = False,
           filehost: str | None = None) -> Row | None:
    """How a room's event looks in the log, live or from history (None: not shown).

    ``me``: our nick, to mark the lines that name us.  ``conversation``: the line goes to
    a private conversation's own log, where "(private)" would say nothing.
    """
    match ev:
        case Message(own=True, private=True) if not conversation:
            return message(ev.time, ev.sender, ev.text, own=True, action=ev.action,
                           notice=ev.notice, to=ev.target, filehost=filehost)
        case Message():
            named = bool(me) and not ev.own and not conversation and mentions(ev.text, me)
            return message(ev.time, ev.sender, ev.text, own=ev.own, action=ev.action,
                           private=ev.private and not conversation, notice=ev.notice,
                           mention=named, filehost=filehost)
        case UserJoined() | UserLeft() | UserQuit() | UserRenamed():
            return event(membership(ev), ev.time), ()
        case Topic(by=str(by)):
            return event(topic_changed(by, ev.text), ev.time), ()
        case Notice():
            return plain(ev.text, "notice"), ()
    return None  # the topic as it is now (332): the topic bar shows that


def day_of(ts: float) -> Day:
    t = time.localtime(ts)
    return t.tm_year, t.tm_mon, t.tm_mday


def day(ts: float) -> Parts:
    """The line in front of a new day's lines: ``Tuesday 1 December 2026`` (local date)."""
    t = time.localtime(ts)
    return [(f"{time.strftime('%A', t)} {t.tm_mday} {time.strftime('%B %Y', t)}", ("day",))]


def dated(rows: list[tuple[float, Row]], before: Day | None) -> list[Row]:
    """``rows`` (each with its time) with a day line in front of every row whose local date
    is not that of the row above it; ``before`` is the date of the line above the first
    (None: the first row gets one, as the first line of a stretch of history does)."""
    out: list[Row] = []
    last = before
    for ts, row in rows:
        today = day_of(ts)
        if today != last:
            out.append((day(ts), ()))
            last = today
        out.append(row)
    return out


def as_history(rows: list[tuple[float, Row]]) -> list[tuple[float, Row]]:
    """``rows`` greyed as lines from the room's history."""
    return [(ts, (parts, tags + (HISTORY,))) for ts, (parts, tags) in rows]


# Characters a nick may hold (RFC 2812 plus '-'): a mention is our nick not inside a longer
# run of them, so "bob" is named in "bob: hi" and "@bob," but not in "bobby" or "kabob".
_NICK_CHARS = r"A-Za-z0-9\[\]\\`_^{|}\-"


def mentions(text: str, nick: str) -> bool:
    """Does ``text`` name ``nick`` (case-insensitively, as a whole word)?"""
    if not nick:
        return False
    pattern = rf"(?<![{_NICK_CHARS}]){re.escape(nick)}(?![{_NICK_CHARS}])"
    return re.search(pattern, text, re.IGNORECASE) is not None


def size_words(size: int) -> str:
    """A file's size as people write it: 980 bytes, 14 KB, 2.3 MB, 1.1 GB."""
    if size < 1000:
        return f"{size} bytes" if size != 1 else "1 byte"
    for unit, scale in (("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12)):
        if size < scale * 1000 or unit == "TB":
            value = size / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{size} bytes"


def file_message(name: str, size: int, url: str) -> str:
    """What the room is told when a file is shared: its name, its size and the link (a
    link every IRC client can open)."""
    return f"{name} ({size_words(size)}) {url}"


def unread_rule() -> Parts:
    """Where the lines not yet seen in a conversation start."""
    return [("───────  new messages  ───────", ("unread_rule",))]


def new_messages() -> Parts:
    """The rule between a room's history and what is said now that we are in."""
    return [("───  Earlier messages above · new messages below  ───", ("separator",))]


def start_of(room: str) -> Parts:
    """Above a room's very first line: nothing older exists."""
    return [(f"This is the start of the conversation in {room}.", ("start",))]


def missed() -> Parts:
    """Before the lines said while we were disconnected."""
    return [("While you were disconnected:", ("info",))]


def missed_more() -> Parts:
    """After them, when there was too much to fetch: a gap before the live lines."""
    return [("More was said while you were disconnected than is shown here.", ("info",))]


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
        case UserRenamed(old=old, new=new, is_self=True, forced=True):
            return renamed_to_guest(old, new)
        case UserRenamed(new=new, is_self=True):
            return f"You are now known as {new}"
        case UserRenamed(old=old, new=new):
            return f"{old} is now known as {new}"
    raise TypeError(ev)  # pragma: no cover - the union above is complete


def renamed_to_guest(old: str, new: str) -> str:
    """The server took a registered name back from us."""
    return (f"You are now {new}: the name {old} is registered to someone else. To use it, "
            f"log in (Leave Chat, then “Log in”); or pick another name with /nick.")


def claim_countdown(nick: str, left: int) -> str:
    """The banner before that: our name is registered, and the server's grace runs out."""
    when = f"in {left} s" if left > 0 else "now"
    return f"{nick} is registered to someone else: you'll be renamed {when} unless you log in."


def topic_changed(by: str, text: str) -> str:
    return f"{by} set the topic: {text}" if text else f"{by} cleared the topic"


def removed(room: str, by: str | None, reason: str) -> str:
    """We were kicked (or parted by the server): say so and what to do."""
    who = f" by {by}" if by else ""
    return f"You were removed from {room}{who}" + _reason(reason) + "."


def connection_lost(reason: str, will_retry: bool) -> str:
    return f"Connection lost: {reason.rstrip('.')}." + (" Reconnecting…" if will_retry else "")


def away(nick: str, text: str) -> str:
    return f"{nick} is away: {text}" if text else f"{nick} is away"


def away_changed(away: bool) -> str:
    return ("You are marked as away. Type /away alone when you are back." if away
            else "You are no longer marked as away.")


def whois_header(nick: str, facts: tuple[str, ...]) -> str:
    return f"About {nick}:" if facts else f"The server says nothing more about {nick}."


def paste_started(target: str, total: int) -> str:
    return (f"Sending {total} lines to {target}, a few a second so the server takes them "
            f"all; they appear here as they go.")


def paste_done(target: str, total: int) -> str:
    return f"All {total} lines reached {target}."


def paste_cut(target: str, sent: int, total: int) -> str:
    return (f"The connection dropped: {total - sent} of your {total} lines to {target} were "
            f"not sent. Paste them again once you are back.")
