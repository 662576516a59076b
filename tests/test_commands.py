"""Every command's success and error replies, byte-exact, between real clients."""

from __future__ import annotations

import time

from conftest import RunningServer

H = "127.0.0.1"


def pfx(nick: str, user: str = "u") -> str:
    return f"{nick}!~{user}@{H}"


def test_join_replies_and_creator_is_operator(srv: RunningServer) -> None:
    a = srv.client("alice")
    assert a.join("#chat") == [
        f":{pfx('alice')} JOIN #chat",
        ":chat.test 353 alice = #chat @alice",
        ":chat.test 366 alice #chat :End of /NAMES list",
    ]
    b = srv.client("bob")
    assert b.join("#Chat") == [
        f":{pfx('bob')} JOIN #chat",
        ":chat.test 353 bob = #chat :@alice bob",
        ":chat.test 366 bob #chat :End of /NAMES list",
    ]
    assert a.recv_line() == f":{pfx('bob')} JOIN #chat"
    b.send("JOIN #chat")  # already there: nothing happens
    b.no_line()


def test_join_errors(make_server) -> None:
    s = make_server(max_channels=2, max_members=1)
    c = s.client("joiner")
    c.send("JOIN")
    assert c.recv_line() == ":chat.test 461 joiner JOIN :Not enough parameters"
    c.send("JOIN nohash")
    assert c.recv_line() == ":chat.test 403 joiner nohash :No such channel"
    c.send("JOIN #a,#b,#c")
    c.lines_until("366")
    c.lines_until("366")
    assert c.recv_line() == ":chat.test 405 joiner #c :You have joined too many channels"
    other = s.client("other")
    other.send("JOIN #a")
    assert other.recv_line() == ":chat.test 471 other #a :Cannot join channel (+l)"


def test_join_zero_parts_everything(srv: RunningServer) -> None:
    c = srv.client("zed")
    c.send("JOIN #a,#b")
    c.lines_until("366")
    c.lines_until("366")
    c.send("JOIN 0")
    assert c.recv_line() == f":{pfx('zed')} PART #a :Left all channels"
    assert c.recv_line() == f":{pfx('zed')} PART #b :Left all channels"
    assert srv.wait_for(lambda: not srv.server.reg.channels)


def test_privmsg_to_room_reaches_all_but_sender(srv: RunningServer) -> None:
    a, b, c = (srv.client(n, "#chat") for n in ("a1", "b1", "c1"))
    a.expect("JOIN"), a.expect("JOIN"), b.expect("JOIN")
    a.send("PRIVMSG #chat :hello, world 😀")
    assert b.recv_line() == f":{pfx('a1')} PRIVMSG #chat :hello, world 😀"
    assert c.recv_line() == f":{pfx('a1')} PRIVMSG #chat :hello, world 😀"
    a.no_line()
    a.send("NOTICE #chat :heads up")
    assert b.recv_line() == f":{pfx('a1')} NOTICE #chat :heads up"


def test_privmsg_to_nick_and_errors(srv: RunningServer) -> None:
    a, b = srv.client("amy"), srv.client("ben")
    a.send("PRIVMSG BEN :psst")
    assert b.recv_line() == f":{pfx('amy')} PRIVMSG BEN :psst"
    a.send("PRIVMSG")
    assert a.recv_line() == ":chat.test 411 amy :No recipient given (PRIVMSG)"
    a.send("PRIVMSG ben")
    assert a.recv_line() == ":chat.test 412 amy :No text to send"
    a.send("PRIVMSG ben :")
    assert a.recv_line() == ":chat.test 412 amy :No text to send"
    a.send("PRIVMSG ghost :hi")
    assert a.recv_line() == ":chat.test 401 amy ghost :No such nick/channel"
    a.send("PRIVMSG #nowhere :hi")
    assert a.recv_line() == ":chat.test 401 amy #nowhere :No such nick/channel"
    a.send("NOTICE ghost :hi")  # NOTICE never answers with an error
    a.no_line()


