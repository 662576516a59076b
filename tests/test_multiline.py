"""IRCv3 ``draft/multiline`` against a real server: the cap and its limits, a batch
delivered as one batch to clients that take it and as separate lines (no blank ones, the
msgid on the first) to the others, every FAIL path with nothing reaching anyone, flood
control counting a batch once, echo-message and labels, history, private messages.

The spec: extensions/multiline.md and client-batch.md in ircv3-specifications.
"""

from __future__ import annotations

import re
import time

from conftest import LineClient, RunningServer
from test_history import connect, drain, quiet

from chatroom import protocol as P

SRV = "chat.test"
ML = "batch draft/multiline"  # the spec: multiline needs batch too
FULL = "message-tags server-time"
CAP_302 = "draft/multiline=max-bytes=4096,max-lines=100"
MSGID_RE = re.compile(r"[A-Za-z0-9_-]+\Z")


def pfx(nick: str) -> str:
    return f"{nick}!~u@127.0.0.1"


def parse(line: str) -> P.Message:
    return P.parse(line, limits=False)


def body(line: str) -> str:
    return line.split(" ", 1)[1] if line.startswith("@") else line


def batch_lines(ref: str, target: str, texts: list[str], command: str = "PRIVMSG",
                concat: frozenset[int] = frozenset(), opening_tags: str = "") -> bytes:
    """One write holding a whole client batch: the opening, a line per text (those at the
    indexes in ``concat`` with the concat tag), the close."""
    out = [f"{opening_tags}BATCH +{ref} draft/multiline {target}"]
    for i, text in enumerate(texts):
        tags = f"@batch={ref}" + (";draft/multiline-concat" if i in concat else "")
        out.append(f"{tags} {command} {target} :{text}")
    out.append(f"BATCH -{ref}")
    return "".join(line + "\r\n" for line in out).encode()


def read_ml_batch(c: LineClient) -> tuple[P.Message, list[P.Message]]:
    """The next draft/multiline batch ``c`` gets: its opening and its lines, checked to
    carry its reference (and nothing else but the concat tag), closed by the same source."""
    opening = parse(c.recv_line())
    assert opening.command == "BATCH" and opening.params[1] == "draft/multiline", opening
    ref = opening.params[0][1:]
    assert re.fullmatch(r"[A-Za-z0-9-]+", ref)
    inner = []
    while True:
        msg = parse(c.recv_line())
        if msg.command == "BATCH":
            assert msg.params == ("-" + ref,) and msg.source == opening.source, msg
            return opening, inner
        assert msg.tags.pop("batch") == ref, msg
        assert set(msg.tags) <= {"draft/multiline-concat"}, msg
        inner.append(msg)


def lines_of(c: LineClient, n: int) -> list[P.Message]:
    return [parse(c.recv_line()) for _ in range(n)]


def fail(c: LineClient) -> P.Message:
    msg = parse(c.recv_line())
    assert msg.command == "FAIL" and msg.source == SRV and msg.params[0] == "BATCH", msg
    return msg


def room(srv: RunningServer, name: str = "#r") -> tuple[LineClient, LineClient, LineClient]:
    """A multiline sender, a multiline reader and a plain reader, in ``name``."""
    sender = connect(srv, "alice", ML, name)
    reader = connect(srv, "bob", ML, name)
    plain = connect(srv, "carol", "", name)
    for c in (sender, reader, plain):
        drain(c)
    return sender, reader, plain


# --- the cap ------------------------------------------------------------------------------


