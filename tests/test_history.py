"""Persistent chat history against a real server, as the IRCv3 specs give it: the
``draft/chathistory`` draft (LATEST, BEFORE, AFTER, AROUND, BETWEEN, TARGETS), the
``chathistory`` batch type, ``draft/event-playback``, ``batch``, ``labeled-response``, replay
on join for clients that only know ``server-time``, and room state that survives a restart.

Every copy of a stored event (live, echo, history, replay) carries one ``msgid`` and one
``time``; history batches are in ascending time order.  Tag order on the wire is not fixed
by any spec, so lines with server tags are compared as (tags, body); lines without tags,
and the ``BATCH`` lines themselves, are compared byte for byte.
"""

from __future__ import annotations

import re
import socket
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import LineClient, RunningServer

from chatroom import protocol as P

SRV = "chat.test"
H = "127.0.0.1"
HIST = "batch draft/chathistory message-tags server-time"  # a full history client
OLD_CAPS = {"cap-notify", "echo-message", "message-tags", "multi-prefix", "server-time",
            "standard-replies", "userhost-in-names"}
NEW_CAPS = {"batch", "labeled-response", "draft/chathistory", "draft/event-playback",
            "draft/read-marker"}
ACCOUNT_CAPS = {"account-notify", "account-tag", "extended-join", "sasl=PLAIN",
                "draft/account-registration=before-connect"}
MULTILINE_CAPS = {"draft/multiline=max-bytes=4096,max-lines=100"}
PRESENCE_CAPS = {"away-notify", "extended-monitor", "setname"}
REF_RE = re.compile(r"[A-Za-z0-9-]+\Z")  # batch.md: letters, digits, hyphen
TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")
NOT_RETRIEVED = "Messages could not be retrieved"


def pfx(nick: str) -> str:
    return f"{nick}!~u@{H}"


def parse(line: str) -> P.Message:
    return P.parse(line, limits=False)


def body(line: str) -> str:
    """The line without its tag section."""
    return line.split(" ", 1)[1] if line.startswith("@") else line


@dataclass(frozen=True)
class Ev:
    """One stored event as one client got it: its msgid, its time and the rest of the line."""

    msgid: str | None
    time: str | None
    body: str

    @property
    def command(self) -> str:
        return parse(self.body).command

    def ref(self, kind: str) -> str:
        return f"msgid={self.msgid}" if kind == "msgid" else f"timestamp={self.time}"


def ev(line: str) -> Ev:
    tags = parse(line).tags
    return Ev(tags.get("msgid"), tags.get("time"), body(line))


# --- clients ----------------------------------------------------------------------------


def connect(srv: RunningServer, nick: str, caps: str = "", room: str | None = None
            ) -> LineClient:
    """A client that negotiated ``caps`` before registering, registered (and joined)."""
    c = srv.client()
    # Lines go out one write each; without this, Nagle holds a second small write (the
    # PING of drain()) for the server's delayed ACK, 40 ms a round trip.
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if caps:
        c.send(f"CAP REQ :{caps}")
        line = c.recv_line()
        assert P.parse(line) == P.Message("CAP", ("*", "ACK", caps), SRV), line
        c.send("CAP END")
    c.register(nick)
    if room:
        join(c, room)
    return c


def join(c: LineClient, room: str) -> list[str]:
    """JOIN and read through its 366 (the JOIN line may carry tags)."""
    c.send(f"JOIN {room}")
    return read_through(c, "366")


def read_through(c: LineClient, command: str) -> list[str]:
    out = []
    while True:
        line = c.recv_line()
        out.append(line)
        if parse(line).command == command:
            return out


def drain(c: LineClient) -> list[str]:
    """Every line waiting for ``c`` (a PING round trip orders them before its PONG)."""
    c.send("PING :drain")
    lines = []
    while True:
        line = c.recv_line()
        if body(line) in (f":{SRV} PONG {SRV} :drain", f":{SRV} PONG {SRV} drain"):
            return lines
        lines.append(line)


def quiet(*clients: LineClient) -> None:
    for c in clients:
        assert drain(c) == []


def stored(lines: list[str]) -> list[Ev]:
    """The storable events among ``lines`` (the ones with a msgid)."""
    return [ev(x) for x in lines if "msgid" in parse(x).tags]


# --- batches ------------------------------------------------------------------------------


def read_batch(c: LineClient, start: str | None = None) -> tuple[str, str, list[str]]:
    """(the BATCH + line, its reference, the lines inside) of the batch that starts next.
    The lines inside include those of nested batches, each tagged with its own batch, whose
    BATCH lines carry the outer one's tag (batch.md)."""
    first = start if start is not None else c.recv_line()
    m = parse(first)
    assert m.command == "BATCH" and m.source == SRV and m.params[0].startswith("+"), first
    ref = m.params[0][1:]
    assert REF_RE.match(ref), first
    inner = []
    open_refs = {ref}
    while True:
        line = c.recv_line()
        msg = parse(line)
        if msg.command == "BATCH" and msg.params[:1] == ("-" + ref,):
            assert line == f":{SRV} BATCH -{ref}", line
            assert open_refs == {ref}, f"nested batches left open: {open_refs}"
            return first, ref, inner
        assert msg.tags.get("batch") in open_refs, (open_refs, line)
        if msg.command == "BATCH":
            assert msg.source == SRV and msg.params[0][:1] in "+-", line
            nested = msg.params[0][1:]
            if msg.params[0][0] == "+":
                assert REF_RE.match(nested) and nested not in open_refs, line
                open_refs.add(nested)
            else:
                assert nested in open_refs - {ref}, line
                open_refs.discard(nested)
        inner.append(line)


def history(c: LineClient, command: str, target: str, label: str | None = None) -> list[Ev]:
    """Send a CHATHISTORY command; its reply must be one ``chathistory`` batch for the
    canonical ``target``.  Returns its events, checking each one's tags."""
    c.send((f"@label={label} " if label else "") + f"CHATHISTORY {command}")
    first, ref, inner = read_batch(c)
    want = f":{SRV} BATCH +{ref} chathistory {target}"
    assert first == (f"@label={label} " if label else "") + want, (command, first)
    out = []
    for line in inner:
        tags = parse(line).tags
        server_tags = {k for k in tags if not k.startswith("+")}
        assert server_tags == {"batch", "msgid", "time"}, line  # no label inside
        assert TIME_RE.match(tags["time"]), line
        out.append(ev(line))
    times = [e.time for e in out]
    assert times == sorted(times) and len(set(times)) == len(times), "ascending time order"
    return out


