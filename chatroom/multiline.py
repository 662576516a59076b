"""IRCv3 ``draft/multiline``: a message of several lines, received as a client batch and
delivered, stored and replayed as one event.

A client with ``draft/multiline`` and ``batch`` sends ``BATCH +ref draft/multiline
<target>``, then ``@batch=ref PRIVMSG <target> :line`` (``draft/multiline-concat`` joins a
line to the one before it without a line feed), then ``BATCH -ref``.  :class:`Collector`
(one per connection, its reader thread only) gathers those lines, checks them against the
spec and the advertised limits, and either delivers the whole message at ``BATCH -ref``
or answers ``FAIL BATCH <code>`` and drops all of it: nobody ever gets half a message.
A failed batch's later lines and its ``BATCH -ref`` are ignored quietly (client-batch:
"all past and future messages in this batch will be ignored").

Delivery (:func:`deliver`) is one event: one ``msgid`` and ``time``, stamped, queued to
every recipient and stored in one hold of the registry lock, so a room's order holds.
Recipients with both caps get one ``BATCH`` (the tags on its opening line); the others get
the lines one by one, blank ones left out, the ``msgid`` on the first only (the spec's
fallback).  The store keeps the event as one row whose line is the component lines, each
concatenated line marked with the concat tag: :func:`replay` turns it back into a batch
(nested in the ``chathistory`` one) or into the fallback lines.

Flood control counts a batch once: its opening line pays, its lines and its closing line
are free (:meth:`Collector.free`), at most ``max-lines`` + 1 of them per batch.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from chatroom import protocol as P
from chatroom.config import Config
from chatroom.history import Stored
from chatroom.hub import Hub, has_batch_tag
from chatroom.protocol import Message
from chatroom.registry import ACCOUNT_TAG, ALL_TAGS, Channel, Client

CAP = "draft/multiline"
BATCH_TYPE = "draft/multiline"
CONCAT = "draft/multiline-concat"
_CONCAT_MARK = b"@" + CONCAT.encode() + b" "  # how the store marks a concatenated line
_REFTAG = re.compile(r"[A-Za-z0-9-]{1,64}\Z")  # batch.md: letters, digits, hyphen
DROPPED_KEPT = 8  # failed batches whose stragglers are still ignored quietly
# Commands a client may send while its batch is open without breaking it: keep-alives
# (the server may PING it in the middle of a long paste).
PASS_THROUGH = frozenset({"PING", "PONG"})


def cap_value(config: Config) -> str:
    """What CAP LS 302 says after ``draft/multiline=``."""
    return f"max-bytes={config.multiline_max_bytes},max-lines={config.multiline_max_lines}"


def capable(c: Client) -> bool:
    """Does ``c`` take (and may it send) multiline batches?  The spec needs both caps."""
    caps = c.caps
    return CAP in caps and "batch" in caps


@dataclass(eq=False)
class Batch:
    """A client batch being received (or failed, and ignored until it closes)."""

    ref: str
    target: str
    label: str | None  # the opening's label: the answer (echo or FAIL) carries it
    opened: float  # monotonic
    tags: dict[str, str]  # the opening's client-only tags: they belong to the message
    allowance: int  # lines (and the close) flood control still lets through for free
    command: str | None = None  # PRIVMSG or NOTICE, from the first line
    parts: list[tuple[str, bool]] = field(default_factory=list)  # (text, concat?)
    size: int = 0  # bytes of the combined message so far (line feeds included)
    failed: bool = False


class Collector:
    """The multiline batches of one connection.  Its reader thread alone calls it.

    :meth:`take` sees every line that opens, continues or closes a batch, and every line
    while one is open; :meth:`free` tells flood control which lines the opening paid for.
    """

    __slots__ = ("client", "current", "dropped", "hub")

    def __init__(self, hub: Hub, client: Client) -> None:
        self.hub = hub
        self.client = client
        self.current: Batch | None = None
        # Refs of failed batches (their later lines are ignored quietly); made on the first
        # failure, since a deque is most of what an idle connection would carry here.
        self.dropped: deque[str] | tuple[()] = ()

    def _drop(self, ref: str) -> None:
        if not isinstance(self.dropped, deque):
            self.dropped = deque(maxlen=DROPPED_KEPT)
        self.dropped.append(ref)

    # --- flood control --------------------------------------------------------------

    def free(self, line: bytes | object) -> bool:
        """Is ``line`` one of the open batch's own (its cost paid by the opening)?"""
        cur = self.current
        if cur is None or cur.allowance <= 0 or not isinstance(line, bytes):
            return False
        if has_batch_tag(line) or closes_batch(line):
            cur.allowance -= 1
            return True
        return False

    # --- lines ------------------------------------------------------------------------

    def broken(self) -> None:
        """A line was refused before it could be read (too long, not UTF-8): if a batch
        is open, it may have been one of its lines, so the batch can't be whole."""
        cur = self.current
        if cur is not None and not cur.failed:
            self._fail(cur, "MULTILINE_INVALID",
                       text="A line of the multiline batch was refused")

    def take(self, msg: Message, label: str | None) -> bool:
        """Handle ``msg`` if it belongs to batch framing; False if it is an ordinary
        line to run as usual (an open batch it interrupts has been failed by then).
        ``label``: its labeled-response label, if it may have one."""
        c, cfg = self.client, self.hub.config
        if not c.registered:
            return False  # BATCH and everything else get 451 as usual
        cur = self.current
        if (cur is not None and not cur.failed
                and time.monotonic() - cur.opened > cfg.multiline_timeout):
            self._fail(cur, "TIMEOUT", cur.ref, text="Multiline batch was left open too long")
        ref = msg.tags.get("batch") if msg.tags else None
        if msg.command == "BATCH":
            if ref is not None and capable(c):
                self._nested(msg, ref)
            else:
                self._batch(msg, label)
            return True
        if ref is not None and capable(c):
            self._line(msg, ref)
            return True
        # Without the caps a batch tag is just a tag the server does not relay, as before.
        cur = self.current
        if cur is not None and not cur.failed and msg.command not in PASS_THROUGH:
            self._fail(cur, "MULTILINE_INVALID",
                       text=f"Multiline batch interrupted by {P.echo_param(msg.command, 20)}")
        return False

    def _batch(self, msg: Message, label: str | None) -> None:
        """``BATCH +ref type target`` or ``BATCH -ref``."""
        hub, c = self.hub, self.client
        if not msg.params or not msg.params[0]:
            answer(hub, c, label, lambda: hub.reply_error(c, P.ERR_NEEDMOREPARAMS, "BATCH"))
            return
        word = msg.params[0]
        sign, ref = word[:1], word[1:]
        cur = self.current
        if sign == "-":
            self._close(ref, label)
            return
        if sign != "+":
            self._refuse(label, "INVALID_REFTAG", P.echo_param(word),
                         text="BATCH takes +reference or -reference")
            return
        if cur is not None:
            if not cur.failed:
                self._fail(cur, "MULTILINE_INVALID",
                           text="A new batch began before this one was closed")
            self._drop(cur.ref)
            self.current = None
        if not capable(c):
            self._refuse(label, "MULTILINE_INVALID",
                         text=f"Request the {CAP} and batch capabilities first")
            return
        if not _REFTAG.match(ref):
            self._refuse(label, "INVALID_REFTAG", P.echo_param(word),
                         text="A batch reference is 1-64 letters, digits or hyphens",
                         dropped=ref)
            return
        kind = msg.params[1] if len(msg.params) > 1 else ""
        if kind != BATCH_TYPE:
            self._refuse(label, "UNKNOWN_TYPE", ref, P.echo_param(kind or "*"),
                         text="Unknown batch type", dropped=ref)
            return
        target = msg.params[2] if len(msg.params) > 2 else ""
        if not target or "," in target or target[0] in "@+":
            self._refuse(label, "MULTILINE_INVALID",
                         text="A multiline batch has one target: a room or a nick",
                         dropped=ref)
            return
        tags = P.client_tags(msg.tags) if msg.tags else {}
        self.current = Batch(ref, target, label, time.monotonic(), tags,
                             allowance=hub.config.multiline_max_lines + 1)

    def _nested(self, msg: Message, outer: str) -> None:
        """A BATCH line with a batch tag: clients may not nest batches."""
        cur = self.current
        if cur is not None and not cur.failed:
            self._fail(cur, "MULTILINE_INVALID", text="Nested batches are not allowed")
        elif outer not in self.dropped and (cur is None or outer != cur.ref):
            self._refuse(None, "MULTILINE_INVALID", text="Nested batches are not allowed")
        word = msg.params[0] if msg.params else ""
        if word[:1] == "+" and word[1:]:
            self._drop(word[1:])

    def _line(self, msg: Message, ref: str) -> None:
        """One ``@batch=ref`` line of a capable client."""
        cfg = self.hub.config
        cur = self.current
        if cur is None or ref != cur.ref:
            if ref in self.dropped:
                return
            if cur is not None and not cur.failed:
                self._fail(cur, "MULTILINE_INVALID",
                           text="A line of another batch came while this one was open")
            elif cur is None:
                self._refuse(None, "MULTILINE_INVALID",
                             text=f"No batch {P.echo_param(ref, 20)} is open")
            return
        if cur.failed:
            return
        cmd = msg.command
        if cmd not in ("PRIVMSG", "NOTICE") or (cur.command is not None
                                                 and cmd != cur.command):
            self._fail(cur, "MULTILINE_INVALID", text="Invalid multiline batch")
            return
        if len(msg.params) < 2:
            self._fail(cur, "MULTILINE_INVALID", text="Invalid multiline batch: no text")
            return
        target, text = msg.params[0], msg.params[1]
        if P.casefold(target) != P.casefold(cur.target):
            self._fail(cur, "MULTILINE_INVALID_TARGET", P.echo_param(cur.target),
                       P.echo_param(target), text="Invalid multiline target")
            return
        # A first line has nothing before it to be joined to: concat means nothing there.
        concat = bool(cur.parts) and CONCAT in msg.tags
        if concat and not text:
            self._fail(cur, "MULTILINE_INVALID",
                       text="Invalid multiline batch with concatenated blank line")
            return
        if len(cur.parts) >= cfg.multiline_max_lines:
            self._fail(cur, "MULTILINE_MAX_LINES", str(cfg.multiline_max_lines),
                       text="Multiline batch max-lines exceeded")
            return
        # max-bytes counts the combined message: the texts and the line feeds joining them.
        size = cur.size + len(text.encode()) + (1 if cur.parts and not concat else 0)
        if size > cfg.multiline_max_bytes:
            self._fail(cur, "MULTILINE_MAX_BYTES", str(cfg.multiline_max_bytes),
                       text="Multiline batch max-bytes exceeded")
            return
        cur.command = cmd
        cur.size = size
        cur.parts.append((text, concat))

    def _close(self, ref: str, label: str | None) -> None:
        """``BATCH -ref``: deliver the batch it closes, or explain."""
        hub, c = self.hub, self.client
        cur = self.current
        if cur is not None and ref == cur.ref:
            self.current = None
            if cur.failed:
                answer(hub, c, label, None)  # already answered; a label still gets its ACK
            elif not cur.parts:
                self._refuse(cur.label or label, "MULTILINE_INVALID",
                             text="Invalid multiline batch: no lines")
            elif not any(text for text, _ in cur.parts):
                self._refuse(cur.label or label, "MULTILINE_INVALID",
                             text="Invalid multiline batch with blank lines only")
            else:
                answer(hub, c, cur.label or label, lambda: deliver(hub, c, cur))
            return
        if isinstance(self.dropped, deque) and ref in self.dropped:
            self.dropped.remove(ref)
            answer(hub, c, label, None)
            return
        if cur is not None and not cur.failed:
            self._fail(cur, "MULTILINE_INVALID",
                       text=f"BATCH -{P.echo_param(ref, 20)} closes no open batch")
            return
        self._refuse(label, "MULTILINE_INVALID",
                     text=f"BATCH -{P.echo_param(ref, 20)} closes no open batch")

    # --- answers ----------------------------------------------------------------------

    def _fail(self, cur: Batch, code: str, *context: str, text: str) -> None:
        """Drop the batch being received, with ``FAIL BATCH code``: its later lines and
        its close are ignored."""
        cur.failed = True
        cur.parts = []
        label, cur.label = cur.label, None  # the FAIL is the labeled answer to its opening
        self._refuse(label, code, *context, text=text)

    def _refuse(self, label: str | None, code: str, *context: str, text: str,
                dropped: str | None = None) -> None:
        hub, c = self.hub, self.client
        if dropped is not None:
            self._drop(dropped)
        line = P.format_line(hub.config.name, "FAIL", "BATCH", code, *context, text,
                             truncate=True)
        answer(hub, c, label, lambda: hub.send(c, line))