def test_no_external_messages_and_moderated(srv: RunningServer) -> None:
    op = srv.client("op", "#room")
    out = srv.client("out")
    out.send("PRIVMSG #room :let me in")
    assert out.recv_line() == ":chat.test 404 out #room :Cannot send to channel"
    v = srv.client("v", "#room")
    op.expect("JOIN")
    op.send("MODE #room +m")
    assert op.recv_line() == f":{pfx('op')} MODE #room +m"
    assert v.recv_line() == f":{pfx('op')} MODE #room +m"
    v.send("PRIVMSG #room :can I talk?")
    assert v.recv_line() == ":chat.test 404 v #room :Cannot send to channel"
    op.send("MODE #room +v v")
    assert v.recv_line() == f":{pfx('op')} MODE #room +v v"
    v.send("PRIVMSG #room :now I can")
    assert op.expect("PRIVMSG")[-1] == f":{pfx('v')} PRIVMSG #room :now I can"


def test_part(srv: RunningServer) -> None:
    a, b = srv.client("pa", "#p"), srv.client("pb", "#p")
    a.expect("JOIN")
    b.send("PART #p :see you")
    assert b.recv_line() == f":{pfx('pb')} PART #p :see you"
    assert a.recv_line() == f":{pfx('pb')} PART #p :see you"
    b.send("PART #p")
    assert b.recv_line() == ":chat.test 442 pb #p :You're not on that channel"
    b.send("PART #gone")
    assert b.recv_line() == ":chat.test 403 pb #gone :No such channel"
    a.send("PART #p")
    assert a.recv_line() == f":{pfx('pa')} PART #p"
    assert srv.wait_for(lambda: not srv.server.reg.channels)


def test_topic(srv: RunningServer) -> None:
    op, m = srv.client("top", "#t"), srv.client("mem", "#t")
    op.expect("JOIN")
    m.send("TOPIC #t")
    assert m.recv_line() == ":chat.test 331 mem #t :No topic is set"
    m.send("TOPIC #t :mine")
    assert m.recv_line() == ":chat.test 482 mem #t :You're not channel operator"
    op.send("TOPIC #t :Welcome all")
    assert op.recv_line() == f":{pfx('top')} TOPIC #t :Welcome all"
    assert m.recv_line() == f":{pfx('top')} TOPIC #t :Welcome all"
    m.send("TOPIC #t")
    assert m.recv_line() == ":chat.test 332 mem #t :Welcome all"
    line = m.recv_line()
    assert line.startswith(f":chat.test 333 mem #t {pfx('top')} ")
    assert abs(int(line.rsplit(" ", 1)[1]) - time.time()) < 60
    late = srv.client("late")
    lines = late.join("#t")
    assert lines[1] == ":chat.test 332 late #t :Welcome all"
    assert lines[2].startswith(":chat.test 333 late #t ")
    late.send("TOPIC #nope")
    assert late.recv_line() == ":chat.test 403 late #nope :No such channel"
    outsider = srv.client("outsider")
    outsider.send("TOPIC #t :x")
    assert outsider.recv_line() == ":chat.test 442 outsider #t :You're not on that channel"
    op.send("MODE #t -t")
    op.expect("MODE")
    m.expect("MODE")
    m.send("TOPIC #t :")
    assert m.expect("TOPIC")[-1] == f":{pfx('mem')} TOPIC #t :"
    m.send("TOPIC #t")
    assert m.expect("331")[-1] == ":chat.test 331 mem #t :No topic is set"


def test_names_and_prefix_caps(srv: RunningServer) -> None:
    op = srv.client("opx", "#n")
    v = srv.client()
    v.send("CAP REQ :multi-prefix userhost-in-names")
    v.recv_line()
    v.send("CAP END")
    v.register("vee")
    v.join("#n")
    op.expect("JOIN")
    op.send("MODE #n +ov opx vee")
    op.expect("MODE")
    v.expect("MODE")
    op.send("MODE #n +o vee")
    op.expect("MODE")
    op.send("NAMES #n")
    assert op.lines_until("366") == [":chat.test 353 opx = #n :@opx @vee",
                                     ":chat.test 366 opx #n :End of /NAMES list"]
    v.expect("MODE")
    v.send("NAMES #n,#missing")
    assert v.lines_until("366") == [f":chat.test 353 vee = #n :@{pfx('opx')} @+{pfx('vee')}",
                                    ":chat.test 366 vee #n,#missing :End of /NAMES list"]
    v.send("NAMES")
    assert v.recv_line() == ":chat.test 366 vee * :End of /NAMES list"