def test_cap_ls_302_carries_the_limits_and_they_follow_the_options(make_server) -> None:
    srv = make_server()
    c = srv.client()
    c.send("CAP LS 302")
    offered = parse(c.recv_line()).params[-1].split()
    assert CAP_302 in offered and "batch" in offered
    c.send("CAP LS")  # without 302: no values
    old = srv.client()
    old.send("CAP LS")
    assert "draft/multiline" in parse(old.recv_line()).params[-1].split()
    # Negotiation order is not enforced (the spec): multiline alone is acknowledged.
    old.send("CAP REQ draft/multiline")
    assert old.recv_line() == f":{SRV} CAP * ACK draft/multiline"
    other = make_server(multiline_max_bytes=999, multiline_max_lines=7)
    c = other.client()
    c.send("CAP LS 302")
    offered = parse(c.recv_line()).params[-1].split()
    assert "draft/multiline=max-bytes=999,max-lines=7" in offered
    # --no-multiline: not offered, not granted, no batch to send.
    off = make_server(multiline=False)
    c = off.client()
    c.send("CAP LS 302")
    assert not [cap for cap in parse(c.recv_line()).params[-1].split() if "multiline" in cap]
    c.send("CAP REQ :batch draft/multiline")
    assert c.recv_line() == f":{SRV} CAP * NAK :batch draft/multiline"
    c.send("CAP END")
    c.register("nomulti")
    c.send("BATCH +x draft/multiline #r")
    assert fail(c).params[1] == "MULTILINE_INVALID"


# --- delivery -------------------------------------------------------------------------------


def test_100_lines_one_batch_for_multiline_clients_lines_for_the_others(
        make_server) -> None:
    srv = make_server()
    sender, reader, plain = room(srv)
    tagged = connect(srv, "dave", FULL, "#r")  # tags, but no multiline: the fallback
    for c in (sender, reader, plain):
        drain(c)
    texts = [f"line {i}" if i % 10 else "" for i in range(1, 101)]  # every tenth blank
    texts[5] = "split "
    texts[6] = "in two"  # joined to the one before it
    sender.send(batch_lines("paste1", "#r", texts, concat=frozenset({6})))
    opening, inner = read_ml_batch(reader)
    assert opening.source == pfx("alice") and opening.params[2] == "#r"
    assert [m.params for m in inner] == [("#r", t) for t in texts]
    assert [m.source for m in inner] == [pfx("alice")] * 100
    assert ["draft/multiline-concat" in m.tags for m in inner] == [i == 6 for i in range(100)]
    shown = [t for t in texts if t]  # the spec: no blank lines without the cap
    got = lines_of(plain, len(shown))
    assert [m.params for m in got] == [("#r", t) for t in shown]
    assert all(m.tags == {} and m.command == "PRIVMSG" for m in got)
    got = lines_of(tagged, len(shown))
    assert [m.params for m in got] == [("#r", t) for t in shown]
    # One event: the msgid on the first line only, the same time on every one.
    msgid, stamp = got[0].tags["msgid"], got[0].tags["time"]
    assert MSGID_RE.match(msgid)
    assert all(m.tags == {"time": stamp} for m in got[1:])
    quiet(sender, reader, plain, tagged)  # no echo without echo-message, nothing else
    # A message-tags multiline client gets the same msgid and time on the opening.
    full = connect(srv, "erin", f"{ML} {FULL}", "#r")
    for c in (sender, reader, plain, tagged, full):
        drain(c)
    sender.send(batch_lines("paste2", "#r", ["a", "b"]))
    opening, inner = read_ml_batch(full)
    assert set(opening.tags) == {"msgid", "time"} and [m.params[1] for m in inner] == ["a", "b"]
    fallback = lines_of(tagged, 2)
    assert fallback[0].tags["msgid"] == opening.tags["msgid"]
    assert fallback[0].tags["time"] == opening.tags["time"] == fallback[1].tags["time"]
    assert [m.params[1] for m in lines_of(plain, 2)] == ["a", "b"]
    read_ml_batch(reader)


def test_order_is_kept_around_a_batch(srv: RunningServer) -> None:
    sender, reader, plain = room(srv)
    sender.send(b"PRIVMSG #r :before\r\n" + batch_lines("x", "#r", ["one", "two"])
                + b"PRIVMSG #r :after\r\n")
    assert parse(reader.recv_line()).params[1] == "before"
    assert [m.params[1] for m in read_ml_batch(reader)[1]] == ["one", "two"]
    assert parse(reader.recv_line()).params[1] == "after"
    assert [m.params[1] for m in lines_of(plain, 4)] == ["before", "one", "two", "after"]