def fail(c: LineClient, command: str) -> P.Message:
    """Send ``command``; the reply must be one FAIL CHATHISTORY line."""
    c.send(command)
    line = c.recv_line()
    m = parse(line)
    assert m.source == SRV and m.command == "FAIL" and m.params[0] == "CHATHISTORY", (
        command, line)
    assert m.params[-1], line  # a description for humans
    return m


def invalid_params(c: LineClient, command: str, sub: str) -> None:
    m = fail(c, command)
    assert m.params[1:3] == ("INVALID_PARAMS", sub), (command, m)


def bad_reference(c: LineClient, command: str, sub: str, target: str) -> None:
    """A reference of a type the server does not take: INVALID_PARAMS (contract) or
    INVALID_MSGREFTYPE with the subcommand and target (chathistory.md allows both)."""
    m = fail(c, command)
    assert m.params[1:3] in (("INVALID_PARAMS", sub), ("INVALID_MSGREFTYPE", sub)), m
    if m.params[1] == "INVALID_MSGREFTYPE":
        assert m.params[3] == target, m


def invalid_target(c: LineClient, sub: str, target: str) -> None:
    c.send(f"CHATHISTORY {sub} {target} * 10" if sub != "BEFORE"
           else f"CHATHISTORY BEFORE {target} timestamp=2030-01-01T00:00:00.000Z 10")
    assert c.recv_line() == (f":{SRV} FAIL CHATHISTORY INVALID_TARGET {sub} {target} "
                             f":{NOT_RETRIEVED}")


def talk(srv: RunningServer, room: str, n: int, reader: str = "alice",
         caps: str = HIST + " echo-message") -> tuple[LineClient, LineClient, list[Ev]]:
    """``reader`` (a history client) and bob (no caps) in ``room``; bob says ``n`` lines
    (every third a NOTICE).  Returns both and the lines as ``reader`` got them live."""
    a = connect(srv, reader, caps, room)
    b = connect(srv, "bob", "", room)
    a.expect(lambda s: parse(s).command == "JOIN")
    for i in range(n):
        b.send(f"{'NOTICE' if i % 3 == 2 else 'PRIVMSG'} {room} :line {i}")
    live = [ev(a.recv_line()) for _ in range(n)]
    for i, e in enumerate(live):
        verb = "NOTICE" if i % 3 == 2 else "PRIVMSG"
        assert e.body == f":{pfx('bob')} {verb} {room} :line {i}"
        assert e.msgid and e.time and TIME_RE.match(e.time)
    quiet(a, b)
    return a, b, live


def isupport(lines: list[str]) -> list[str]:
    return [tok for x in lines if parse(x).command == "005" for tok in parse(x).params[1:-1]]


# --- capabilities and ISUPPORT --------------------------------------------------------------


def test_cap_ls_offers_history_caps(srv: RunningServer) -> None:
    c = srv.client()
    c.send("CAP LS 302")
    line = c.recv_line()
    assert line.startswith(f":{SRV} CAP * LS :"), line
    offered = parse(line).params[-1].split()
    assert len(offered) == len(set(offered))
    assert set(offered) == OLD_CAPS | NEW_CAPS | ACCOUNT_CAPS | MULTILINE_CAPS | PRESENCE_CAPS
    c.send("CAP REQ :batch labeled-response draft/chathistory draft/event-playback")
    assert c.recv_line() == (f":{SRV} CAP * ACK :batch labeled-response draft/chathistory "
                             "draft/event-playback")
    c.send("CAP END")
    tokens = isupport(c.register("capper"))
    assert "CHATHISTORY=500" in tokens
    assert "MSGREFTYPES=msgid,timestamp" in tokens
    assert len([t for t in tokens if t.startswith(("CHATHISTORY", "MSGREFTYPES"))]) == 2


def test_labeled_response_is_not_made_to_wait_for_batch(srv: RunningServer) -> None:
    """labeled-response.md: the order of negotiation "MUST not be enforced"."""
    c = srv.client()
    c.send("CAP REQ labeled-response")
    assert c.recv_line() == f":{SRV} CAP * ACK labeled-response"
    c.send("CAP REQ batch")
    assert c.recv_line() == f":{SRV} CAP * ACK batch"


# --- the selectors ------------------------------------------------------------------------


def test_latest_star_equals_the_live_copies(srv: RunningServer) -> None:
    alice, bob, live = talk(srv, "#Hist", 5)
    # The batch names the target as the server spells it, whatever the request's case.
    assert history(alice, "LATEST #hist * 10", "#Hist") == live
    assert history(alice, "LATEST #Hist * 5", "#Hist") == live
    assert history(alice, "LATEST #Hist * 3", "#Hist") == live[2:]
    assert history(alice, "LATEST #Hist * 1", "#Hist") == live[4:]
    # alice's own lines are there too, with the msgid and time of her echo.
    alice.send("PRIVMSG #Hist :from alice")
    mine = ev(alice.recv_line())
    assert mine.body == f":{pfx('alice')} PRIVMSG #Hist :from alice"
    assert ev(bob.recv_line()).body == mine.body
    assert history(alice, "LATEST #Hist * 10", "#Hist") == live + [mine]
    quiet(alice, bob)


