"""Room modes beyond the basics: +k key, +l limit, +b bans, +s secret; and WHOWAS."""

from __future__ import annotations

from conftest import RunningServer


def p(nick: str) -> str:
    return f"{nick}!~u@127.0.0.1"


def test_key(srv: RunningServer) -> None:
    op = srv.client("kop", "#k")
    op.send("MODE #k +k beer")
    assert op.recv_line() == f":{p('kop')} MODE #k +k beer"
    guest = srv.client("kguest")
    guest.send("JOIN #k")
    assert guest.recv_line() == ":chat.test 475 kguest #k :Cannot join channel (+k)"
    guest.send("JOIN #k bees")
    assert guest.recv_line() == ":chat.test 475 kguest #k :Cannot join channel (+k)"
    guest.send("MODE #k")
    assert guest.recv_line() == ":chat.test 324 kguest #k +ntk *"
    guest.expect("329")
    guest.send("JOIN #other,#k x,beer")
    assert guest.lines_until("366")[0] == f":{p('kguest')} JOIN #other"
    assert guest.lines_until("366")[0] == f":{p('kguest')} JOIN #k"
    guest.send("MODE #k")
    assert guest.recv_line() == ":chat.test 324 kguest #k +ntk beer"
    op.send("MODE #k +k :has space")
    assert op.expect("696")[-1] == (":chat.test 696 kop #k k * :Key must be 1-23 printable "
                                    "characters, no spaces")
    op.send("MODE #k -k")
    assert op.expect("MODE")[-1] == f":{p('kop')} MODE #k -k *"


def test_limit(srv: RunningServer) -> None:
    op = srv.client("lop", "#l")
    op.send("MODE #l +l 2")
    assert op.recv_line() == f":{p('lop')} MODE #l +l 2"
    srv.client("l2", "#l")
    third = srv.client("l3")
    third.send("JOIN #l")
    assert third.recv_line() == ":chat.test 471 l3 #l :Cannot join channel (+l)"
    op.send("MODE #l +l :abc")
    assert op.expect("696")[-1] == ":chat.test 696 lop #l l abc :Limit must be a positive number"
    op.send("INVITE l3 #l")  # an invitation gets past the limit
    op.expect("341")
    third.expect("INVITE")
    assert third.join("#l")[0] == f":{p('l3')} JOIN #l"
    op.send("MODE #l -l")
    assert op.expect("MODE #l -l")[-1] == f":{p('lop')} MODE #l -l"


def test_bans(srv: RunningServer) -> None:
    op = srv.client("bop", "#b")
    member = srv.client("Bar", "#b")
    op.expect("JOIN")
    op.send("MODE #b +b BAR")
    assert op.recv_line() == f":{p('bop')} MODE #b +b bar!*@*"
    member.expect("MODE")
    member.send("PRIVMSG #b :can I still talk?")
    assert member.recv_line() == ":chat.test 404 Bar #b :Cannot send to channel"
    member.send("PART #b")
    member.expect("PART")
    member.send("JOIN #b")
    assert member.recv_line() == ":chat.test 474 Bar #b :Cannot join channel (+b)"
    op.send("MODE #b b")
    lines = op.lines_until("368")
    assert lines[-2].startswith(f":chat.test 367 bop #b bar!*@* {p('bop')} ")
    assert lines[-1] == ":chat.test 368 bop #b :End of channel ban list"
    op.send("MODE #b -b bar!*@*")
    assert op.expect("MODE #b -b")[-1] == f":{p('bop')} MODE #b -b bar!*@*"
    assert member.join("#b")[0] == f":{p('Bar')} JOIN #b"


def test_secret_rooms_are_hidden(srv: RunningServer) -> None:
    op = srv.client("sop", "#s")
    op.send("MODE #s +s")
    op.expect("MODE")
    out = srv.client("outsider")
    out.send("LIST")
    assert out.lines_until("323") == [":chat.test 321 outsider Channel :Users  Name",
                                      ":chat.test 323 outsider :End of /LIST"]
    out.send("NAMES #s")
    assert out.recv_line() == ":chat.test 366 outsider #s :End of /NAMES list"
    out.send("WHOIS sop")
    assert not any(" 319 " in line for line in out.lines_until("318"))
    op.send("NAMES #s")
    assert op.recv_line() == ":chat.test 353 sop @ #s @sop"


def test_whowas(srv: RunningServer) -> None:
    asker = srv.client("asker")
    for ident in ("id2", "id3"):
        gone = srv.client()
        gone.register("leaver", user=ident, real="Realname")
        gone.send("QUIT :bye")
        assert gone.closed()
    assert srv.wait_for(lambda: "leaver" not in srv.server.reg.nicks)
    asker.send("WHOWAS leaver")
    assert asker.lines_until("369") == [
        ":chat.test 314 asker leaver ~id3 127.0.0.1 * Realname",
        ":chat.test 312 asker leaver chat.test TestNet",
        ":chat.test 314 asker leaver ~id2 127.0.0.1 * Realname",
        ":chat.test 312 asker leaver chat.test TestNet",
        ":chat.test 369 asker leaver :End of WHOWAS",
    ]
    asker.send("WHOWAS leaver 1")
    assert len(asker.lines_until("369")) == 3
    asker.send("WHOWAS *aver")
    assert len(asker.lines_until("369")) == 5
    asker.send("WHOWAS nobody")
    assert asker.lines_until("369") == [
        ":chat.test 406 asker nobody :There was no such nickname",
        ":chat.test 369 asker nobody :End of WHOWAS",
    ]
    asker.send("WHOWAS")
    assert asker.recv_line() == ":chat.test 431 asker :No nickname given"