def test_names_splits_long_lists(srv: RunningServer) -> None:
    clients = [srv.client(f"member{i:02d}_{'x' * 15}", "#big") for i in range(40)]
    last = clients[-1]
    last.send("NAMES #big")
    lines = last.lines_until("366")
    assert len(lines) > 2
    names = " ".join(line.split(" :", 1)[1] for line in lines[:-1]).split()
    assert len(names) == 40
    assert all(len(line.encode()) + 2 <= 512 for line in lines)


def test_lusers_counts_are_exact(srv: RunningServer) -> None:
    a = srv.client("l1")
    b = srv.client("l2", "#room")
    srv.client()  # unregistered: "unknown", not a user
    b.send("QUIT")
    b.closed()
    # The unregistered connection counts once the server has accepted it (under load, the
    # accept can come after b's QUIT has been handled).
    assert srv.wait_for(lambda: len(srv.server.reg.nicks) == 1
                        and len(srv.server.reg.clients) == 2)
    a.send("LUSERS")
    assert a.lines_until("266") == [
        ":chat.test 251 l1 :There are 1 users and 0 invisible on 1 servers",
        ":chat.test 253 l1 1 :unknown connection(s)",
        ":chat.test 255 l1 :I have 1 clients and 0 servers",
        ":chat.test 265 l1 :Current local users 1, max 2",
        ":chat.test 266 l1 :Current global users 1, max 2",
    ]


def test_list(srv: RunningServer) -> None:
    a = srv.client("lister", "#one")
    a.send("TOPIC #one :first room")
    a.expect("TOPIC")
    a.send("LIST")
    assert a.lines_until("323") == [
        ":chat.test 321 lister Channel :Users  Name",
        ":chat.test 322 lister #one 1 :[+nt] first room",
        ":chat.test 323 lister :End of /LIST",
    ]


def test_who_and_whois(srv: RunningServer) -> None:
    a, b = srv.client("wa", "#w"), srv.client("wb", "#w")
    a.expect("JOIN")
    b.send("WHO #w")
    assert b.lines_until("315") == [
        ":chat.test 352 wb #w ~u 127.0.0.1 chat.test wa H@ :0 Real Name",
        ":chat.test 352 wb #w ~u 127.0.0.1 chat.test wb H :0 Real Name",
        ":chat.test 315 wb #w :End of WHO list",
    ]
    b.send("WHO wa")
    assert b.lines_until("315") == [
        ":chat.test 352 wb * ~u 127.0.0.1 chat.test wa H :0 Real Name",
        ":chat.test 315 wb wa :End of WHO list",
    ]
    b.send("WHO #empty")
    assert b.recv_line() == ":chat.test 315 wb #empty :End of WHO list"
    b.send("WHOIS wa")
    lines = b.lines_until("318")
    assert lines[:3] == [
        ":chat.test 311 wb wa ~u 127.0.0.1 * :Real Name",
        ":chat.test 312 wb wa chat.test TestNet",
        ":chat.test 319 wb wa @#w",
    ]
    assert lines[3].startswith(":chat.test 317 wb wa ")
    assert lines[4] == ":chat.test 318 wb wa :End of /WHOIS list"
    b.send("WHOIS nobody")
    assert b.lines_until("318") == [":chat.test 401 wb nobody :No such nick/channel",
                                    ":chat.test 318 wb nobody :End of /WHOIS list"]