def test_notice_batch_and_errors(srv: RunningServer) -> None:
    sender, reader, plain = room(srv)
    sender.send(batch_lines("n1", "#r", ["note", "more"], command="NOTICE"))
    _, inner = read_ml_batch(reader)
    assert [(m.command, m.params[1]) for m in inner] == [("NOTICE", "note"), ("NOTICE", "more")]
    assert [(m.command, m.params[1]) for m in lines_of(plain, 2)] == [("NOTICE", "note"),
                                                                      ("NOTICE", "more")]
    # PRIVMSG's errors for a target that isn't there, or a room one may not speak in;
    # a NOTICE gets no answer (as without multiline).
    sender.send(batch_lines("e1", "#nowhere", ["x"]))
    assert parse(sender.recv_line()).command == "401"
    sender.send(batch_lines("e2", "nobody", ["x"], command="NOTICE"))
    outsider = connect(srv, "oscar", ML)
    outsider.send(batch_lines("e3", "#r", ["x"]))  # +n: members only
    assert parse(outsider.recv_line()).command == "404"
    quiet(sender, reader, plain, outsider)


def test_private_multiline_message(srv: RunningServer) -> None:
    alice = connect(srv, "alice", f"{ML} echo-message")
    bob = connect(srv, "bob", ML)
    carol = connect(srv, "carol")
    carol.send("AWAY :lunch")
    drain(carol)
    alice.send(batch_lines("p1", "bob", ["hi", "", "bob"]))
    opening, inner = read_ml_batch(alice)  # the echo
    assert opening.params[2] == "bob"
    assert [m.params for m in inner] == [("bob", "hi"), ("bob", ""), ("bob", "bob")]
    opening, inner = read_ml_batch(bob)
    assert opening.source == pfx("alice") and [m.params[1] for m in inner] == ["hi", "", "bob"]
    alice.send(batch_lines("p2", "carol", ["hi", "", "carol"]))
    read_ml_batch(alice)
    assert parse(alice.recv_line()).params[1:] == ("carol", "lunch")  # 301, once
    assert [(m.source, m.params) for m in lines_of(carol, 2)] == [
        (pfx("alice"), ("carol", "hi")), (pfx("alice"), ("carol", "carol"))]
    quiet(alice, bob, carol)


# --- echo-message and labels ---------------------------------------------------------------


def test_echo_is_the_batch_with_the_label_on_its_opening(srv: RunningServer) -> None:
    alice = connect(srv, "alice", f"{ML} echo-message labeled-response {FULL}", "#r")
    bob = connect(srv, "bob", f"{ML} {FULL}", "#r")
    drain(alice)
    alice.send(batch_lines("e", "#r", ["one", "two"], opening_tags="@label=L1;+draft/x=1 "))
    echo, inner = read_ml_batch(alice)
    assert echo.tags["label"] == "L1" and echo.tags["+draft/x"] == "1"
    assert [m.params[1] for m in inner] == ["one", "two"]
    got, _ = read_ml_batch(bob)
    assert (got.tags["msgid"], got.tags["time"]) == (echo.tags["msgid"], echo.tags["time"])
    assert "label" not in got.tags and got.tags["+draft/x"] == "1"
    # A label on the close works as well; without echo-message the answer is an ACK.
    alice.send("CAP REQ -echo-message")
    alice.expect("ACK")
    alice.send(batch_lines("e2", "#r", ["three"])[:-len(b"BATCH -e2\r\n")]
               + b"@label=L2 BATCH -e2\r\n")
    assert alice.recv_line() == f"@label=L2 :{SRV} ACK"
    read_ml_batch(bob)
    quiet(alice, bob)


# --- flood control ------------------------------------------------------------------------


def test_a_paste_is_never_cut_off_by_flood_control(make_server) -> None:
    """Defaults: 10 at once, 2 a second, cut 60 past that: 300 lines in three batches
    would be far past it, line by line; each batch counts once."""
    srv = make_server(flood_control=True)
    sender, reader, plain = room(srv)
    texts = [f"pasted line {i} " + "x" * 20 for i in range(100)]  # 3,589 bytes
    sender.send(b"".join(batch_lines(f"f{k}", "#r", texts) for k in range(3)))
    for _ in range(3):  # (throttled line by line, these reads would time out)
        assert [m.params[1] for m in read_ml_batch(reader)[1]] == texts
        assert [m.params[1] for m in lines_of(plain, 100)] == texts
    sender.send("PRIVMSG #r :still here")
    assert parse(reader.recv_line()).params[1] == "still here"