def closes_batch(line: bytes) -> bool:
    """Is ``line`` a ``BATCH -ref`` (tags allowed before it)?  Cheap: bytes only."""
    if line.startswith(b"@"):
        line = line[line.find(b" ") + 1:]
    return line[:7].upper() == b"BATCH -"


def batch_form(line: bytes | object) -> bool:
    """Could ``line`` be one a batch's opening pays for (a batch line or a close)?"""
    return isinstance(line, bytes) and (has_batch_tag(line) or closes_batch(line))


def answer(hub: Hub, c: Client, label: str | None, run: Callable[[], None] | None) -> None:
    """Run ``run`` (which queues c's answer), labeled with ``label`` if there is one: one
    line takes the label, several a labeled batch, none an ``ACK`` (labeled-response)."""
    if label is None:
        if run is not None:
            run()
        return
    with hub.delivering():
        hub.writer.hold(c)
    try:
        if run is not None:
            run()
    finally:
        with hub.delivering():
            hub.labeled(c, label)


# --- delivery -------------------------------------------------------------------------


class Multiline:
    """One multiline message as its recipients get it: the plain lines formatted once
    (outside the lock), each tagged variant at most once, when a recipient first needs
    it (under the lock, once the event is stamped: :attr:`ms`)."""

    __slots__ = ("_made", "account", "clock", "closing", "concat", "inner", "ms", "opening",
                 "plain", "tags")

    def __init__(self, hub: Hub, c: Client, cur: Batch) -> None:
        assert cur.command is not None
        prefix, cmd, target = c.prefix, cur.command, cur.target
        self.plain = [P.format_line(prefix, cmd, target, text, truncate=True, trailing=True)
                      for text, _ in cur.parts]
        self.concat = [concat for _, concat in cur.parts]
        ref = hub.batch_id().encode()
        self.opening = P.format_line(prefix, "BATCH", "+" + ref.decode(), BATCH_TYPE, target)
        self.inner = [b"@batch=" + ref + (b";" + CONCAT.encode() if concat else b"") + b" "
                      + line for line, concat in zip(self.plain, self.concat)]
        self.closing = P.format_line(prefix, "BATCH", "-" + ref.decode())
        self.tags = cur.tags
        self.account = c.account
        self.clock = hub.clock
        self.ms = 0
        self._made: dict[tuple[int, bool, bool], list[bytes]] = {}

    def stored(self) -> bytes:
        """The store's line: the component lines, concatenated ones marked."""
        return b"".join(_CONCAT_MARK + line if concat else line
                        for line, concat in zip(self.plain, self.concat))

    def lines_for(self, c: Client) -> list[bytes]:
        """What ``c`` gets, as its caps ask.  Lock held."""
        batch = capable(c)
        acct = self.account is not None and bool(c.extras & ACCOUNT_TAG)
        key = (c.tagmode, acct, batch)
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = self._make(c.tagmode, acct, batch)
        return made

    def _make(self, tagmode: int, acct: bool, batch: bool) -> list[bytes]:
        first: dict[str, str] = {}
        rest: dict[str, str] = {}
        if tagmode == ALL_TAGS:
            first["msgid"] = self.clock.msgid(self.ms)
        if tagmode:
            first["time"] = rest["time"] = self.clock.time_text(self.ms)
        if acct:
            assert self.account is not None
            first["account"] = rest["account"] = self.account
        if tagmode == ALL_TAGS:
            first.update(self.tags)
        if batch:
            head = P.tag_section(first) + self.opening if first else self.opening
            return [head, *self.inner, self.closing]
        # The fallback: no blank lines, the msgid (and the client's tags) on the first.
        lines = [line for line in self.plain if not _blank(line)]
        if not lines:
            return []  # (a batch of blank lines only is refused before it gets here)
        tail = P.tag_section(rest) if rest else b""
        return [(P.tag_section(first) if first else b"") + lines[0],
                *(tail + line for line in lines[1:])]


