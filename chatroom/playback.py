"""History back on the wire: CHATHISTORY, and the replay on join for clients that can't ask.

Every reply is built from stored events (``history.Stored``, or a connection's private
conversation) in the shape the asking client negotiated: in a ``chathistory`` batch with
``batch``; ``time`` with ``server-time``; ``msgid`` and the sender's ``+tags`` with
``message-tags``; only PRIVMSG and NOTICE without ``draft/event-playback``.  A multiline
message is one stored event: a nested ``draft/multiline`` batch for clients that take one,
its lines one by one for the others (``multiline.replay``).

Runs on the asking client's reader thread.  Membership is checked under the registry lock;
the query runs outside it, after the store has committed every event queued before the
check (so a reply holds everything its asker could already have seen).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from chatroom import multiline
from chatroom import protocol as P
from chatroom.history import Stored
from chatroom.hub import HISTORY_MAX, Hub
from chatroom.protocol import Message
from chatroom.registry import Channel, Client

log = logging.getLogger(__name__)

SUBCOMMANDS = {"LATEST": 3, "BEFORE": 3, "AFTER": 3, "AROUND": 3, "BETWEEN": 4, "TARGETS": 3}


class Refused(Exception):
    """A CHATHISTORY request that gets a FAIL: its code and context parameters."""

    def __init__(self, code: str, *context: str, text: str) -> None:
        super().__init__(text)
        self.code, self.context, self.text = code, context, text


# --- formatting ---------------------------------------------------------------------------


def history_line(hub: Hub, c: Client, ev: Stored, batch: str | None) -> bytes:
    """One stored event as ``c`` takes it, in batch ``batch`` (None: not in a batch)."""
    caps = c.caps
    tags: list[bytes] = []
    if batch is not None:
        tags.append(b"batch=" + batch.encode())
    full = "message-tags" in caps
    if full:
        tags.append(b"msgid=" + hub.clock.msgid(ev.ms).encode())
    if full or "server-time" in caps:
        tags.append(b"time=" + P.format_time(ev.ms).encode())
    if full and ev.tags:
        tags.append(ev.tags)
    if not tags:
        return ev.line
    return b"@" + b";".join(tags) + b" " + ev.line


def in_batch(hub: Hub, c: Client, kind: str, target: str,
             events: Iterable[Stored]) -> list[bytes]:
    """``events`` for ``c``: in a ``kind`` batch about ``target`` if it took ``batch``."""
    ref = hub.batch_id() if "batch" in c.caps else None
    name = hub.config.name
    lines = ([P.format_line(name, "BATCH", "+" + ref, kind, *([target] if target else []))]
             if ref is not None else [])
    for ev in events:
        if multiline.is_stored(ev):
            lines += multiline.replay(hub, c, ev, ref)
        else:
            lines.append(history_line(hub, c, ev, ref))
    if ref is not None:
        lines.append(P.format_line(name, "BATCH", "-" + ref))
    return lines


# --- the replay on join -----------------------------------------------------------------


def wants_replay(hub: Hub, c: Client) -> bool:
    """A client that shows times but can't fetch gets the room's recent lines on join."""
    return (hub.history is not None and hub.config.replay_lines > 0
            and "server-time" in c.caps and "draft/chathistory" not in c.caps)


def replay(hub: Hub, c: Client, ch: Channel, before: int, mark: int) -> list[bytes]:
    """The last ``--replay-lines`` PRIVMSG/NOTICE of ``ch`` before ``before`` (ms) for
    ``c``; ``mark``: the store's count when it joined.  No lock held."""
    history = hub.history
    assert history is not None
    history.wait_durable(mark)
    events = history.fetch(ch.folded, before=before, limit=hub.config.replay_lines,
                           newest=True, messages_only=True)
    return in_batch(hub, c, "chathistory", ch.name, events) if events else []


# --- CHATHISTORY ----------------------------------------------------------------------------


def cmd_chathistory(hub: Hub, c: Client, msg: Message) -> None:
    sub = msg.params[0].upper()
    try:
        lines = answer(hub, c, sub, msg.params[1:])
    except Refused as no:
        lines = [P.format_line(hub.config.name, "FAIL", "CHATHISTORY", no.code,
                               *(P.echo_param(x) for x in no.context), no.text)]
    hub.send_many(c, lines)


def answer(hub: Hub, c: Client, sub: str, args: tuple[str, ...]) -> list[bytes]:
    shown = P.echo_param(sub, 20)
    need = SUBCOMMANDS.get(sub)
    if need is None:
        raise Refused("INVALID_PARAMS", shown, text="Unknown command")
    if len(args) < need:
        raise Refused("INVALID_PARAMS", shown, text="Insufficient parameters")
    if len(args) > need:
        raise Refused("INVALID_PARAMS", shown, text="Too many parameters")
    limit = parse_limit(sub, args[-1])
    if sub == "TARGETS":
        low, high = (reference(sub, "*", a, timestamps_only=True) for a in args[:2])
        return targets(hub, c, low, high, limit)
    target = args[0]
    refs = [reference(sub, target, a, star=(sub == "LATEST")) for a in args[1:-1]]
    return fetch(hub, c, sub, target, refs, limit)