# --- failures: FAIL BATCH, and nothing reaches anyone ---------------------------------------


def test_limits_max_lines_and_max_bytes(srv: RunningServer) -> None:
    sender, reader, plain = room(srv)
    sender.send(batch_lines("l1", "#r", [f"{i}" for i in range(101)]))
    assert fail(sender).params[1:] == ("MULTILINE_MAX_LINES", "100",
                                      "Multiline batch max-lines exceeded")
    # max-bytes: the texts and one byte per line feed; concatenation adds none.
    exact = ["x" * 400] * 10 + ["y" * 86]  # 4,000 + 86 + 10 line feeds = 4,096
    sender.send(batch_lines("b1", "#r", exact + ["z"], concat=frozenset({11})))
    assert fail(sender).params[1:] == ("MULTILINE_MAX_BYTES", "4096",
                                      "Multiline batch max-bytes exceeded")
    quiet(sender, reader, plain)
    sender.send(batch_lines("b2", "#r", exact))  # exactly at the limit: delivered
    assert [m.params[1] for m in read_ml_batch(reader)[1]] == exact
    assert len(lines_of(plain, 11)) == 11
    sender.send(batch_lines("b3", "#r", exact[:-1] + ["y" * 85, "q"], concat=frozenset({11})))
    assert len(read_ml_batch(reader)[1]) == 12  # 4,096 with a concatenated line
    quiet(sender)


def test_wrong_target_mixed_commands_and_bad_lines(srv: RunningServer) -> None:
    sender, reader, plain = room(srv)
    sender.send(b"BATCH +t1 draft/multiline #r\r\n@batch=t1 PRIVMSG #r :ok\r\n"
                b"@batch=t1 PRIVMSG #other :no\r\n@batch=t1 PRIVMSG #r :ignored\r\n"
                b"BATCH -t1\r\n")
    assert fail(sender).params[1:] == ("MULTILINE_INVALID_TARGET", "#r", "#other",
                                      "Invalid multiline target")
    sender.send(b"BATCH +m1 draft/multiline #r\r\n@batch=m1 PRIVMSG #r :starts\r\n"
                b"@batch=m1 NOTICE #r :ends\r\nBATCH -m1\r\n")
    assert fail(sender).params[1:] == ("MULTILINE_INVALID", "Invalid multiline batch")
    sender.send(batch_lines("k1", "#r", ["hello ", ""], concat=frozenset({1})))
    assert fail(sender).params[1:] == (
        "MULTILINE_INVALID", "Invalid multiline batch with concatenated blank line")
    sender.send(batch_lines("k2", "#r", ["", ""]))
    assert fail(sender).params[1:] == ("MULTILINE_INVALID",
                                      "Invalid multiline batch with blank lines only")
    sender.send(batch_lines("k3", "#r", []))
    assert fail(sender).params[1] == "MULTILINE_INVALID"
    # A line the server can't read (too long) may have been part of the batch.
    sender.send(b"BATCH +k4 draft/multiline #r\r\n@batch=k4 PRIVMSG #r :a\r\n@batch=k4 "
                b"PRIVMSG #r :" + b"x" * 600 + b"\r\nBATCH -k4\r\n")
    assert fail(sender).params[1] == "MULTILINE_INVALID"
    assert parse(sender.recv_line()).command == "417"
    quiet(sender, reader, plain)