def _blank(plain: bytes) -> bool:
    """Is this ``:source CMD target :text`` line's text empty?"""
    words = plain.split(b" ", 3)
    return len(words) == 4 and words[3] == b":\r\n"


def may_speak(ch: Channel, c: Client) -> bool:
    """Can ``c`` talk in ``ch`` (+n, +m, bans)?  Lock held."""
    mode = ch.members.get(c)
    if mode is None and "n" in ch.modes:
        return False
    if "m" in ch.modes and not mode:
        return False
    return bool(mode) or not (ch.bans and ch.silenced(c) is not None)


def deliver(hub: Hub, c: Client, cur: Batch) -> None:
    """Relay a complete batch to its target as one event, stored before anyone gets it.

    The errors and the away reply are PRIVMSG's (401, 404, 301); a NOTICE gets none.
    """
    assert cur.command is not None
    notice = cur.command == "NOTICE"
    if hub.config.require_account and c.account is None:
        if not notice:
            hub.send(c, P.format_line(hub.config.name, "FAIL", cur.command, "ACCOUNT_REQUIRED",
                                      "Log in first: this server is for registered users"))
        return
    c.last_message = time.monotonic()
    ml = Multiline(hub, c, cur)
    history = hub.history
    stored_tags = P.tag_section(cur.tags)[1:-1] if cur.tags else None
    replies: list[bytes] = []
    now = time.time()
    target = cur.target
    with hub.delivering():
        q = hub.writer.queue
        if P.is_channel(target):
            ch = hub.reg.find_channel(target)
            if ch is None:
                replies.append(hub.error(c, P.ERR_NOSUCHNICK, P.echo_param(target)))
            elif not may_speak(ch, c):
                replies.append(hub.error(c, P.ERR_CANNOTSENDTOCHAN, ch.name))
            else:
                ml.ms = hub.clock.stamp(now)
                if history is not None:
                    history.add(ch.folded, ml.ms, True, ml.stored(), stored_tags)
                for m in ch.members:
                    if m is not c:
                        for line in ml.lines_for(m):
                            q(m, line)
                if c.echo:
                    for line in ml.lines_for(c):
                        q(c, line)
        else:
            peer = hub.reg.find_nick(target)
            if peer is None:
                replies.append(hub.error(c, P.ERR_NOSUCHNICK, P.echo_param(target)))
            else:
                ml.ms = hub.clock.stamp(now)
                if c.echo:
                    for line in ml.lines_for(c):
                        q(c, line)
                for line in ml.lines_for(peer):
                    if peer is c:
                        hub.writer.queue_aside(c, line)  # the copy, not the reply
                    else:
                        q(peer, line)
                if history is not None:
                    said = (ml.ms, True, ml.stored(), stored_tags)
                    c.remember_talk(peer.nick, said)
                    if peer is not c:
                        peer.remember_talk(c.nick, said)
                if peer.away is not None:
                    replies.append(hub.numeric(c, P.RPL_AWAY, peer.nick, peer.away))
        if not notice:
            hub.to_client(c, replies)