@pytest.mark.parametrize("kind", ["msgid", "timestamp"])
def test_before_after_latest_with_a_reference(srv: RunningServer, kind: str) -> None:
    alice, _, m = talk(srv, "#sel", 7)
    r = [e.ref(kind) for e in m]

    def h(cmd: str) -> list[Ev]:
        return history(alice, cmd, "#sel")

    assert h(f"LATEST #sel {r[1]} 10") == m[2:]  # after and excluding the reference
    assert h(f"LATEST #sel {r[1]} 2") == m[5:]  # the most recent ones
    assert h(f"LATEST #sel {r[6]} 10") == []  # an empty batch, not silence
    assert h(f"BEFORE #sel {r[4]} 10") == m[:4]
    assert h(f"BEFORE #sel {r[4]} 2") == m[2:4]  # the nearest ones, ascending
    assert h(f"BEFORE #sel {r[0]} 10") == []
    assert h(f"AFTER #sel {r[1]} 10") == m[2:]
    assert h(f"AFTER #sel {r[1]} 2") == m[2:4]
    assert h(f"AFTER #sel {r[6]} 10") == []


@pytest.mark.parametrize("kind", ["msgid", "timestamp"])
def test_between_both_directions_and_around(srv: RunningServer, kind: str) -> None:
    alice, _, m = talk(srv, "#btw", 7)
    r = [e.ref(kind) for e in m]

    def h(cmd: str) -> list[Ev]:
        return history(alice, cmd, "#btw")

    # Both bounds excluded; either direction; the limit counts from the first bound.
    assert h(f"BETWEEN #btw {r[0]} {r[6]} 10") == m[1:6]
    assert h(f"BETWEEN #btw {r[6]} {r[0]} 10") == m[1:6]
    assert h(f"BETWEEN #btw {r[0]} {r[6]} 2") == m[1:3]
    assert h(f"BETWEEN #btw {r[6]} {r[0]} 2") == m[4:6]
    assert h(f"BETWEEN #btw {r[2]} {r[3]} 10") == []
    # The two kinds of reference mix.
    other = "timestamp" if kind == "msgid" else "msgid"
    assert h(f"BETWEEN #btw {r[1]} {m[5].ref(other)} 10") == m[2:5]
    # AROUND: at most `limit`, the nearest ones on both sides of the reference.
    for limit in (3, 4, 5):
        got = h(f"AROUND #btw {r[3]} {limit}")
        assert len(got) == limit, (limit, got)
        around = sorted(set(got) | {m[3]}, key=lambda e: e.time or "")
        start = m.index(around[0])
        assert around == m[start:start + len(around)], "no gaps around the reference"
        assert got[0].time < m[3].time < got[-1].time  # type: ignore[operator]
    everything = h(f"AROUND #btw {r[3]} 100")
    assert everything in (m, m[:3] + m[4:])


def test_targets(srv: RunningServer) -> None:
    alice = connect(srv, "alice", HIST + " echo-message")
    bob = connect(srv, "bob")
    clk = connect(srv, "clk", "message-tags echo-message", "#pad")  # a clock nobody else sees
    for room in ("#t1", "#t2", "#t3"):
        join(alice, room)
        join(bob, room)
        alice.expect(lambda s: parse(s).command == "JOIN")

    def said(who: LineClient, line: str, by: LineClient = alice) -> Ev:
        who.send(line)
        return ev(by.recv_line())

    def tick() -> str:
        clk.send("PRIVMSG #pad :tick")
        return ev(clk.recv_line()).time or ""

    start = tick()
    said(bob, "PRIVMSG #t1 :early")
    said(bob, "PRIVMSG #t3 :in a room alice leaves")
    alice.send("PART #t3")
    alice.expect(lambda s: parse(s).command == "PART")
    dm = said(bob, "PRIVMSG alice :psst")
    assert dm.body == f":{pfx('bob')} PRIVMSG alice :psst"
    middle = tick()
    t2 = said(bob, "PRIVMSG #t2 :two")
    t1 = said(bob, "NOTICE #t1 :one, last")
    end = tick()
    quiet(alice)
    assert drain(bob) == [f":{pfx('alice')} PART #t3"]

    def targets(a: str, b: str, limit: int) -> list[tuple[str, str]]:
        alice.send(f"CHATHISTORY TARGETS timestamp={a} timestamp={b} {limit}")
        first, ref, inner = read_batch(alice)
        assert first == f":{SRV} BATCH +{ref} draft/chathistory-targets"
        out = []
        for line in inner:
            m = parse(line)
            assert m.source in (None, SRV) and m.command == "CHATHISTORY", line
            assert m.params[0] == "TARGETS" and len(m.params) == 3, line
            assert TIME_RE.match(m.params[2]), line
            out.append((m.params[1], m.params[2]))
        return out

    # Ordered by each target's latest message; #t3 is not alice's to see any more.
    everything = [("bob", dm.time), ("#t2", t2.time), ("#t1", t1.time)]
    assert targets(start, end, 10) == everything
    assert targets(end, start, 10) == everything  # either direction, like BETWEEN
    assert targets(middle, end, 10) == everything[1:]  # by the latest message only
    assert targets(start, middle, 10) == everything[:1]  # #t1's early line is not enough
    assert targets(start, end, 2) == everything[:2]  # counted from the first bound
    assert targets(end, start, 2) == everything[1:]
    bad_reference(alice, f"CHATHISTORY TARGETS msgid={dm.msgid} timestamp={end} 10",
                  "TARGETS", "*")


# --- what a batch holds -------------------------------------------------------------------


