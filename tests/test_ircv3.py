"""The IRCv3 message layer against a real server (issue 9): CAP 302 with values and multi-line
LS, cap-notify, message-tags (client-only tags, the 4,096-byte limit, TAGMSG), server-time,
msgid, echo-message and standard-replies.

Three wire variants of one event: no tags (exactly today's bytes), ``@time=...`` only
(server-time), and ``@msgid=...;time=...[;+client-tags]`` (message-tags).  Every copy of
one event carries the same msgid and time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

import pytest
from conftest import Cert, LineClient, RunningServer

from chatroom import handlers
from chatroom import protocol as P
from chatroom.protocol import Message

H = "127.0.0.1"
ALL_CAPS = ("account-notify account-tag away-notify batch cap-notify echo-message "
            "extended-join extended-monitor labeled-response message-tags multi-prefix sasl "
            "server-time setname standard-replies userhost-in-names draft/account-registration draft/chathistory "
            "draft/event-playback draft/read-marker draft/multiline")
# CAP 302 gives values (sasl-3.2's mechanisms, account-registration's keys, multiline's
# limits).
ALL_CAPS_302 = (ALL_CAPS.replace(" sasl ", " sasl=PLAIN ")
                .replace("draft/account-registration", "draft/account-registration=before-connect")
                .replace("draft/multiline", "draft/multiline=max-bytes=4096,max-lines=100"))
FULL_CAPS = "message-tags server-time"
MSGID = r"[A-Za-z0-9_-]+"
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
FULL_RE = re.compile(rf"@msgid=({MSGID});time=({TIME})((?:;[^ ]*)?) ([^@].*)\Z")
TIMED_RE = re.compile(rf"@time=({TIME}) ([^@].*)\Z")
TOO_LONG = "Input line was too long"


def pfx(nick: str, user: str = "u") -> str:
    return f"{nick}!~{user}@{H}"


def body(line: str) -> str:
    """The line without its tag section."""
    return line.split(" ", 1)[1] if line.startswith("@") else line


def command_of(line: str) -> str:
    words = body(line).split(" ")
    return words[1] if words[0].startswith(":") and len(words) > 1 else words[0]


def full(line: str) -> tuple[str, str, str, str]:
    """(msgid, time, the tags after time as ';k=v;...' or '', body) of a message-tags line."""
    m = FULL_RE.match(line)
    assert m, f"expected @msgid=...;time=... tags, got {line!r}"
    assert_recent(m.group(2))
    return m.group(1), m.group(2), m.group(3), m.group(4)


def timed(line: str) -> tuple[str, str]:
    """(time, body) of a server-time-only line (exactly one tag: time)."""
    m = TIMED_RE.match(line)
    assert m, f"expected exactly @time=... , got {line!r}"
    assert_recent(m.group(1))
    return m.group(1), m.group(2)


def assert_recent(stamp: str) -> None:
    when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert abs(datetime.now(timezone.utc) - when) < timedelta(seconds=60), stamp


def capped(srv: RunningServer, nick: str, caps: str = "", room: str | None = None,
           ls302: bool = False) -> LineClient:
    """A client that negotiated ``caps`` before registering, then registered (and joined)."""
    c = srv.client()
    if ls302:
        c.send("CAP LS 302")
        c.expect(lambda s: " LS :" in s)
    if caps:
        c.send(f"CAP REQ :{caps}")
        line = c.recv_line()
        assert P.parse(line) == Message("CAP", ("*", "ACK", caps), "chat.test"), line
        c.send("CAP END")
    c.register(nick)
    if room:
        join(c, room)
    return c


def join(c: LineClient, room: str) -> list[str]:
    """JOIN and read through the 366 (its JOIN line may carry tags)."""
    c.send(f"JOIN {room}")
    return c.expect(lambda s: command_of(s) == "366")


def sync(*clients: LineClient) -> None:
    """Read and drop whatever each client has waiting (a PING round trip orders it)."""
    for c in clients:
        c.send("PING :sync")
        c.expect(lambda s: body(s).endswith("PONG chat.test :sync")
                 or body(s).endswith("PONG chat.test sync"))


def cap_reply(c: LineClient, sub: str) -> list[str]:
    """Every line of a (possibly multi-line) CAP LS/LIST reply, the last without '*'."""
    lines = []
    while True:
        line = c.recv_line()
        msg = P.parse(line)
        assert msg.command == "CAP" and msg.params[1] == sub, line
        lines.append(line)
        if len(msg.params) == 3:
            return lines
        assert len(msg.params) == 4 and msg.params[2] == "*", line


def cap_set(line: str) -> set[str]:
    return set(P.parse(line).params[-1].split())


# --- CAP --------------------------------------------------------------------------------


def test_cap_ls_302_and_plain_ls_list_every_cap(srv: RunningServer) -> None:
    c = srv.client()
    c.send("CAP LS 302")
    assert c.recv_line() == f":chat.test CAP * LS :{ALL_CAPS_302}"
    c.send("CAP LS")  # the version stays 302, values and all
    assert c.recv_line() == f":chat.test CAP * LS :{ALL_CAPS_302}"
    old = srv.client()
    old.send("CAP LS")
    assert old.recv_line() == f":chat.test CAP * LS :{ALL_CAPS}"
    old.send("CAP END")
    old.register("oldie")
    old.send("CAP LS 302")  # after registration the target is the nick
    assert old.recv_line() == f":chat.test CAP oldie LS :{ALL_CAPS_302}"


def test_cap_ls_302_with_sts_value(make_server, tls_cert: Cert) -> None:
    s = make_server(sts_duration=86400, tls_port=0, tls_cert=str(tls_cert.cert),
                    tls_key=str(tls_cert.key))
    assert s.tls_address is not None
    c = s.client()
    c.send("CAP LS 302")
    lines = cap_reply(c, "LS")
    offered = set().union(*(cap_set(line) for line in lines))
    assert offered == set(ALL_CAPS_302.split()) | {f"sts=port={s.tls_address[1]}"}
    old = s.client()
    old.send("CAP LS")  # no values before 302, so no sts
    assert old.recv_line() == f":chat.test CAP * LS :{ALL_CAPS}"


def test_cap_req_ack_nak_list(srv: RunningServer) -> None:
    c = srv.client()
    c.send("CAP REQ :server-time message-tags")
    assert c.recv_line() == ":chat.test CAP * ACK :server-time message-tags"
    c.send("CAP REQ :echo-message bogus")  # one unknown cap: the whole REQ is refused
    assert c.recv_line() == ":chat.test CAP * NAK :echo-message bogus"
    c.send("CAP LIST")
    line = c.recv_line()
    assert line.startswith(":chat.test CAP * LIST ")
    assert cap_set(line) == {"message-tags", "server-time"}
    c.send("CAP REQ :echo-message standard-replies cap-notify")
    assert c.recv_line() == ":chat.test CAP * ACK :echo-message standard-replies cap-notify"
    c.send("CAP REQ -echo-message")
    assert c.recv_line() == ":chat.test CAP * ACK -echo-message"
    c.send("CAP LIST")
    assert cap_set(c.recv_line()) == {"message-tags", "server-time", "standard-replies",
                                      "cap-notify"}
    c.send("CAP END")
    c.register("req")
    c.send("CAP REQ echo-message")
    assert c.recv_line() == ":chat.test CAP req ACK echo-message"
    c.send("CAP REQ :-server-time -message-tags")
    assert c.recv_line() == ":chat.test CAP req ACK :-server-time -message-tags"
    c.send("CAP LIST")
    line = c.recv_line()
    assert line.startswith(":chat.test CAP req LIST ")
    assert cap_set(line) == {"echo-message", "standard-replies", "cap-notify"}


def test_cap_ls_302_multiline_continuation(srv: RunningServer,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # Our real list fits on one line; a long one (as later issues may bring) must split.
    extra = tuple(f"example.org/dummy-capability-{i:02d}" for i in range(40))
    monkeypatch.setattr(handlers, "CAPABILITIES", tuple(handlers.CAPABILITIES) + extra)
    c = srv.client()
    c.send("CAP LS 302")
    lines = cap_reply(c, "LS")
    assert len(lines) >= 3
    for line in lines[:-1]:
        assert line.startswith(":chat.test CAP * LS * :")
    assert lines[-1].startswith(":chat.test CAP * LS :")
    assert all(len(line.encode()) + 2 <= 512 for line in lines)
    names = [n for line in lines for n in P.parse(line).params[-1].split()]
    assert sorted(names) == sorted(ALL_CAPS_302.split() + list(extra))  # each once
    # CAP LIST splits the same way for a 302 client with many caps enabled.
    for i in range(0, len(extra), 10):
        c.send("CAP REQ :" + " ".join(extra[i:i + 10]))
        assert " ACK " in c.recv_line()
    c.send("CAP LIST")
    lines = cap_reply(c, "LIST")
    assert len(lines) >= 3
    assert all(line.startswith(":chat.test CAP * LIST * :") for line in lines[:-1])
    assert all(len(line.encode()) + 2 <= 512 for line in lines)
    assert {n for line in lines for n in P.parse(line).params[-1].split()} == set(extra)


def test_cap_notify_and_standard_replies_are_plain_caps(srv: RunningServer) -> None:
    c = srv.client()
    c.send("CAP LS 302")
    c.recv_line()
    c.send("CAP REQ :cap-notify standard-replies")
    assert c.recv_line() == ":chat.test CAP * ACK :cap-notify standard-replies"
    c.send("CAP END")
    c.register("std")
    c.send(b"PRIVMSG #a :\xff\r\n")  # FAIL lines were sent before; they still are
    assert c.recv_line() == (
        ":chat.test FAIL PRIVMSG INVALID_UTF8 :Message rejected: text must be UTF-8")


# --- server-time and msgid ------------------------------------------------------------------


def test_plain_clients_get_exactly_todays_bytes(srv: RunningServer) -> None:
    a = srv.client("alice", "#room")
    b = srv.client("bob", "#room")
    a.expect("JOIN")
    assert a.join("#other") == [f":{pfx('alice')} JOIN #other",
                                ":chat.test 353 alice = #other @alice",
                                ":chat.test 366 alice #other :End of /NAMES list"]
    a.send("@+x=1;time=2000-01-01T00:00:00.000Z PRIVMSG #room :hello")
    assert b.recv_line() == f":{pfx('alice')} PRIVMSG #room :hello"
    a.send("NOTICE bob :psst")
    assert b.recv_line() == f":{pfx('alice')} NOTICE bob :psst"
    a.send("TOPIC #room :plain")
    assert a.recv_line() == f":{pfx('alice')} TOPIC #room :plain"
    assert b.recv_line() == f":{pfx('alice')} TOPIC #room :plain"


def test_mixed_room_sees_three_variants_of_one_event(srv: RunningServer) -> None:
    alice = srv.client("alice", "#room")
    bob = srv.client("bob", "#room")  # no caps
    carol = capped(srv, "carol", "server-time", "#room")
    dave = capped(srv, "dave", FULL_CAPS, "#room")
    erin = capped(srv, "erin", "message-tags", "#room")  # message-tags alone: full tags too
    sync(alice, bob, carol, dave, erin)
    alice.send("PRIVMSG #room :hello all")
    expected = f":{pfx('alice')} PRIVMSG #room :hello all"
    assert bob.recv_line() == expected
    t_carol, b_carol = timed(carol.recv_line())
    m_dave, t_dave, x_dave, b_dave = full(dave.recv_line())
    m_erin, t_erin, x_erin, b_erin = full(erin.recv_line())
    assert b_carol == b_dave == b_erin == expected
    assert x_dave == x_erin == ""
    assert t_carol == t_dave == t_erin
    assert m_dave == m_erin
    alice.no_line()


def test_times_strictly_increase_and_msgids_are_unique(srv: RunningServer) -> None:
    n = 200
    one = capped(srv, "one", "echo-message " + FULL_CAPS, "#one")
    two = capped(srv, "two", "echo-message " + FULL_CAPS, "#two")
    watcher = capped(srv, "watcher", FULL_CAPS)  # in both rooms: sees the server's order
    join(watcher, "#one")
    join(watcher, "#two")
    clock = capped(srv, "clock", "server-time", "#one")
    sync(one, two, watcher, clock)
    one.send(b"".join(f"PRIVMSG #one :one-{i}\r\n".encode() for i in range(n)))
    two.send(b"".join(f"PRIVMSG #two :two-{i}\r\n".encode() for i in range(n)))

    seen = [full(watcher.recv_line()) for _ in range(2 * n)]
    times = [t for _, t, _, _ in seen]
    ids = [m for m, _, _, _ in seen]
    assert all(a < b for a, b in zip(times, times[1:])), "times must strictly increase"
    assert len(set(ids)) == len(ids), "msgids must be unique"
    by_text = {b.rsplit(":", 1)[1]: (m, t) for m, t, _, b in seen}
    assert [k for k in by_text if k.startswith("one-")] == [f"one-{i}" for i in range(n)]
    assert [k for k in by_text if k.startswith("two-")] == [f"two-{i}" for i in range(n)]
    # Every other copy of each event carries the same values.
    for sender, prefix in ((one, "one"), (two, "two")):
        for i in range(n):
            m, t, _, b = full(sender.recv_line())
            assert b == f":{pfx(prefix)} PRIVMSG #{prefix} :{prefix}-{i}"
            assert by_text[f"{prefix}-{i}"] == (m, t)
    for i in range(n):
        t, b = timed(clock.recv_line())
        assert b == f":{pfx('one')} PRIVMSG #one :one-{i}"
        assert by_text[f"one-{i}"][1] == t


def test_storable_events_carry_tags_for_tagged_clients_only(srv: RunningServer) -> None:
    events: list[tuple[str, str]] = []

    def observe(expected: str, fulls: Iterable[LineClient] = (),
                timeds: Iterable[LineClient] = (), plains: Iterable[LineClient] = (),
                given: dict[LineClient, str] | None = None) -> None:
        given = given or {}
        ids, times = set(), set()
        for c in fulls:
            m, t, extra, b = full(given.get(c) or c.recv_line())
            assert (b, extra) == (expected, "")
            ids.add(m)
            times.add(t)
        for c in timeds:
            t, b = timed(given.get(c) or c.recv_line())
            assert b == expected
            times.add(t)
        for c in plains:
            assert (given.get(c) or c.recv_line()) == expected
        assert len(ids) == 1 and len(times) == 1, (expected, ids, times)
        events.append((ids.pop(), times.pop()))

    op = capped(srv, "op", FULL_CAPS)
    observe(f":{pfx('op')} JOIN #ev", [op], given={op: join(op, "#ev")[0]})
    tm = capped(srv, "tm", "server-time")
    observe(f":{pfx('tm')} JOIN #ev", [op], [tm], given={tm: join(tm, "#ev")[0]})
    pl = srv.client("pl")
    observe(f":{pfx('pl')} JOIN #ev", [op], [tm], [pl], given={pl: join(pl, "#ev")[0]})
    actor = capped(srv, "actor", FULL_CAPS)
    everyone = {"fulls": [op, actor], "timeds": [tm], "plains": [pl]}
    observe(f":{pfx('actor')} JOIN #ev", **everyone, given={actor: join(actor, "#ev")[0]})

    op.send("TOPIC #ev :a new topic")
    observe(f":{pfx('op')} TOPIC #ev :a new topic", **everyone)
    op.send("MODE #ev +v actor")
    observe(f":{pfx('op')} MODE #ev +v actor", **everyone)
    op.send("MODE #ev +m")
    observe(f":{pfx('op')} MODE #ev +m", **everyone)
    actor.send("NICK actor2")
    observe(f":{pfx('actor')} NICK actor2", **everyone)
    actor.send("PART #ev :bye now")
    observe(f":{pfx('actor2')} PART #ev :bye now", **everyone)
    observe(f":{pfx('actor2')} JOIN #ev", **everyone, given={actor: join(actor, "#ev")[0]})
    op.send("KICK #ev actor2 :out")
    observe(f":{pfx('op')} KICK #ev actor2 :out", **everyone)
    observe(f":{pfx('actor2')} JOIN #ev", **everyone, given={actor: join(actor, "#ev")[0]})
    actor.send("QUIT :done")
    assert actor.expect("ERROR")[-1].startswith("ERROR :")
    observe(f":{pfx('actor2')} QUIT :Quit: done", [op], [tm], [pl])

    ids = [m for m, _ in events]
    times = [t for _, t in events]
    assert len(set(ids)) == len(ids)
    assert all(a < b for a, b in zip(times, times[1:]))
    sync(op, tm, pl)


def test_caps_changed_after_registration_take_effect(srv: RunningServer) -> None:
    alice = srv.client("alice", "#room")
    bob = srv.client("bob", "#room")
    alice.expect("JOIN")
    line = f":{pfx('alice')} PRIVMSG #room :x"
    alice.send("PRIVMSG #room :x")
    assert bob.recv_line() == line
    bob.send(f"CAP REQ :{FULL_CAPS}")
    assert bob.recv_line() == f":chat.test CAP bob ACK :{FULL_CAPS}"
    alice.send("@+k=v PRIVMSG #room :x")
    assert full(bob.recv_line())[2:] == (";+k=v", line)
    bob.send("CAP REQ -message-tags")
    assert bob.recv_line() == ":chat.test CAP bob ACK -message-tags"
    alice.send("@+k=v PRIVMSG #room :x")
    assert timed(bob.recv_line())[1] == line
    alice.send("@+typing=active TAGMSG #room")  # no message-tags: no TAGMSG
    bob.no_line()
    bob.send("CAP REQ -server-time")
    assert bob.recv_line() == ":chat.test CAP bob ACK -server-time"
    alice.send("@+k=v PRIVMSG #room :x")
    assert bob.recv_line() == line


# --- client-only tags -------------------------------------------------------------------


def test_client_tags_reach_message_tags_clients_only(srv: RunningServer) -> None:
    alice = capped(srv, "alice", "", "#room")
    bob = capped(srv, "bob", FULL_CAPS, "#room")
    carol = capped(srv, "carol", "server-time", "#room")
    dave = srv.client("dave", "#room")
    sync(alice, bob, carol, dave)
    alice.send(r"@+example=raw+:=,escaped\:\s\\;+flag;+example.com/foo=bar "
               "PRIVMSG #room :Message")
    expected = f":{pfx('alice')} PRIVMSG #room :Message"
    line = bob.recv_line()
    assert full(line)[2:] == (r";+example=raw+:=,escaped\:\s\\;+flag;+example.com/foo=bar",
                              expected)
    tags = P.parse(line).tags
    assert (tags["+example"], tags["+flag"], tags["+example.com/foo"]) == (
        "raw+:=,escaped; \\", "", "bar")
    assert timed(carol.recv_line())[1] == expected
    assert dave.recv_line() == expected
    # Escapes that are not canonical are unescaped, then sent out canonically.
    alice.send(r"@+a=x\by;+b=end\;+c=\r\n\\s;+d=caf\sé😀 NOTICE #room :n")
    line = bob.recv_line()
    assert body(line) == f":{pfx('alice')} NOTICE #room :n"
    tags = P.parse(line).tags
    assert (tags["+a"], tags["+b"], tags["+c"], tags["+d"]) == ("xby", "end", "\r\n\\s",
                                                                 "caf é😀")
    assert "\r" not in line and "\n" not in line
    assert timed(carol.recv_line())[1] == f":{pfx('alice')} NOTICE #room :n"
    assert dave.recv_line() == f":{pfx('alice')} NOTICE #room :n"
    # To a nick as well.
    alice.send("@+reply=yes PRIVMSG bob :direct")
    assert full(bob.recv_line())[2:] == (";+reply=yes", f":{pfx('alice')} PRIVMSG bob :direct")
    alice.send("@+reply=yes PRIVMSG carol :direct")
    assert timed(carol.recv_line())[1] == f":{pfx('alice')} PRIVMSG carol :direct"


def test_forged_server_tags_are_dropped(srv: RunningServer) -> None:
    alice = capped(srv, "alice", FULL_CAPS, "#room")
    bob = capped(srv, "bob", FULL_CAPS, "#room")
    carol = capped(srv, "carol", "server-time", "#room")
    dave = srv.client("dave", "#room")
    sync(alice, bob, carol, dave)
    alice.send("@time=2000-01-01T00:00:00.000Z;msgid=forged;account=root;draft/x=y;+ok=1;"
               "batch=b1 PRIVMSG #room :hi")
    expected = f":{pfx('alice')} PRIVMSG #room :hi"
    m, t, extra, b = full(bob.recv_line())  # full() checks the time is now, not 2000
    assert (extra, b) == (";+ok=1", expected)
    assert m != "forged"
    t2, b2 = timed(carol.recv_line())
    assert (t2, b2) == (t, expected)
    assert dave.recv_line() == expected
    alice.send("@msgid=forged TAGMSG #room")
    m, _, extra, b = full(bob.recv_line())
    assert (m != "forged", extra, b) == (True, "", f":{pfx('alice')} TAGMSG #room")
    for c in (alice, carol, dave):
        c.no_line()


def test_tag_section_limit_is_4096_bytes(srv: RunningServer) -> None:
    alice = capped(srv, "alice", FULL_CAPS, "#room")
    bob = capped(srv, "bob", FULL_CAPS, "#room")
    sync(alice, bob)
    at_limit = "@+big=" + "v" * (4096 - 7) + " "
    assert len(at_limit.encode()) == 4096
    alice.send(at_limit + "PRIVMSG #room :limit")
    assert full(bob.recv_line())[2:] == (";+big=" + "v" * 4089,
                                         f":{pfx('alice')} PRIVMSG #room :limit")
    refused = f":chat.test 417 alice :{TOO_LONG}"
    over = [
        "@+big=" + "v" * (4096 - 6) + " PRIVMSG #room :over",  # client-only tag
        "@big=" + "v" * (4096 - 5) + " PRIVMSG #room :over",  # a tag we would drop counts too
        "@+big=" + "é" * 2045 + " PRIVMSG #room :over",  # 4,097 bytes, 2,052 characters
        "@" + ";".join(f"+tag{i}" for i in range(900)) + " TAGMSG #room",
    ]
    for line in over:
        assert len(line.split(" ", 1)[0].encode()) + 1 > 4096
        alice.send(line)
        assert alice.recv_line() == refused
    bob.no_line()
    fits_in_bytes = "@+big=" + "é" * 2044 + "v" + " "
    assert len(fits_in_bytes.encode()) == 4096
    alice.send(fits_in_bytes + "PRIVMSG #room :bytes")
    assert P.parse(bob.recv_line(), limits=False).tags["+big"] == "é" * 2044 + "v"
    # The 512-byte limit applies to the rest of the line, tags not counted.
    head = "PRIVMSG #room :"
    alice.send(at_limit + head + "x" * (510 - len(head)))
    got = bob.recv_line()
    assert body(got).startswith(f":{pfx('alice')} {head}xxx")
    assert len(body(got).encode()) + 2 <= 512
    alice.send(at_limit + head + "x" * (511 - len(head)))
    assert alice.recv_line() == refused
    bob.no_line()
    alice.send("PRIVMSG #room :still here")
    assert full(bob.recv_line())[3] == f":{pfx('alice')} PRIVMSG #room :still here"


# --- TAGMSG ---------------------------------------------------------------------------------


def test_tagmsg_to_room_reaches_message_tags_members_only(srv: RunningServer) -> None:
    alice = capped(srv, "alice", FULL_CAPS, "#room")
    bob = capped(srv, "bob", FULL_CAPS, "#room")
    erin = capped(srv, "erin", "message-tags", "#room")
    carol = capped(srv, "carol", "server-time", "#room")
    dave = srv.client("dave", "#room")
    sync(alice, bob, erin, carol, dave)
    alice.send("@+typing=active TAGMSG #room")
    expected = f":{pfx('alice')} TAGMSG #room"
    m, t, extra, b = full(bob.recv_line())
    assert (extra, b) == (";+typing=active", expected)
    assert full(erin.recv_line()) == (m, t, extra, b)
    alice.send("TAGMSG #room")  # no tags at all is still a TAGMSG
    assert full(bob.recv_line())[2:] == ("", expected)
    assert full(erin.recv_line())[2:] == ("", expected)
    carol.no_line()
    dave.no_line()
    alice.no_line()  # no echo without echo-message


def test_tagmsg_to_nick_and_errors(srv: RunningServer) -> None:
    alice = capped(srv, "alice", FULL_CAPS)
    bob = capped(srv, "bob", FULL_CAPS)
    dave = srv.client("dave")
    alice.send("@+typing=paused TAGMSG bob")
    assert full(bob.recv_line())[2:] == (";+typing=paused", f":{pfx('alice')} TAGMSG bob")
    alice.send("@+typing=paused TAGMSG dave")
    dave.no_line()
    alice.send("TAGMSG")
    assert alice.recv_line() == ":chat.test 461 alice TAGMSG :Not enough parameters"
    alice.send("@+typing=active TAGMSG ghost")
    assert alice.recv_line() == ":chat.test 401 alice ghost :No such nick/channel"
    alice.send("@+typing=active TAGMSG #nowhere")
    assert alice.recv_line() == ":chat.test 401 alice #nowhere :No such nick/channel"
    join(dave, "#closed")  # +n: outsiders can't send, TAGMSG included
    alice.send("@+typing=active TAGMSG #closed")
    assert alice.recv_line() == ":chat.test 404 alice #closed :Cannot send to channel"
    dave.no_line()


# --- echo-message -------------------------------------------------------------------------


def test_echo_has_the_recipients_tags_and_own_prefix(srv: RunningServer) -> None:
    alice = capped(srv, "alice", "echo-message " + FULL_CAPS, "#room")
    tim = capped(srv, "tim", "echo-message server-time", "#room")
    pete = capped(srv, "pete", "echo-message", "#room")
    bob = capped(srv, "bob", FULL_CAPS, "#room")
    sync(alice, tim, pete, bob)
    alice.send("@+draft/react=x;time=1999-01-01T00:00:00.000Z PRIVMSG #room :hi")
    echo = alice.recv_line()
    assert echo == bob.recv_line()
    assert full(echo)[2:] == (";+draft/react=x", f":{pfx('alice')} PRIVMSG #room :hi")
    t, _ = timed(tim.recv_line())
    assert t == full(echo)[1]
    assert pete.recv_line() == f":{pfx('alice')} PRIVMSG #room :hi"
    # server-time alone: the echo carries time only; no caps beyond echo: no tags.
    tim.send("NOTICE #room :from tim")
    t_echo, b_echo = timed(tim.recv_line())
    assert b_echo == f":{pfx('tim')} NOTICE #room :from tim"
    assert full(bob.recv_line())[1:] == (t_echo, "", b_echo)
    assert full(alice.recv_line())[1:] == (t_echo, "", b_echo)
    assert pete.recv_line() == b_echo
    pete.send("PRIVMSG #room :from pete")
    expected = f":{pfx('pete')} PRIVMSG #room :from pete"
    assert pete.recv_line() == expected
    m, t, _, _ = full(bob.recv_line())
    assert full(alice.recv_line()) == (m, t, "", expected)
    assert timed(tim.recv_line()) == (t, expected)
    alice.send("@+typing=active TAGMSG #room")
    echo = alice.recv_line()
    assert echo == bob.recv_line()
    assert full(echo)[2:] == (";+typing=active", f":{pfx('alice')} TAGMSG #room")
    sync(alice, tim, pete, bob)


def test_message_to_yourself_is_delivered_and_echoed(srv: RunningServer) -> None:
    """Once without echo-message; with it, the echo and the delivered copy (the
    labeled-response spec: "echo-message will result in duplicate messages")."""
    solo = srv.client("solo")
    solo.send("PRIVMSG solo :me")
    assert solo.recv_line() == f":{pfx('solo')} PRIVMSG solo :me"
    solo.no_line()
    echo = capped(srv, "echo", "echo-message")
    echo.send("PRIVMSG echo :me")
    assert echo.recv_line() == f":{pfx('echo')} PRIVMSG echo :me"
    assert echo.recv_line() == f":{pfx('echo')} PRIVMSG echo :me"
    echo.no_line()
    tagged = capped(srv, "tagged", "echo-message " + FULL_CAPS)
    tagged.send("@+x=1 PRIVMSG tagged :me")
    first, second = full(tagged.recv_line()), full(tagged.recv_line())
    assert first == second and first[2:] == (";+x=1", f":{pfx('tagged')} PRIVMSG tagged :me")
    tagged.no_line()
    tagged.send("@+typing=active TAGMSG tagged")
    first, second = full(tagged.recv_line()), full(tagged.recv_line())
    assert first == second and first[2:] == (";+typing=active",
                                             f":{pfx('tagged')} TAGMSG tagged")
    tagged.no_line()


def test_echo_message_removal_takes_effect_from_the_next_line(srv: RunningServer) -> None:
    alice = capped(srv, "alice", "echo-message", "#room")
    bob = srv.client("bob", "#room")
    sync(alice, bob)
    alice.send(b"CAP REQ -echo-message\r\nPRIVMSG #room :after\r\n")  # one write
    assert alice.recv_line() == ":chat.test CAP alice ACK -echo-message"
    assert bob.recv_line() == f":{pfx('alice')} PRIVMSG #room :after"
    alice.no_line()
    alice.send(b"CAP REQ echo-message\r\nPRIVMSG #room :again\r\n")
    assert alice.recv_line() == ":chat.test CAP alice ACK echo-message"
    assert alice.recv_line() == f":{pfx('alice')} PRIVMSG #room :again"
    assert bob.recv_line() == f":{pfx('alice')} PRIVMSG #room :again"


def test_no_echo_for_a_refused_message(srv: RunningServer) -> None:
    srv.client("owner", "#closed")
    alice = capped(srv, "alice", "echo-message " + FULL_CAPS)
    alice.send("PRIVMSG #closed :let me in")
    assert alice.recv_line() == ":chat.test 404 alice #closed :Cannot send to channel"
    alice.send("PRIVMSG ghost :hello")
    assert alice.recv_line() == ":chat.test 401 alice ghost :No such nick/channel"
    alice.no_line()