def parse_limit(sub: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text[:12]) == 0:
        raise Refused("INVALID_PARAMS", sub, text,
                      text="The limit must be a whole number of at least 1")
    return min(int(text[:12]), HISTORY_MAX)  # more than the maximum gets the maximum


def reference(sub: str, target: str, text: str, star: bool = False,
              timestamps_only: bool = False) -> tuple[int, bool] | None:
    """A message reference as (ms, is a msgid); None for ``*``."""
    if star and text == "*":
        return None
    kind, eq, value = text.partition("=")
    if not eq:
        raise Refused("INVALID_PARAMS", sub, text, text="Invalid message reference")
    if kind == "timestamp":
        ms = P.parse_time(value)
        if ms is None:
            raise Refused("INVALID_PARAMS", sub, text, text="Invalid timestamp")
        return ms, False
    if kind == "msgid" and timestamps_only:
        raise Refused("INVALID_PARAMS", sub, text, text="TARGETS takes timestamps only")
    if kind == "msgid":
        ms = P.parse_msgid(value)
        if ms is None:
            raise Refused("INVALID_PARAMS", sub, text, text="Invalid msgid")
        return ms, True
    raise Refused("INVALID_MSGREFTYPE", sub, target,
                  text=f"{kind or 'This'} references are not supported here")


def fetch(hub: Hub, c: Client, sub: str, target: str, refs: list[tuple[int, bool] | None],
          limit: int) -> list[bytes]:
    history = hub.history
    assert history is not None
    only_messages = "draft/event-playback" not in c.caps
    with hub.reg.lock:
        if P.is_channel(target):
            ch = hub.reg.find_channel(target)
            if ch is None or c not in ch.members:
                raise Refused("INVALID_TARGET", sub, target,
                              text="Messages could not be retrieved")
            folded, name, talk = ch.folded, ch.name, None
            mark = history.appended
        else:
            entry = (c.talks or {}).get(P.casefold(target))
            peer = hub.reg.find_nick(target)
            if entry is None and peer is None:
                raise Refused("INVALID_TARGET", sub, target,
                              text="Messages could not be retrieved")
            name = peer.nick if peer is not None else entry[0] if entry else target
            talk = [Stored(*ev) for ev in entry[1]] if entry else []
    if talk is None:
        history.wait_durable(mark)

    def between(after: int | None, before: int | None, newest: bool, n: int) -> list[Stored]:
        if talk is None:
            return history.fetch(folded, after=after, before=before, limit=n, newest=newest,
                                 messages_only=only_messages)
        rows = [ev for ev in talk if (after is None or ev.ms > after)
                and (before is None or ev.ms < before) and (ev.message or not only_messages)]
        return rows[-n:] if newest else rows[:n]

    first = refs[0] if refs else None
    if sub == "LATEST":
        events = between(first[0] if first else None, None, True, limit)
    elif sub == "BEFORE":
        assert first is not None
        events = between(None, first[0], True, limit)
    elif sub == "AFTER":
        assert first is not None
        events = between(first[0], None, False, limit)
    elif sub == "AROUND":
        assert first is not None
        ms = first[0]
        older = between(None, ms, True, limit // 2)
        events = older + between(ms - 1, None, False, limit - len(older))  # ms itself too
    else:  # BETWEEN, either way round, both ends excluded
        a, b = refs[0], refs[1]
        assert a is not None and b is not None
        if a[0] <= b[0]:
            events = between(a[0], b[0], False, limit)
        else:
            events = between(b[0], a[0], True, limit)
    return in_batch(hub, c, "chathistory", name, events)


def targets(hub: Hub, c: Client, low: tuple[int, bool] | None,
            high: tuple[int, bool] | None, limit: int) -> list[bytes]:
    """The rooms and private conversations whose latest message falls between the two
    times, oldest first (CHATHISTORY TARGETS)."""
    history = hub.history
    assert history is not None and low is not None and high is not None
    lo, hi = sorted((low[0], high[0]))
    with hub.reg.lock:
        rooms = [(ch.folded, ch.name) for ch in c.channels.values()]
        found = [(max((ev[0] for ev in events if ev[1]), default=0), nick)
                 for nick, events in (c.talks or {}).values()]
        mark = history.appended
    history.wait_durable(mark)
    for folded, name in rooms:
        latest = history.latest(folded, messages_only=True)
        if latest is not None:
            found.append((latest, name))
    found = sorted((ms, name) for ms, name in found if lo < ms < hi)
    # Counted from the first bound, as BETWEEN counts: backwards, the newest ones.
    found = found[-limit:] if low[0] > high[0] else found[:limit]
    server = hub.config.name
    body = [P.format_line(server, "CHATHISTORY", "TARGETS", name, P.format_time(ms))
            for ms, name in found]
    if "batch" not in c.caps:
        return body
    ref = hub.batch_id()
    return ([P.format_line(server, "BATCH", "+" + ref, "draft/chathistory-targets")]
            + [b"@batch=" + ref.encode() + b" " + line for line in body]
            + [P.format_line(server, "BATCH", "-" + ref)])