def test_event_playback_only_for_clients_that_ask(srv: RunningServer) -> None:
    op = connect(srv, "op", HIST + " echo-message draft/event-playback")
    live = stored(join(op, "#ev"))  # op's own JOIN
    seen: list[str] = []  # everything op gets after it, in order

    def step() -> None:  # op's lines so far (and the server has done all op asked)
        seen.extend(drain(op))

    carol = connect(srv, "carol", HIST, "#ev")
    bob = connect(srv, "bob", "", "#ev")
    op.send("TOPIC #ev :what we talk about")
    op.send("MODE #ev +v bob")
    step()
    bob.send("PRIVMSG #ev :hello")
    bob.send("NOTICE #ev :a notice")
    drain(bob)
    op.send("@+draft/react=yes TAGMSG #ev")  # a reaction is kept (a typing notice need not)
    step()
    bob.send("NICK bob2")
    bob.send("PART #ev :brb")
    drain(bob)
    join(bob, "#ev")
    op.send("KICK #ev bob2 :out")
    step()
    join(bob, "#ev")
    bob.send("PRIVMSG #ev :back")
    bob.send("QUIT :done")
    bob.expect(lambda s: s.startswith("ERROR"))
    carol.send("PRIVMSG #ev :last word")
    drain(carol)
    step()
    live += [ev(x) for x in seen]
    verbs = [e.command for e in live]
    assert verbs == ["JOIN", "JOIN", "JOIN", "TOPIC", "MODE", "PRIVMSG", "NOTICE", "TAGMSG",
                     "NICK", "PART", "JOIN", "KICK", "JOIN", "PRIVMSG", "QUIT", "PRIVMSG"]
    assert all(e.msgid and e.time for e in live)
    assert history(op, "LATEST #ev * 100", "#ev") == live
    # Without draft/event-playback: PRIVMSG and NOTICE only; the limit counts only those.
    talk_only = [e for e in live if e.command in ("PRIVMSG", "NOTICE")]
    assert len(talk_only) == 4
    assert history(carol, "LATEST #ev * 100", "#ev") == talk_only
    assert history(carol, "LATEST #ev * 2", "#ev") == talk_only[-2:]
    assert history(carol, f"BEFORE #ev {live[-1].ref('msgid')} 2", "#ev") == \
        talk_only[-3:-1]
    assert history(carol, f"AFTER #ev {live[0].ref('msgid')} 1", "#ev") == talk_only[:1]
    # With it, the limit counts every event.
    assert history(op, "LATEST #ev * 3", "#ev") == live[-3:]
    assert history(op, f"BETWEEN #ev {live[3].ref('msgid')} {live[9].ref('timestamp')} 100",
                   "#ev") == live[4:9]


def test_no_batch_without_the_batch_cap(srv: RunningServer) -> None:
    _, _, live = talk(srv, "#nb", 3)
    nob = connect(srv, "nob", "draft/chathistory message-tags", "#nb")
    nob.send("CHATHISTORY LATEST #nb * 10")
    lines = drain(nob)
    assert all("batch" not in parse(x).tags and parse(x).command != "BATCH" for x in lines)
    assert [ev(x) for x in lines] == live


# --- limits and errors ----------------------------------------------------------------------


def test_limit_is_clamped_to_500(srv: RunningServer) -> None:
    alice = connect(srv, "alice", HIST, "#big")
    bob = connect(srv, "bob", "", "#big")
    alice.expect(lambda s: parse(s).command == "JOIN")
    n = 620
    bob.send(b"".join(f"PRIVMSG #big :m{i}\r\n".encode() for i in range(n)))
    live = [ev(alice.recv_line()) for _ in range(n)]
    assert live[-1].body.endswith(f":m{n - 1}")
    for limit in ("500", "501", "100000", "99999999999999999999999999"):
        assert history(alice, f"LATEST #big * {limit}", "#big") == live[-500:], limit
    assert history(alice, f"BEFORE #big {live[-500].ref('msgid')} 100000", "#big") == \
        live[:-500]
    assert history(alice, f"AFTER #big {live[0].ref('timestamp')} 100000", "#big") == \
        live[1:501]
    quiet(alice, bob)


def test_bad_parameters_are_invalid_params(srv: RunningServer) -> None:
    alice, _, live = talk(srv, "#bad", 2)
    ok = live[0].ref("msgid")
    stamp = live[0].ref("timestamp")
    cases = [
        ("LATEST #bad * 0", "LATEST"),
        ("LATEST #bad * -1", "LATEST"),
        ("LATEST #bad * -500", "LATEST"),
        ("LATEST #bad * ten", "LATEST"),
        ("LATEST #bad * 1.5", "LATEST"),
        ("LATEST #bad * 0x10", "LATEST"),
        ("LATEST #bad msgid= 10", "LATEST"),
        ("BEFORE #bad msgid= 10", "BEFORE"),
        ("BEFORE #bad timestamp=garbage 10", "BEFORE"),
        ("AFTER #bad timestamp=2026-13-45T99:99:99.999Z 10", "AFTER"),
        ("AFTER #bad timestamp=2026-02-30T12:00:00.000Z 10", "AFTER"),  # no such day
        ("AFTER #bad timestamp= 10", "AFTER"),
        ("BEFORE #bad 12345 10", "BEFORE"),
        ("BEFORE #bad * 10", "BEFORE"),  # '*' is for LATEST only
        ("AROUND #bad * 10", "AROUND"),
        ("BETWEEN #bad * " + stamp + " 10", "BETWEEN"),
        ("BETWEEN #bad " + ok + " " + stamp + " 0", "BETWEEN"),
        ("TARGETS " + stamp + " timestamp=garbage 10", "TARGETS"),
        ("TARGETS " + stamp + " " + stamp + " -3", "TARGETS"),
        ("FOO #bad * 10", "FOO"),  # an unknown subcommand
        ("LATEST #bad * 10 extra", "LATEST"),  # too many parameters
    ]
    for cmd, sub in cases:
        invalid_params(alice, f"CHATHISTORY {cmd}", sub)
    # A reference of an unknown type: INVALID_PARAMS (contract) or INVALID_MSGREFTYPE
    # (chathistory.md: "a reference type the server does not support").
    for cmd, sub in (("BEFORE #bad foo=bar 10", "BEFORE"),
                     ("BETWEEN #bad " + ok + " foo=bar 10", "BETWEEN")):
        bad_reference(alice, f"CHATHISTORY {cmd}", sub, "#bad")
    # Too few: INVALID_PARAMS, or 461 (the spec allows an existing numeric).
    for cmd in ("CHATHISTORY LATEST #bad *", "CHATHISTORY BETWEEN #bad " + ok + " 10",
                "CHATHISTORY LATEST", "CHATHISTORY"):
        alice.send(cmd)
        line = alice.recv_line()
        assert (line == f":{SRV} 461 alice CHATHISTORY :Not enough parameters"
                or line.startswith(f":{SRV} FAIL CHATHISTORY INVALID_PARAMS ")), (cmd, line)
    quiet(alice)
    # Still answering properly afterwards.
    assert history(alice, "LATEST #bad * 10", "#bad") == live