def test_userhost_ison_away(srv: RunningServer) -> None:
    a, b = srv.client("ua"), srv.client("ub")
    a.send("USERHOST ub nobody ua")
    assert a.recv_line() == ":chat.test 302 ua :ub=+~u@127.0.0.1 ua=+~u@127.0.0.1"
    a.send("ISON ub nobody")
    assert a.recv_line() == ":chat.test 303 ua ub"
    b.send("AWAY :lunch")
    assert b.recv_line() == ":chat.test 306 ub :You have been marked as being away"
    a.send("PRIVMSG ub :there?")
    assert a.recv_line() == ":chat.test 301 ua ub lunch"
    b.send("AWAY")
    assert b.expect("305")[-1] == ":chat.test 305 ub :You are no longer marked as being away"


def test_mode_queries_and_errors(srv: RunningServer) -> None:
    op, m = srv.client("mo", "#m"), srv.client("mm", "#m")
    op.expect("JOIN")
    m.send("MODE #m")
    assert m.recv_line() == ":chat.test 324 mm #m +nt"
    assert m.recv_line().startswith(":chat.test 329 mm #m ")
    m.send("MODE #m b")
    assert m.recv_line() == ":chat.test 368 mm #m :End of channel ban list"
    m.send("MODE #m +i")
    assert m.recv_line() == ":chat.test 482 mm #m :You're not channel operator"
    op.send("MODE #m +z")
    assert op.recv_line() == ":chat.test 472 mo z :is unknown mode char to me"
    op.send("MODE #m +o ghost")
    assert op.recv_line() == ":chat.test 401 mo ghost :No such nick/channel"
    srv.client("stranger")
    op.send("MODE #m +o stranger")
    assert op.recv_line() == ":chat.test 441 mo stranger #m :They aren't on that channel"
    op.send("MODE #nope")
    assert op.recv_line() == ":chat.test 403 mo #nope :No such channel"
    op.send("MODE #m -nt+i")
    assert op.recv_line() == f":{pfx('mo')} MODE #m -nt+i"
    assert m.recv_line() == f":{pfx('mo')} MODE #m -nt+i"
    op.send("MODE #m +o mm")
    assert m.recv_line() == f":{pfx('mo')} MODE #m +o mm"
    m.send("MODE #m -o mo")
    assert m.recv_line() == f":{pfx('mm')} MODE #m -o mo"


def test_user_mode(srv: RunningServer) -> None:
    a = srv.client("um")
    srv.client("other")
    a.send("MODE um +i")
    assert a.recv_line() == f":{pfx('um')} MODE um +i"
    a.send("MODE um")
    assert a.recv_line() == ":chat.test 221 um +i"
    a.send("MODE other +i")
    assert a.recv_line() == ":chat.test 502 um :Cant change mode for other users"
    a.send("MODE ghost")
    assert a.recv_line() == ":chat.test 401 um ghost :No such nick/channel"
    a.send("MODE um +x")
    assert a.recv_line() == ":chat.test 501 um :Unknown MODE flag"


def test_kick(srv: RunningServer) -> None:
    op, v = srv.client("ko", "#k"), srv.client("kv", "#k")
    op.expect("JOIN")
    v.send("KICK #k ko")
    assert v.recv_line() == ":chat.test 482 kv #k :You're not channel operator"
    op.send("KICK #k kv :behave")
    assert op.recv_line() == f":{pfx('ko')} KICK #k kv :behave"
    assert v.recv_line() == f":{pfx('ko')} KICK #k kv :behave"
    v.send("PRIVMSG #k :still here?")
    assert v.recv_line() == ":chat.test 404 kv #k :Cannot send to channel"
    op.send("KICK #k kv")
    assert op.recv_line() == ":chat.test 441 ko kv #k :They aren't on that channel"
    op.send("KICK #k")
    assert op.recv_line() == ":chat.test 461 ko KICK :Not enough parameters"
    v.send("KICK #k ko")
    assert v.recv_line() == ":chat.test 442 kv #k :You're not on that channel"


