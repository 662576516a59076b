"""A room's other lists and what reads them: ban exceptions (+e), invite exceptions (+I),
the account and mute extbans ($a, $a:account, $m:...), ELIST filters on LIST, and WHOWAS's
406 and 369.  Against a real server, as test_modes.py does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import LineClient, RunningServer

from chatroom import protocol as P
from chatroom.registry import MAX_BANS

PW = "correct horse battery staple"


def p(nick: str) -> str:
    return f"{nick}!~u@127.0.0.1"


def logged_in(srv: RunningServer, nick: str) -> LineClient:
    """A connection that made the account ``nick`` with REGISTER (so it is logged in to it),
    then finished registering."""
    c = srv.client()
    c.send("CAP LS 302")
    c.expect(" LS ")
    c.send("CAP REQ :draft/account-registration")
    c.expect(" ACK ")
    c.send(f"NICK {nick}")
    c.send(f"USER u 0 * :{nick}")
    c.send(f"REGISTER * * :{PW}")
    assert "REGISTER SUCCESS" in c.expect("REGISTER")[-1]
    c.send("CAP END")
    c.expect(lambda s: s.split(" ")[1:2] in (["376"], ["422"]))
    c.nick = nick
    return c


def test_isupport_advertises_the_lists(srv: RunningServer) -> None:
    c = srv.client()
    lines = c.register("looker")
    tokens = " ".join(line for line in lines if " 005 " in line).split(" ")
    for token in ("CHANMODES=beI,k,l,imnst", "EXCEPTS=e", "INVEX=I", "EXTBAN=$,am",
                  "ELIST=CMNTU", f"MAXLIST=b:{MAX_BANS},e:{MAX_BANS},I:{MAX_BANS}"):
        assert token in tokens, token


@pytest.mark.parametrize("mode,entry,end,text", [
    ("e", "348", "349", "End of channel exception list"),
    ("I", "346", "347", "End of channel invite exception list"),
])
def test_set_list_unset(srv: RunningServer, mode: str, entry: str, end: str, text: str) -> None:
    op = srv.client("lop", "#r")
    op.send(f"MODE #r {mode}")
    assert op.recv_line() == f":chat.test {end} lop #r :{text}"
    op.send(f"MODE #r +{mode} Friend")
    assert op.recv_line() == f":{p('lop')} MODE #r +{mode} friend!*@*"
    op.send(f"MODE #r +{mode} friend!*@*")  # already there: nothing happens
    op.send(f"MODE #r +{mode} $a:Pal")
    assert op.recv_line() == f":{p('lop')} MODE #r +{mode} $a:pal"
    other = srv.client("lother", "#r")
    op.expect("JOIN")
    other.send(f"MODE #r +{mode}")  # a query is anyone's
    lines = other.lines_until(end)
    assert [line.split(" ")[1:5] for line in lines] == [
        [entry, "lother", "#r", "friend!*@*"], [entry, "lother", "#r", "$a:pal"],
        [end, "lother", "#r", ":End"]]
    assert lines[0].startswith(f":chat.test {entry} lother #r friend!*@* {p('lop')} ")
    other.send(f"MODE #r +{mode} someone")  # a change is the operators'
    assert other.recv_line() == ":chat.test 482 lother #r :You're not channel operator"
    op.send(f"MODE #r -{mode} FRIEND")
    assert op.recv_line() == f":{p('lop')} MODE #r -{mode} friend!*@*"
    op.send(f"MODE #r -{mode} nobody")  # not on the list: nothing happens
    op.send(f"MODE #r {mode}")
    assert op.lines_until(end)[0].split(" ")[1:5] == [entry, "lop", "#r", "$a:pal"]


@pytest.mark.parametrize("mode", ["b", "e", "I"])
def test_list_limit(srv: RunningServer, mode: str) -> None:
    op = srv.client("fop", "#f")
    for start in range(0, MAX_BANS, 4):  # MODES=4: four to a line
        masks = " ".join(f"n{i}" for i in range(start, min(start + 4, MAX_BANS)))
        op.send(f"MODE #f +{mode * 4} {masks}")
        op.expect("MODE #f")
    op.send(f"MODE #f +{mode} one-too-many")
    full = {"b": "ban", "e": "exception", "I": "invite exception"}[mode]
    assert op.recv_line() == f":chat.test 478 fop #f {mode} :Channel {full} list is full"


def test_exception_lets_a_banned_user_in_and_speak(srv: RunningServer) -> None:
    op = srv.client("eop", "#e")
    op.send("MODE #e +b *!*@127.0.0.1")
    op.expect("MODE")
    shut = srv.client("shut")
    shut.send("JOIN #e")
    assert shut.recv_line() == ":chat.test 474 shut #e :Cannot join channel (+b)"
    op.send("MODE #e +e welcome")
    assert op.recv_line() == f":{p('eop')} MODE #e +e welcome!*@*"
    guest = srv.client("welcome")
    assert guest.join("#e")[0] == f":{p('welcome')} JOIN #e"
    op.expect("JOIN")
    guest.send("PRIVMSG #e :thanks")
    assert op.recv_line() == f":{p('welcome')} PRIVMSG #e :thanks"
    shut.send("JOIN #e")  # the exception is for one nick only
    assert shut.recv_line() == ":chat.test 474 shut #e :Cannot join channel (+b)"


def test_invite_exception_gets_past_invite_only(srv: RunningServer) -> None:
    op = srv.client("iop", "#i")
    op.send("MODE #i +i")
    op.expect("MODE")
    op.send("MODE #i +I friend")
    op.expect("MODE")
    stranger = srv.client("stranger")
    stranger.send("JOIN #i")
    assert stranger.recv_line() == ":chat.test 473 stranger #i :Cannot join channel (+i)"
    friend = srv.client("friend")
    assert friend.join("#i")[0] == f":{p('friend')} JOIN #i"
    op.send("MODE #i +b friend")  # +I is no way past a ban
    op.expect("MODE #i +b")
    friend.send("PART #i")
    friend.expect("PART")
    friend.send("JOIN #i")
    assert friend.recv_line() == ":chat.test 474 friend #i :Cannot join channel (+b)"


def test_account_extban(srv: RunningServer) -> None:
    op = srv.client("aop", "#a")
    op.send("MODE #a +b $a:Troll")
    assert op.recv_line() == f":{p('aop')} MODE #a +b $a:troll"
    troll = logged_in(srv, "troll")
    troll.send("JOIN #a")
    assert troll.recv_line() == ":chat.test 474 troll #a :Cannot join channel (+b)"
    # A guest with that nick is not the account: the ban does not touch it.
    troll.send("QUIT")
    assert troll.closed()
    assert srv.wait_for(lambda: srv.server.reg.nicks.get("troll") is None)
    guest = srv.client("trollish")
    assert guest.join("#a")[0] == f":{p('trollish')} JOIN #a"
    op.expect("JOIN")
    # $a alone: anyone logged in; $a:mask in +I lets accounts past +i.
    op.send("MODE #a +i")
    op.expect("MODE")
    op.send("MODE #a +I $a:fr*")
    assert op.recv_line() == f":{p('aop')} MODE #a +I $a:fr*"
    pal = logged_in(srv, "fred")
    assert pal.join("#a")[0] == f":{p('fred')} JOIN #a"
    stranger = srv.client("frguest")  # a guest: $a: never matches it
    stranger.send("JOIN #a")
    assert stranger.recv_line() == ":chat.test 473 frguest #a :Cannot join channel (+i)"
    op.send("MODE #a -i+b $a")
    op.expect("MODE #a")
    other = logged_in(srv, "other")
    other.send("JOIN #a")
    assert other.recv_line() == ":chat.test 474 other #a :Cannot join channel (+b)"
    op.send("MODE #a +e $a:other")  # an account exception beats the account ban
    op.expect("MODE #a +e")
    assert other.join("#a")[0] == f":{p('other')} JOIN #a"


def test_mute_extban(srv: RunningServer) -> None:
    op = srv.client("mop", "#m")
    loud = srv.client("loud", "#m")
    op.expect("JOIN")
    op.send("MODE #m +b $m:Loud")
    assert op.recv_line() == f":{p('mop')} MODE #m +b $m:loud!*@*"
    loud.expect("MODE")
    loud.send("PRIVMSG #m :hello?")
    assert loud.recv_line() == ":chat.test 404 loud #m :Cannot send to channel (you are muted)"
    loud.send("NOTICE #m :hello?")  # NOTICE is never answered, and not relayed either
    loud.send("PART #m")
    assert loud.recv_line().endswith("PART #m")
    assert loud.join("#m")[0] == f":{p('loud')} JOIN #m"  # a mute is no ban
    assert op.recv_line() == f":{p('loud')} PART #m"  # nothing of the NOTICE came first
    op.expect("JOIN")
    op.send("MODE #m +v loud")  # voice speaks through a mute, as through a ban
    op.expect("MODE")
    loud.expect("MODE")
    loud.send("PRIVMSG #m :voiced")
    assert op.recv_line() == f":{p('loud')} PRIVMSG #m :voiced"
    op.send("MODE #m -v+e loud loud")  # and so does an exception
    op.expect("MODE")
    loud.expect("MODE")
    loud.send("PRIVMSG #m :excepted")
    assert op.recv_line() == f":{p('loud')} PRIVMSG #m :excepted"
    op.send("MODE #m -e loud")
    op.expect("MODE")
    loud.expect("MODE")
    op.send("MODE #m -b $m:loud")
    assert op.recv_line() == f":{p('mop')} MODE #m -b $m:loud!*@*"
    loud.expect("MODE")
    # A mute of an account, and the plain ban's wording left as it was.
    muted = logged_in(srv, "hush")
    muted.join("#m")
    op.send("MODE #m +b $m:$a:hush")
    assert op.expect("MODE #m")[-1] == f":{p('mop')} MODE #m +b $m:$a:hush"
    muted.expect("MODE")
    muted.send("PRIVMSG #m :x")
    assert muted.recv_line() == ":chat.test 404 hush #m :Cannot send to channel (you are muted)"
    op.send("MODE #m +b loud")
    op.expect("MODE")
    loud.expect("+b loud!*@*")
    loud.send("PRIVMSG #m :x")
    assert loud.recv_line() == ":chat.test 404 loud #m :Cannot send to channel"


@pytest.mark.parametrize("mode,arg,why", [
    ("b", "$x:foo", "Unknown extban type (this server has $a and $m)"),
    ("b", "$", "Unknown extban type (this server has $a and $m)"),
    ("b", "$ab", "Unknown extban type (this server has $a and $m)"),
    ("b", "$a:", "$a: needs an account name (or mask) after it"),
    ("e", "$a:x!y", "$a: needs an account name (or mask) after it"),
    ("b", "$m:", "$m: needs a mask or an account extban after it"),
    ("b", "$m:$m:x", "Unknown extban type (this server has $a and $m)"),
    ("e", "$m:x", "A mute ($m:) belongs in the ban list (+b) only"),
    ("I", "$m:$a", "A mute ($m:) belongs in the ban list (+b) only"),
])
def test_malformed_extbans_are_refused(srv: RunningServer, mode: str, arg: str,
                                       why: str) -> None:
    op = srv.client("xop", "#x")
    op.send(f"MODE #x +{mode} {arg}")
    assert op.recv_line() == f":chat.test 696 xop #x {mode} {arg} :{why}"
    op.send(f"MODE #x {mode}")
    assert op.recv_line().split(" ")[1] in ("368", "349", "347")  # nothing was stored


def test_lists_survive_a_restart(make_server: Callable[..., RunningServer],
                                 tmp_path: Path) -> None:
    data = str(tmp_path)
    srv = make_server(data_dir=data)
    op = logged_in(srv, "keeper")  # a founder's room waits for the founder
    op.join("#kept")
    op.send("MODE #kept +beI $m:noisy $a:pal fr*")
    op.expect("MODE #kept")
    op.send("QUIT")
    assert op.closed()
    srv.server.shutdown()  # a clean stop (the fixture closes the rest)
    srv.thread.join(timeout=10)
    srv = make_server(data_dir=data)
    look = srv.client("look")
    look.send("JOIN #kept")
    look.lines_until("366")
    for mode, code, mask in (("b", "367", "$m:noisy!*@*"), ("e", "348", "$a:pal"),
                             ("I", "346", "fr*!*@*")):
        look.send(f"MODE #kept {mode}")
        assert look.recv_line().split(" ")[1:5] == [code, "look", "#kept", mask]
        look.recv_line()


def test_elist_filters(srv: RunningServer) -> None:
    a = srv.client("el1", "#big")
    srv.client("el2", "#big")
    srv.client("el3", "#big")
    srv.client("el4", "#small")
    a.send("TOPIC #big :about big things")
    a.expect("TOPIC")
    with srv.server.reg.lock:  # as if #small had been made two hours ago
        srv.server.reg.channels["#small"].created -= 7200

    def listed(*params: str) -> list[str]:
        a.send(" ".join(("LIST", *params)))
        return sorted(line.split(" ")[3] for line in a.lines_until("323") if " 322 " in line)

    assert listed() == ["#big", "#small"]
    assert listed(">2") == ["#big"]
    assert listed("<2") == ["#small"]
    assert listed(">0,<2") == ["#small"]
    assert listed("C>60") == ["#small"]  # created more than an hour ago
    assert listed("C<60") == ["#big"]  # created less than an hour ago
    assert listed("T<60") == ["#big"]  # a topic set within the hour (#small has none)
    assert listed("T>60") == []
    assert listed("#s*") == ["#small"]  # M: a mask
    assert listed("!#s*") == ["#big"]  # N: not the mask
    assert listed("#big,#s*") == ["#big", "#small"]
    assert listed("*", ">2") == ["#big"]  # conditions as the second parameter too
    assert listed(">x") == ["#big", "#small"]  # a condition that is no number is ignored


def test_whowas_replies(srv: RunningServer) -> None:
    asker = srv.client("wasker")
    gone = srv.client("wgone")
    gone.send("QUIT")
    assert gone.closed()
    assert srv.wait_for(lambda: srv.server.reg.nicks.get(P.casefold("wgone")) is None)
    asker.send("WHOWAS nosuch")
    assert asker.lines_until("369") == [
        ":chat.test 406 wasker nosuch :There was no such nickname",
        ":chat.test 369 wasker nosuch :End of WHOWAS",
    ]
    asker.send("WHOWAS nosuch,wgone")  # each nick in turn, 406 first, 369 last
    assert [line.split(" ")[1] for line in asker.lines_until("369")] == [
        "406", "314", "312", "369"]
    asker.send("WHOWAS wasker")  # here now, but never gone: 406 too
    assert [line.split(" ")[1] for line in asker.lines_until("369")] == ["406", "369"]
    asker.no_line()