def test_only_members_get_a_rooms_history(srv: RunningServer) -> None:
    alice, _, live = talk(srv, "#priv", 2)
    dave = connect(srv, "dave", HIST, "#elsewhere")
    for sub in ("LATEST", "BEFORE"):
        invalid_target(dave, sub, "#priv")  # exists, but dave is not in it
        invalid_target(dave, sub, "#nowhere")  # does not exist
        invalid_target(dave, sub, "ghost")  # no such nick, no conversation
    invalid_target(connect(srv, "late", HIST), "LATEST", "#priv")
    # A member who leaves loses access; one who comes (back) gets it.
    alice.send("PART #priv")
    alice.expect(lambda s: parse(s).command == "PART")
    invalid_target(alice, "LATEST", "#priv")
    join(dave, "#priv")
    assert history(dave, "LATEST #priv * 10", "#priv") == live


# --- private messages -------------------------------------------------------------------------


def test_private_history_is_for_its_two_parties(srv: RunningServer) -> None:
    alice = connect(srv, "alice", HIST + " echo-message")
    bob = connect(srv, "Bob", HIST + " echo-message")
    carol = connect(srv, "carol", HIST + " echo-message")
    talk_: list[Ev] = []

    def say(frm: LineClient, to: LineClient, line: str) -> None:
        frm.send(line)
        echo, got = ev(frm.recv_line()), ev(to.recv_line())
        assert echo == got
        talk_.append(got)

    say(alice, bob, "PRIVMSG Bob :hi bob")
    say(bob, alice, "PRIVMSG alice :hi alice")
    say(carol, alice, "PRIVMSG alice :carol here")  # another conversation
    say(alice, bob, "NOTICE bob :a notice")
    say(carol, bob, "PRIVMSG bob :carol to bob")
    ab = [talk_[0], talk_[1], talk_[3]]
    assert [e.body for e in ab] == [f":{pfx('alice')} PRIVMSG Bob :hi bob",
                                    f":{pfx('Bob')} PRIVMSG alice :hi alice",
                                    f":{pfx('alice')} NOTICE bob :a notice"]
    assert history(alice, "LATEST bob * 10", "Bob") == ab
    assert history(bob, "LATEST ALICE * 10", "alice") == ab
    assert history(alice, f"AFTER Bob {ab[0].ref('msgid')} 10", "Bob") == ab[1:]
    assert history(alice, "LATEST carol * 10", "carol") == [talk_[2]]
    # dave talked to nobody: nothing of theirs (an empty batch or INVALID_TARGET).
    dave = connect(srv, "dave", HIST)
    for target, name in (("alice", "alice"), ("bob", "Bob")):
        dave.send(f"CHATHISTORY LATEST {target} * 10")
        line = dave.recv_line()
        if " FAIL " in line:
            assert line == (f":{SRV} FAIL CHATHISTORY INVALID_TARGET LATEST {target} "
                            f":{NOT_RETRIEVED}")
        else:
            first, _, inner = read_batch(dave, line)
            assert inner == [] and first.endswith(f" chathistory {name}"), first
    # Bob goes: alice keeps her copy while she is connected; a new connection called Bob
    # gets none of it.
    bob.send("QUIT")
    bob.expect(lambda s: s.startswith("ERROR"))
    quiet(alice)
    assert history(alice, "LATEST Bob * 10", "Bob") == ab
    bob2 = connect(srv, "Bob", HIST)
    bob2.send("CHATHISTORY LATEST alice * 10")
    line = bob2.recv_line()
    if " FAIL " in line:
        assert line == (f":{SRV} FAIL CHATHISTORY INVALID_TARGET LATEST alice "
                        f":{NOT_RETRIEVED}")
    else:
        assert read_batch(bob2, line)[2] == []
    bob2.send("CHATHISTORY LATEST carol * 10")
    line = bob2.recv_line()
    if " FAIL " not in line:
        assert read_batch(bob2, line)[2] == []


# --- labeled-response ---------------------------------------------------------------------


LABELED = "batch labeled-response message-tags server-time"


def test_labeled_response(srv: RunningServer) -> None:
    lab = connect(srv, "lab", LABELED, "#lr")
    bob = connect(srv, "bob", "message-tags", "#lr")
    lab.expect(lambda s: parse(s).command == "JOIN")
    # One line of reply: the label on it.
    lab.send("@label=one PRIVMSG ghost :hi")
    assert lab.recv_line() == f"@label=one :{SRV} 401 lab ghost :No such nick/channel"
    lab.send("@label=png PING :tok")
    assert lab.recv_line() in (f"@label=png :{SRV} PONG {SRV} :tok",
                               f"@label=png :{SRV} PONG {SRV} tok")
    # No reply: a labeled ACK.  The message itself reaches bob without the label.
    lab.send("@label=quiet PONG :whatever")
    assert lab.recv_line() == f"@label=quiet :{SRV} ACK"
    lab.send("@label=said;+draft/reply=x PRIVMSG #lr :no echo here")
    assert lab.recv_line() == f"@label=said :{SRV} ACK"
    got = parse(bob.recv_line())
    assert set(got.tags) == {"msgid", "time", "+draft/reply"}
    # Several lines: a labeled-response batch, its lines as they would come unlabeled.
    lab.send("NAMES #lr")
    names = read_through(lab, "366")
    lab.send("@label=many NAMES #lr")
    first, ref, inner = read_batch(lab)
    assert first == f"@label=many :{SRV} BATCH +{ref} labeled-response"
    assert inner == [f"@batch={ref} {x}" for x in names]
    lab.send("WHOIS bob")
    whois = read_through(lab, "318")
    lab.send("@label=who WHOIS bob")
    first, ref, inner = read_batch(lab)
    assert first == f"@label=who :{SRV} BATCH +{ref} labeled-response"
    idle = re.compile(r"( 317 lab bob )\d+")  # the idle seconds may tick meanwhile
    assert [idle.sub(r"\1N", x) for x in inner] == [idle.sub(r"\1N", f"@batch={ref} {x}")
                                                   for x in whois]
    # A labeled JOIN: the JOIN, 353 and 366 in one batch; bob's copy has no label.
    lab.send("@label=j PART #lr")
    part = parse(lab.recv_line())
    assert part.tags.get("label") == "j" and part.command == "PART"
    assert "label" not in parse(bob.recv_line()).tags
    # lab has server-time and no draft/chathistory: the replay comes too, as a chathistory
    # batch nested in the labeled one.
    lab.send("@label=jj JOIN #lr")
    first, ref, inner = read_batch(lab)
    assert first == f"@label=jj :{SRV} BATCH +{ref} labeled-response"
    joined = parse(inner[0])
    assert set(joined.tags) == {"batch", "msgid", "time"}
    assert body(inner[0]) == f":{pfx('lab')} JOIN #lr"
    lab.send("NAMES #lr")
    names = read_through(lab, "366")
    assert inner[1:1 + len(names)] == [f"@batch={ref} {x}" for x in names]
    replay = inner[1 + len(names):]
    assert len(replay) == 3, replay
    inner_ref = parse(replay[0]).params[0][1:]
    assert replay[0] == f"@batch={ref} :{SRV} BATCH +{inner_ref} chathistory #lr"
    assert parse(replay[1]).tags == {"batch": inner_ref, "msgid": got.tags["msgid"],
                                     "time": got.tags["time"], "+draft/reply": "x"}
    assert body(replay[1]) == f":{pfx('lab')} PRIVMSG #lr :no echo here"
    assert replay[2] == f"@batch={ref} :{SRV} BATCH -{inner_ref}"
    bob_join = ev(bob.recv_line())
    assert (bob_join.msgid, bob_join.body) == (joined.tags["msgid"], f":{pfx('lab')} JOIN #lr")
    # Someone without labeled-response gets no label and no ACK.
    bob.send("@label=nope PRIVMSG ghost :hi")
    assert bob.recv_line() == f":{SRV} 401 bob ghost :No such nick/channel"
    bob.send("@label=nope2 PONG :x")
    quiet(lab, bob)