def test_invite_only(srv: RunningServer) -> None:
    op, guest = srv.client("io", "#inv"), srv.client("guest")
    op.send("MODE #inv +i")
    op.expect("MODE")
    guest.send("JOIN #inv")
    assert guest.recv_line() == ":chat.test 473 guest #inv :Cannot join channel (+i)"
    op.send("INVITE guest #inv")
    assert op.recv_line() == ":chat.test 341 io guest #inv"
    assert guest.recv_line() == f":{pfx('io')} INVITE guest #inv"
    assert guest.join("#inv")[0] == f":{pfx('guest')} JOIN #inv"
    op.send("INVITE guest #inv")
    assert op.expect("443")[-1] == ":chat.test 443 io guest #inv :is already on channel"
    guest.send("INVITE io #other")
    assert guest.recv_line() == ":chat.test 403 guest #other :No such channel"


def test_nick_change_seen_once_by_each_roommate(srv: RunningServer) -> None:
    a = srv.client("old")
    a.send("JOIN #x,#y")
    a.lines_until("366")
    a.lines_until("366")
    b = srv.client("both")
    b.send("JOIN #x,#y")
    b.lines_until("366")
    b.lines_until("366")
    a.expect("JOIN")
    a.expect("JOIN")
    a.send("NICK new")
    assert a.recv_line() == f":{pfx('old')} NICK new"
    assert b.recv_line() == f":{pfx('old')} NICK new"
    b.no_line()
    a.send("NICK NEW")  # a change of case is allowed and announced
    assert a.recv_line() == f":{pfx('new')} NICK NEW"
    a.send("NICK both")
    assert a.recv_line() == ":chat.test 433 NEW both :Nickname is already in use"
    a.send("NICK :bad nick")
    assert a.recv_line() == ":chat.test 432 NEW bad :Erroneous nickname"
    a.send("NICK :")
    assert a.recv_line() == ":chat.test 431 NEW :No nickname given"
    c = srv.client()
    c.send("NICK old")  # the old nick is free again
    c.send("USER c 0 * :c")
    assert c.recv_line().startswith(":chat.test 001 old ")


def test_quit_seen_once_by_roommates(srv: RunningServer) -> None:
    a = srv.client("qa")
    a.send("JOIN #x,#y")
    a.lines_until("366")
    a.lines_until("366")
    b = srv.client("qb")
    b.send("JOIN #x,#y")
    b.lines_until("366")
    a.send("QUIT :gone fishing")
    assert a.expect("ERROR")[-1] == "ERROR :Closing Link: 127.0.0.1 (Quit: gone fishing)"
    assert a.closed()
    assert b.expect("QUIT")[-1] == f":{pfx('qa')} QUIT :Quit: gone fishing"
    b.no_line()


def test_ping_pong_unknown_and_misc(srv: RunningServer) -> None:
    a = srv.client("misc")
    a.send("PING")
    assert a.recv_line() == ":chat.test 461 misc PING :Not enough parameters"
    a.send("PING :hello there")
    assert a.recv_line() == ":chat.test PONG chat.test :hello there"
    a.send("PONG :x")
    a.send("SUMMON :hi")  # (WALLOPS, the old example, is an operator command now)
    assert a.recv_line() == ":chat.test 421 misc SUMMON :Unknown command"
    a.send("VERSION")
    assert a.recv_line().startswith(":chat.test 351 misc ")
    a.send("TIME")
    assert a.expect("391")[-1].startswith(":chat.test 391 misc chat.test :")
    a.send("MOTD")
    assert a.recv_line() == ":chat.test 422 misc :MOTD File is missing"


def test_server_pings_idle_clients_and_drops_silent_ones(make_server) -> None:
    s = make_server(ping_interval=0.3, ping_timeout=0.3)
    alive = s.client("alive", "#r")
    dead = s.client("dead", "#r")
    alive.expect("JOIN")
    assert alive.expect("PING")[-1] == "PING chat.test"
    alive.send("PONG chat.test")
    assert dead.expect("PING")[-1] == "PING chat.test"
    # dead never answers
    assert alive.expect("QUIT")[-1].startswith(f":{pfx('dead')} QUIT :Ping timeout")
    assert dead.expect("ERROR")[-1].startswith("ERROR :Closing Link: 127.0.0.1 (Ping timeout")
    assert dead.closed()