def test_batch_framing_errors(srv: RunningServer) -> None:
    sender, reader, plain = room(srv)
    sender.send("@batch=nope PRIVMSG #r :unknown reference")
    assert fail(sender).params[1] == "MULTILINE_INVALID"
    sender.send("BATCH -never")  # closing what was never opened
    assert fail(sender).params[1] == "MULTILINE_INVALID"
    sender.send("BATCH +u1 example.org/other #r")
    assert fail(sender).params[1:] == ("UNKNOWN_TYPE", "u1", "example.org/other",
                                      "Unknown batch type")
    sender.send("@batch=u1 PRIVMSG #r :ignored with its batch")
    sender.send("BATCH -u1")
    sender.send("BATCH +bad_ref! draft/multiline #r")
    assert fail(sender).params[1:3] == ("INVALID_REFTAG", "+bad_ref!")
    sender.send("BATCH +s1 draft/multiline @#r")  # one plain target only
    assert fail(sender).params[1] == "MULTILINE_INVALID"
    sender.send("BATCH +s2 draft/multiline #r,#s")
    assert fail(sender).params[1] == "MULTILINE_INVALID"
    sender.send("BATCH")
    assert parse(sender.recv_line()).command == "461"
    # Nested: a BATCH inside a batch.
    sender.send(b"BATCH +o1 draft/multiline #r\r\n@batch=o1 PRIVMSG #r :x\r\n"
                b"@batch=o1 BATCH +i1 draft/multiline #r\r\n@batch=i1 PRIVMSG #r :y\r\n"
                b"@batch=o1 BATCH -i1\r\nBATCH -o1\r\n")
    assert fail(sender).params[1:] == ("MULTILINE_INVALID", "Nested batches are not allowed")
    quiet(sender, reader, plain)
    # Without the caps there is no batch to send; its lines are ordinary messages, as
    # they always were (the batch tag is not relayed).
    drain(plain)
    plain.send("BATCH +c1 draft/multiline #r")
    assert fail(plain).params[1] == "MULTILINE_INVALID"
    plain.send("@batch=c1 PRIVMSG #r :plain")
    assert reader.recv_line() == f":{pfx('carol')} PRIVMSG #r :plain"
    assert sender.recv_line() == f":{pfx('carol')} PRIVMSG #r :plain"
    plain.send("BATCH -c1")
    assert fail(plain).params[1] == "MULTILINE_INVALID"
    quiet(sender, reader, plain)


def test_a_command_inside_an_open_batch_drops_it_and_runs(srv: RunningServer) -> None:
    """client-batch.md: nothing but the batch's lines until it is closed."""
    sender, reader, plain = room(srv)
    sender.send(b"BATCH +a1 draft/multiline #r\r\n@batch=a1 PRIVMSG #r :half\r\n"
                b"PING :alive\r\n")  # a keep-alive does not break it
    assert sender.recv_line() == f":{SRV} PONG {SRV} alive"
    sender.send("PRIVMSG #r :interrupting")
    assert fail(sender).params[1:] == ("MULTILINE_INVALID",
                                      "Multiline batch interrupted by PRIVMSG")
    assert reader.recv_line() == f":{pfx('alice')} PRIVMSG #r :interrupting"
    assert plain.recv_line() == f":{pfx('alice')} PRIVMSG #r :interrupting"
    # Its later lines and its close are ignored quietly; the connection goes on.
    sender.send(b"@batch=a1 PRIVMSG #r :rest\r\nBATCH -a1\r\n")
    quiet(sender, reader, plain)
    # A batch left open (never closed) is dropped by the next thing the client says.
    sender.send(b"BATCH +a2 draft/multiline #r\r\n@batch=a2 PRIVMSG #r :left open\r\n")
    sender.send("TOPIC #r :new topic")
    assert fail(sender).params[1] == "MULTILINE_INVALID"
    assert sender.recv_line() == f":{pfx('alice')} TOPIC #r :new topic"
    assert reader.recv_line() == f":{pfx('alice')} TOPIC #r :new topic"
    # A new batch works as ever.
    sender.send(batch_lines("a3", "#r", ["fine"]))
    assert [m.params[1] for m in read_ml_batch(reader)[1]] == ["fine"]
    assert plain.expect("fine")[0] == f":{pfx('alice')} TOPIC #r :new topic"
    quiet(sender, reader, plain)