def test_labeled_echo_and_message_to_self(srv: RunningServer) -> None:
    lab = connect(srv, "lab", LABELED + " echo-message", "#lr")
    bob = connect(srv, "bob", "message-tags", "#lr")
    lab.expect(lambda s: parse(s).command == "JOIN")
    lab.send("@label=e1;+draft/reply=abc PRIVMSG #lr :echoed")
    echo = parse(lab.recv_line())
    assert echo.tags["label"] == "e1" and echo.tags["+draft/reply"] == "abc"
    assert set(echo.tags) == {"label", "msgid", "time", "+draft/reply"}
    copy = parse(bob.recv_line())
    assert copy.tags == {k: v for k, v in echo.tags.items() if k != "label"}
    quiet(lab, bob)
    # To yourself: the label is on the echo only (any second copy carries none).
    lab.send("@label=self PRIVMSG lab :note to self")
    lines = drain(lab)
    assert 1 <= len(lines) <= 2, lines
    labeled = [x for x in lines if "label" in parse(x).tags]
    assert len(labeled) == 1 and parse(labeled[0]).tags["label"] == "self"
    assert all(body(x) == f":{pfx('lab')} PRIVMSG lab :note to self" for x in lines)
    assert len({parse(x).tags["msgid"] for x in lines}) == 1


def test_labeled_chathistory(srv: RunningServer) -> None:
    alice, _, live = talk(srv, "#lh", 3, caps=HIST + " labeled-response")
    assert history(alice, "LATEST #lh * 10", "#lh", label="h1") == live
    assert history(alice, f"AFTER #lh {live[-1].ref('msgid')} 10", "#lh", label="h2") == []
    alice.send("@label=h3 CHATHISTORY LATEST #nowhere * 10")
    assert alice.recv_line() == (f"@label=h3 :{SRV} FAIL CHATHISTORY INVALID_TARGET LATEST "
                                 f"#nowhere :{NOT_RETRIEVED}")
    alice.send("@label=h4 CHATHISTORY LATEST #lh * 0")
    m = parse(alice.recv_line())
    assert m.tags == {"label": "h4"} and m.params[:3] == ("CHATHISTORY", "INVALID_PARAMS",
                                                         "LATEST")
    quiet(alice)


def test_client_tags_of_4096_bytes_ok_4097_refused(srv: RunningServer) -> None:
    alice, _, live = talk(srv, "#tg", 1, caps=HIST + " labeled-response")
    head = "@label=big;+pad="
    fill = "v" * (4096 - len(head) - 1)
    at_limit = head + fill + " "
    assert len(at_limit.encode()) == 4096
    alice.send(at_limit + "PRIVMSG ghost :x")
    assert alice.recv_line() == f"@label=big :{SRV} 401 alice ghost :No such nick/channel"
    alice.send(at_limit + "CHATHISTORY LATEST #tg * 10")
    first, ref, inner = read_batch(alice)
    assert first == f"@label=big :{SRV} BATCH +{ref} chathistory #tg"
    assert [ev(x) for x in inner] == live
    alice.send(head + fill + "v PRIVMSG ghost :x")  # 4,097 bytes of tags
    assert body(alice.recv_line()) == f":{SRV} 417 alice :Input line was too long"
    quiet(alice)
    # A message with 4,096 bytes of client tags comes back from history with them.
    big = "@+pad=" + "w" * (4096 - 7) + " "
    assert len(big.encode()) == 4096
    carl = connect(srv, "carl", "message-tags echo-message", "#tg")
    alice.expect(lambda x: parse(x).command == "JOIN")
    carl.send(big + "PRIVMSG #tg :padded")
    echo = parse(carl.recv_line())
    assert echo.tags["+pad"] == "w" * 4089
    live_line = alice.recv_line()
    assert parse(live_line).tags == echo.tags
    got = history(alice, "LATEST #tg * 1", "#tg")
    assert got == [ev(live_line)]
    alice.send("CHATHISTORY LATEST #tg * 1")
    _, ref, inner = read_batch(alice)
    assert parse(inner[0]).tags == {**echo.tags, "batch": ref}