# --- history --------------------------------------------------------------------------


def is_stored(ev: Stored) -> bool:
    """Is ``ev`` a multiline message (a stored line of several lines)?"""
    end = ev.line.find(b"\n")
    return 0 <= end < len(ev.line) - 1


def replay(hub: Hub, c: Client, ev: Stored, outer: str | None) -> list[bytes]:
    """A stored multiline message for ``c``, inside batch ``outer`` (None: in none): a
    nested ``draft/multiline`` batch if ``c`` takes one, else the fallback lines."""
    parts: list[tuple[bytes, bool]] = []
    for raw in ev.line.splitlines(keepends=True):
        if raw.startswith(_CONCAT_MARK):
            parts.append((raw[len(_CONCAT_MARK):], True))
        else:
            parts.append((raw, False))
    full = c.tagmode == ALL_TAGS
    first: list[bytes] = [b"batch=" + outer.encode()] if outer is not None else []
    if full:
        first.append(b"msgid=" + hub.clock.msgid(ev.ms).encode())
    timed = full or "server-time" in c.caps
    stamp = b"time=" + P.format_time(ev.ms).encode()
    if timed:
        first.append(stamp)
    if full and ev.tags:
        first.append(ev.tags)

    def tagged(tags: list[bytes], line: bytes) -> bytes:
        return b"@" + b";".join(tags) + b" " + line if tags else line

    if capable(c) and outer is not None:
        words = parts[0][0].split(b" ", 3)
        source, target = words[0], words[2]
        ref = hub.batch_id().encode()
        lines = [tagged(first, source + b" BATCH +" + ref + b" " + BATCH_TYPE.encode() + b" "
                        + target + b"\r\n")]
        for line, concat in parts:
            inner = [b"batch=" + ref] + ([CONCAT.encode()] if concat else [])
            lines.append(tagged(inner, line))
        lines.append(tagged([b"batch=" + outer.encode()], source + b" BATCH -" + ref + b"\r\n"))
        return lines
    rest = ([b"batch=" + outer.encode()] if outer is not None else []) + (
        [stamp] if timed else [])
    shown = [line for line, _ in parts if not _blank(line)]
    if not shown:
        return []
    return [tagged(first, shown[0]), *(tagged(rest, line) for line in shown[1:])]