def test_a_batch_left_open_too_long_times_out(make_server) -> None:
    srv = make_server(multiline_timeout=0.2)
    sender, reader, plain = room(srv)
    sender.send(b"BATCH +slow draft/multiline #r\r\n@batch=slow PRIVMSG #r :one\r\n")
    drain(sender)
    time.sleep(0.3)  # past the batch's deadline, which only the clock can show
    sender.send(b"@batch=slow PRIVMSG #r :two\r\nBATCH -slow\r\n")
    assert fail(sender).params[1:3] == ("TIMEOUT", "slow")
    quiet(sender, reader, plain)
    sender.send(batch_lines("quick", "#r", ["in time"]))
    assert [m.params[1] for m in read_ml_batch(reader)[1]] == ["in time"]


def test_a_labeled_batch_that_fails_gets_its_fail_labeled(srv: RunningServer) -> None:
    sender = connect(srv, "alice", f"{ML} labeled-response", "#r")
    drain(sender)
    sender.send(batch_lines("f", "#r", ["a"] * 101, opening_tags="@label=F1 "))
    line = sender.recv_line()
    assert line.startswith("@label=F1 ") and " FAIL BATCH MULTILINE_MAX_LINES 100 " in line
    quiet(sender)


# --- history ------------------------------------------------------------------------------


def test_chathistory_replays_one_event(srv: RunningServer) -> None:
    hist = "draft/chathistory " + FULL
    sender = connect(srv, "alice", f"{ML} {hist}", "#r")
    old = connect(srv, "olga", f"batch {hist}", "#r")  # history, but no multiline
    drain(sender)
    texts = ["first", "", "second ", "half"]
    sender.send(b"PRIVMSG #r :single\r\n" + batch_lines("h", "#r", texts, concat=frozenset({3}))
                + b"PRIVMSG #r :last\r\n")
    live = lines_of(old, 1 + 3 + 1)
    msgid = live[1].tags["msgid"]
    assert [m.params[1] for m in live] == ["single", "first", "second ", "half", "last"]
    sender.send("CHATHISTORY LATEST #r * 10")
    outer = parse(sender.recv_line())
    assert outer.params[1:] == ("chathistory", "#r")
    ref = outer.params[0][1:]
    assert parse(sender.recv_line()).params[1] == "single"
    opening = parse(sender.recv_line())  # nested in the chathistory batch (batch.md)
    assert opening.tags["batch"] == ref and opening.tags["msgid"] == msgid
    assert opening.source == pfx("alice") and opening.params[1:] == ("draft/multiline", "#r")
    inner_ref = opening.params[0][1:]
    inner = lines_of(sender, 4)
    assert [m.params[1] for m in inner] == texts
    assert [m.tags.get("batch") for m in inner] == [inner_ref] * 4
    assert ["draft/multiline-concat" in m.tags for m in inner] == [False, False, False, True]
    closing = parse(sender.recv_line())
    assert closing.tags == {"batch": ref} and closing.params == ("-" + inner_ref,)
    assert parse(sender.recv_line()).params[1] == "last"
    assert parse(sender.recv_line()).params == ("-" + ref,)
    # Without the cap: the lines, no blank one, the msgid on the first only.
    old.send("CHATHISTORY LATEST #r * 10")
    got = [parse(x) for x in drain(old)]
    assert [m.params[1] for m in got[1:-1]] == ["single", "first", "second ", "half", "last"]
    assert got[2].tags["msgid"] == msgid
    assert "msgid" not in got[3].tags and "msgid" not in got[4].tags
    assert got[3].tags["time"] == got[2].tags["time"] == live[1].tags["time"]
    assert {m.tags["batch"] for m in got[1:-1]} == {got[0].params[0][1:]}
    # A private multiline message is in the conversation's history too.
    sender.send(batch_lines("pm", "olga", ["a", "b"]))
    assert [m.params[1] for m in lines_of(old, 2)] == ["a", "b"]
    old.send("CHATHISTORY LATEST alice * 10")
    got = [parse(x) for x in drain(old)]
    assert [m.params for m in got[1:-1]] == [("olga", "a"), ("olga", "b")]
    sender.send("CHATHISTORY LATEST olga * 10")
    got = [parse(x) for x in drain(sender)]
    assert [m.command for m in got] == ["BATCH", "BATCH", "PRIVMSG", "PRIVMSG", "BATCH",
                                        "BATCH"]
