"""IRCv3 ``draft/read-marker`` on the wire: MARKREAD set and get, the marker on join, and
every change told to all of an account's connections that negotiated the cap.

A target is a room or a nick (for a private talk: the other party), casefolded with the
server's casemapping.  A logged-in client's markers are its account's, in the
:class:`~chatroom.markers.Markers` store (on disk, so they survive restarts; kept in memory
once read).  A guest's are its connection's alone, in memory (:attr:`Hub.guest_marks`),
and are gone when it disconnects; logging in does not carry them over.

Timestamps are milliseconds since the epoch; one from the future is taken as now.  A
marker only moves forward: a set at or before the stored value is answered with the stored
value and changes nothing.

Threads: the reader thread of the client that sends MARKREAD or JOIN.  :func:`prepare`,
and the store writes in :func:`cmd_markread`, do disk I/O and run without the registry
lock; :func:`on_join` and :func:`current` run with it held and only read memory.
"""

from __future__ import annotations

import logging
import re
import time

from chatroom import protocol as P
from chatroom.hub import Hub
from chatroom.markers import MAX_TARGETS, MarkerError
from chatroom.protocol import Message
from chatroom.registry import Channel, Client

log = logging.getLogger(__name__)

CAP = "draft/read-marker"
_STAMP_RE = re.compile(r"timestamp=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\Z")


def target_key(target: str) -> str | None:
    """The casefolded key of a room or nick target, or None if it is neither."""
    if P.valid_channel(target) or P.valid_nick(target):
        return P.casefold(target)
    return None


def account_key(c: Client) -> str | None:
    return P.casefold(c.account) if c.account is not None else None


def prepare(hub: Hub, c: Client) -> None:
    """Have ``c``'s account's markers in memory (disk I/O the first time; not under the
    registry lock).  A failure is logged; the markers then read as unknown."""
    acct = account_key(c)
    if acct is None or hub.markers is None:
        return
    try:
        hub.markers.load(acct)
    except MarkerError as exc:
        log.warning("read markers of %s unavailable: %s", c.account, exc)


def current(hub: Hub, c: Client, key: str) -> int | None:
    """``c``'s marker for ``key`` (its account's, or its own as a guest).  Lock held."""
    acct = account_key(c)
    if acct is not None:
        return hub.markers.cached(acct, key) if hub.markers is not None else None
    mine = hub.guest_marks.get(c)
    return mine.get(key) if mine is not None else None


def markread_line(hub: Hub, target: str, ms: int | None) -> bytes:
    """``:server MARKREAD <target> timestamp=...`` (or ``*`` when nothing is known)."""
    value = "timestamp=" + P.format_time(ms) if ms is not None else "*"
    return P.format_line(hub.config.name, "MARKREAD", target, value)


def on_join(hub: Hub, c: Client, ch: Channel) -> None:
    """After ``c``'s JOIN of ``ch``, before its 366: the room's marker, if ``c`` has the
    cap (:func:`prepare` ran before the lock was taken).  Lock held."""
    if CAP in c.caps:
        hub.writer.queue(c, markread_line(hub, ch.name, current(hub, c, ch.folded)))


def fail(hub: Hub, c: Client, code: str, *params: str) -> None:
    hub.send(c, P.format_line(hub.config.name, "FAIL", "MARKREAD", code, *params,
                              truncate=True, trailing=True))


def cmd_markread(hub: Hub, c: Client, msg: Message) -> None:
    """``MARKREAD <target>`` (get) or ``MARKREAD <target> timestamp=...`` (set)."""
    if not msg.params or not msg.params[0]:
        fail(hub, c, "NEED_MORE_PARAMS", "Missing parameters")
        return
    target = msg.params[0]
    key = target_key(target)
    if key is None:
        fail(hub, c, "INVALID_PARAMS", P.echo_param(target), "Invalid parameters")
        return
    acct = account_key(c)
    if len(msg.params) == 1:  # get
        if acct is not None and hub.markers is not None:
            try:
                hub.markers.load(acct)
            except MarkerError as exc:
                log.warning("read markers of %s unavailable: %s", c.account, exc)
                fail(hub, c, "INTERNAL_ERROR", P.echo_param(target),
                     "The read timestamp could not be returned")
                return
        with hub.delivering():
            hub.writer.queue(c, markread_line(hub, target, current(hub, c, key)))
        return
    match = _STAMP_RE.match(msg.params[1])
    ms = P.parse_time(match.group(1)) if match else None
    if ms is None:
        fail(hub, c, "INVALID_PARAMS", P.echo_param(msg.params[1]), "Invalid parameters")
        return
    ms = min(ms, int(time.time() * 1000))  # never ahead of now
    if acct is None:
        set_for_guest(hub, c, target, key, ms)
        return
    if hub.markers is None:
        fail(hub, c, "INTERNAL_ERROR", P.echo_param(target),
             "The read timestamp could not be set")
        return
    try:
        old, new = hub.markers.advance(acct, key, ms)  # on disk before anyone is told
    except MarkerError as exc:
        log.warning("read marker of %s not saved: %s", c.account, exc)
        fail(hub, c, "INTERNAL_ERROR", P.echo_param(target),
             "The read timestamp could not be set")
        return
    with hub.delivering():
        # The value now, not ``new``: a later concurrent set may have passed it already,
        # and whoever is told last must hear the newest.
        value = current(hub, c, key)
        line = markread_line(hub, target, value if value is not None else new)
        hub.writer.queue(c, line)
        if old != new:
            for other in hub.reg.clients:
                if (other is not c and CAP in other.caps and other.registered
                        and account_key(other) == acct):
                    hub.writer.queue(other, line)


def set_for_guest(hub: Hub, c: Client, target: str, key: str, ms: int) -> None:
    """A guest's marker: this connection's, in memory only."""
    with hub.delivering():
        if c not in hub.reg.clients:
            return  # it has left; nothing to keep
        mine = hub.guest_marks.setdefault(c, {})
        old = mine.get(key)
        if old is None or ms > old:
            if old is None and len(mine) >= MAX_TARGETS:
                del mine[min(mine, key=lambda t: mine[t])]
            mine[key] = ms
        hub.writer.queue(c, markread_line(hub, target, mine[key]))