def test_ops_only_messages_stay_with_the_ops(srv: RunningServer) -> None:
    """A message to @#room reaches the room's operators only; its history must not hand it
    to the other members."""
    op = connect(srv, "op", HIST + " echo-message", "#ops")
    member = connect(srv, "member", HIST, "#ops")
    op.expect(lambda x: parse(x).command == "JOIN")
    op.send("PRIVMSG @#ops :for ops only")
    assert body(op.recv_line()) == f":{pfx('op')} PRIVMSG @#ops :for ops only"
    op.send("PRIVMSG #ops :for everyone")
    said = ev(op.recv_line())
    assert ev(member.recv_line()) == said
    quiet(member)
    assert history(member, "LATEST #ops * 10", "#ops") == [said]


# --- replay on join -------------------------------------------------------------------------


def test_replay_on_join_for_server_time_clients(srv: RunningServer) -> None:
    bob = connect(srv, "bob", "", "#rp")
    obs = connect(srv, "obs", "message-tags", "#rp")  # sees every line's time
    noise = connect(srv, "noise", "message-tags")
    for i in range(60):
        if i % 10 == 5:  # JOIN/PART/TAGMSG noise between the lines
            join(noise, "#rp")
            noise.send("@+typing=active TAGMSG #rp")
            noise.send("PART #rp")
            drain(noise)
        bob.send(f"{'NOTICE' if i % 7 == 3 else 'PRIVMSG'} #rp :said {i}")
        drain(bob)
    seen = [ev(x) for x in drain(obs)]
    talk_only = [e for e in seen if e.command in ("PRIVMSG", "NOTICE")]
    assert len(talk_only) == 60
    want = talk_only[-50:]

    # server-time and batch: the last 50, original times, in a chathistory batch after 366.
    carol = connect(srv, "carol", "batch server-time")
    lines = join(carol, "#rp")
    assert body(lines[0]) == f":{pfx('carol')} JOIN #rp"
    first, ref, inner = read_batch(carol)
    assert first == f":{SRV} BATCH +{ref} chathistory #rp"
    assert [parse(x).tags for x in inner] == [{"batch": ref, "time": e.time} for e in want]
    assert [body(x) for x in inner] == [e.body for e in want]
    quiet(carol)
    # server-time alone: the same lines, time tags only, no batch.
    dave = connect(srv, "dave", "server-time")
    join(dave, "#rp")
    assert [(parse(x).tags, body(x)) for x in drain(dave)] == [({"time": e.time}, e.body)
                                                                for e in want]
    # No server-time: nothing.  A chathistory client asks when it wants: nothing either.
    erin = connect(srv, "erin")
    join(erin, "#rp")
    quiet(erin)
    frank = connect(srv, "frank", HIST)
    join(frank, "#rp")
    quiet(frank)
    # Rejoining replays again.
    carol.send("PART #rp")
    drain(carol)
    join(carol, "#rp")
    first, ref, inner = read_batch(carol)
    assert [body(x) for x in inner] == [e.body for e in want]


def test_replay_lines_option(make_server) -> None:
    srv = make_server(replay_lines=3)
    bob = connect(srv, "bob", "message-tags echo-message", "#r3")
    sent = []
    for i in range(5):
        bob.send(f"PRIVMSG #r3 :n{i}")
        sent.append(ev(bob.recv_line()))
    tim = connect(srv, "tim", "server-time")
    join(tim, "#r3")
    assert [(parse(x).tags, body(x)) for x in drain(tim)] == [({"time": e.time}, e.body)
                                                               for e in sent[-3:]]


# --- restarts -------------------------------------------------------------------------------


def stop_with_clients(s: RunningServer) -> None:
    """Stop the server while its clients are still connected (``RunningServer.stop`` closes
    them first, which would empty the rooms before the server goes down)."""
    s.server.shutdown()
    s.thread.join(timeout=10)
    assert not s.thread.is_alive(), "server did not stop"


def test_history_topic_and_modes_survive_a_restart(make_server, tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    s1 = make_server(data_dir=data)
    alice, _, live = talk(s1, "#keep", 4)
    alice.send("TOPIC #keep :kept across restarts")
    for line in ("MODE #keep +s-t", "MODE #keep +k sesame", "MODE #keep +l 10",
                 "MODE #keep +b bad!*@*"):
        alice.send(line)
    drain(alice)
    alice.send("MODE #keep")
    before_324 = [body(x) for x in drain(alice)]
    alice.send("MODE #keep b")
    before_bans = [body(x) for x in drain(alice)]
    alice.send("TOPIC #keep")
    before_topic = [body(x) for x in drain(alice)]
    assert before_topic[0] == f":{SRV} 332 alice #keep :kept across restarts"
    assert before_324[0] == f":{SRV} 324 alice #keep +nskl sesame 10"
    inv = connect(s1, "inv", "", "#inv")
    inv.send("MODE #inv +im")
    join(inv, "#lock")
    inv.send("MODE #lock +k lockpick")
    drain(inv)
    stop_with_clients(s1)

    s2 = make_server(data_dir=data)
    alice2 = connect(s2, "alice", HIST + " echo-message")
    lines = [body(x) for x in join(alice2, "#keep sesame")]
    assert lines[0] == f":{pfx('alice')} JOIN #keep"
    assert lines[1:3] == before_topic  # the topic, its setter and time
    alice2.send("MODE #keep")
    assert [body(x) for x in drain(alice2)][:1] == before_324[:1]  # 329 may differ
    alice2.send("MODE #keep b")
    assert [body(x) for x in drain(alice2)] == before_bans
    got = history(alice2, "LATEST #keep * 10", "#keep")
    assert got == live
    alice2.send("PRIVMSG #keep :after the restart")
    new = ev(alice2.recv_line())
    assert new.msgid not in {e.msgid for e in live}
    assert (new.time or "") > (live[-1].time or "")
    assert history(alice2, "LATEST #keep * 10", "#keep") == live + [new]
    other = connect(s2, "other")
    other.send("JOIN #keep")
    assert other.recv_line() == f":{SRV} 475 other #keep :Cannot join channel (+k)"
    # The first one in after the restart passes the same checks: +i and +k came back for
    # rooms nobody has joined since.
    other.send("JOIN #inv")
    assert other.recv_line() == f":{SRV} 473 other #inv :Cannot join channel (+i)"
    other.send("JOIN #lock")
    assert other.recv_line() == f":{SRV} 475 other #lock :Cannot join channel (+k)"


def test_no_history_option(make_server, tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    s1 = make_server(data_dir=data, history=False)
    c = s1.client()
    c.send("CAP LS 302")
    offered = set(parse(c.recv_line()).params[-1].split())
    assert "draft/chathistory" not in offered and "draft/event-playback" not in offered
    assert {"batch", "labeled-response"} <= offered
    c.send("CAP REQ draft/chathistory")
    assert c.recv_line() == f":{SRV} CAP * NAK draft/chathistory"
    c.send("CAP REQ :batch server-time message-tags echo-message")
    assert c.recv_line() == f":{SRV} CAP * ACK :batch server-time message-tags echo-message"
    c.send("CAP END")
    tokens = isupport(c.register("nohist"))
    assert not [t for t in tokens if t.startswith(("CHATHISTORY", "MSGREFTYPES"))], tokens
    join(c, "#nh")
    for i in range(3):
        c.send(f"PRIVMSG #nh :not kept {i}")
    assert len(drain(c)) == 3
    c.send("CHATHISTORY LATEST #nh * 10")
    line = c.recv_line()
    assert line == f":{SRV} 421 nohist CHATHISTORY :Unknown command" or \
        line.startswith(f":{SRV} FAIL CHATHISTORY "), line
    tim = connect(s1, "tim", "batch server-time")
    join(tim, "#nh")
    quiet(tim)  # no replay: there is nothing to replay
    stop_with_clients(s1)
    s2 = make_server(data_dir=data)
    a = connect(s2, "alice", HIST, "#nh")
    assert history(a, "LATEST #nh * 10", "#nh") == []


def test_history_days_prunes_old_events(make_server, tmp_path: Path) -> None:
    """Rows older than ``history_days`` go; rows inside it stay.  Old rows are put in
    through the store's own API (there is no other honest way to make a 2-day-old line)."""
    history_mod = pytest.importorskip("chatroom.history")
    store_cls = getattr(history_mod, "History", None)
    if store_cls is None or not hasattr(store_cls, "add"):
        pytest.skip("chatroom.history has no History.add to put old rows in with")
    data = str(tmp_path / "data")
    now = int(time.time() * 1000)
    old_ms, recent_ms = now - 2 * 86400_000, now - 3600_000
    store = store_cls(data)
    store.start()
    store.add("#old", old_ms, True, f":{pfx('ann')} PRIVMSG #old :ancient\r\n".encode(), None)
    store.add("#old", recent_ms, True, f":{pfx('ann')} PRIVMSG #old :recent\r\n".encode(),
              None)
    store.flush()
    store.close()

    srv = make_server(data_dir=data, history_days=1)
    hist = srv.server.hub.history
    assert hist is not None
    deadline = time.monotonic() + 5
    while any(r.ms == old_ms for r in hist.fetch("#old", limit=10, newest=True,
                                                  messages_only=True)):
        assert time.monotonic() < deadline, "the old row was never pruned"
        time.sleep(0.01)  # the store prunes on its own thread, right after it starts
    a = connect(srv, "alice", HIST, "#old")
    got = history(a, "LATEST #old * 10", "#old")
    assert [(e.msgid, e.time, e.body) for e in got] == [
        (P.EventClock.msgid(recent_ms), P.format_time(recent_ms),
         f":{pfx('ann')} PRIVMSG #old :recent")]


def test_retention_prunes_old_events_and_keeps_new_ones(tmp_path: Path) -> None:
    """--history-days: a pass deletes what is older than the retention, in every room,
    and nothing newer (the store on a real file, with its own thread)."""
    from chatroom.history import History

    store = History(str(tmp_path), retention_days=1)
    store.start()
    try:
        now = int(time.time() * 1000)
        old, new = now - 2 * 86400_000, now - 3600_000
        for room in ("#a", "#b"):
            store.add(room, old, True, f":x!u@h PRIVMSG {room} :old\r\n".encode(), None)
            store.add(room, new, True, f":x!u@h PRIVMSG {room} :new\r\n".encode(), None)
        store.flush()
        store.prune_now()
        for room in ("#a", "#b"):
            kept = store.fetch(room, limit=10, newest=False, messages_only=False)
            assert [e.ms for e in kept] == [new], room
    finally:
        store.close()


def test_a_message_nobody_receives_is_committed_soon_anyway(srv: RunningServer) -> None:
    # The writer asks for a commit only before sending; alone in a room, nothing is sent.
    alone = srv.client("alone", "#solo")
    alone.send("PRIVMSG #solo :is anybody there")
    alone.no_line()
    history = srv.server.hub.history
    assert history is not None
    assert srv.wait_for(lambda: history.durable >= history.appended, timeout=3)
    rows = history.fetch("#solo", limit=10, newest=True, messages_only=True)
    assert [r.line for r in rows] == [b":alone!~u@127.0.0.1 PRIVMSG #solo :is anybody there\r\n"]


def test_the_clock_restarts_past_the_newest_event_without_a_scan(
        make_server: Callable[..., RunningServer], tmp_path: Path) -> None:
    s = make_server(data_dir=str(tmp_path))
    a = s.client("ticker", "#tick")
    a.send("PRIVMSG #tick :one")
    a.no_line()
    assert s.server.hub.history is not None
    s.server.hub.history.flush()
    newest = s.server.hub.history.latest("#tick", messages_only=True)
    s.stop()
    db = sqlite3.connect(tmp_path / "chat.sqlite3")
    (clock,), = db.execute("SELECT ms FROM clock").fetchall()
    (scanned,), = db.execute("SELECT max(ms) FROM events").fetchall()
    db.close()
    assert newest is not None and clock == scanned >= newest  # the QUIT at the stop is newer
    s2 = make_server(data_dir=str(tmp_path))
    assert s2.server.hub.clock.stamp(0) > clock
