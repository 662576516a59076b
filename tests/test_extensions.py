"""The IRC extensions clients ask for (issue 14), against a real server: MONITOR with
extended-monitor, away-notify and AWAY's edge cases, setname, bot mode, and WHOX (with WHO
of an invisible user)."""

from __future__ import annotations

from conftest import LineClient, RunningServer
from test_ircv3 import body, capped, command_of, full, join, sync

from chatroom import protocol as P

H = "127.0.0.1"
PW = "s3cret-pa55"


def pfx(nick: str) -> str:
    return f"{nick}!~u@{H}"


def reply(line: str) -> tuple[str, ...]:
    """A numeric's parameters after our own nick."""
    return P.parse(line).params[1:]


def monitor_lines(c: LineClient, end: str = "733") -> list[str]:
    """Every line through ``end`` (733, or the PONG of a sync for commands without one)."""
    if end == "733":
        return c.lines_until("733")
    c.send("PING :mon")
    return c.expect("PONG")[:-1]


# --- ISUPPORT, 004 ---------------------------------------------------------------------


def test_isupport_and_myinfo_announce_the_extensions(srv: RunningServer) -> None:
    c = srv.client()
    lines = c.register("sup")
    tokens = {t for line in lines if command_of(line) == "005"
              for t in P.parse(line).params[1:-1]}
    assert {"BOT=B", "MONITOR=100", "NAMELEN=100", "WHOX"} <= tokens
    myinfo = next(line for line in lines if command_of(line) == "004")
    assert "B" in reply(myinfo)[2]


# --- MONITOR --------------------------------------------------------------------------


def test_monitor_tells_of_nicks_coming_and_going(srv: RunningServer) -> None:
    w = srv.client("watcher")
    srv.client("here")
    w.send("MONITOR + here,gone")
    assert w.recv_line() == f":chat.test 730 watcher {pfx('here')}"
    assert w.recv_line() == ":chat.test 731 watcher gone"
    g = srv.client("gone")
    assert w.recv_line() == f":chat.test 730 watcher {pfx('gone')}"
    g.send("NICK GONE")  # a change of case: still the same nick, nothing to tell
    g.expect("NICK")
    w.no_line()
    g.send("NICK elsewhere")
    assert w.recv_line() == ":chat.test 731 watcher GONE"
    w.send("MONITOR + elsewhere")
    assert w.recv_line() == f":chat.test 730 watcher {pfx('elsewhere')}"
    g.send("NICK here2")
    assert w.recv_line() == ":chat.test 731 watcher elsewhere"
    g.send("QUIT")
    assert g.closed()
    w.no_line()  # here2 was never watched
    h = srv.client()
    h.send("NICK elsewhere")
    h.send("USER u 0 * :R")
    assert w.recv_line() == f":chat.test 730 watcher {pfx('elsewhere')}"
    h.send("QUIT :bye")
    assert w.recv_line() == ":chat.test 731 watcher elsewhere"


def test_monitor_list_status_remove_and_clear(srv: RunningServer) -> None:
    w = srv.client("lister")
    srv.client("bee")
    w.send("MONITOR + Ay,bee,cee")
    assert monitor_lines(w, "pong") == [f":chat.test 730 lister {pfx('bee')}",
                                        ":chat.test 731 lister Ay,cee"]
    w.send("MONITOR L")
    first, end = w.lines_until("733")
    assert sorted(reply(first)[0].split(",")) == ["Ay", "bee", "cee"]
    assert end == ":chat.test 733 lister :End of MONITOR list"
    w.send("MONITOR - ay,nobody")  # removal is case-insensitive, silent, and forgiving
    assert monitor_lines(w, "pong") == []
    w.send("MONITOR S")
    assert monitor_lines(w, "pong") == [f":chat.test 730 lister {pfx('bee')}",
                                        ":chat.test 731 lister cee"]
    w.send("MONITOR C")
    assert monitor_lines(w, "pong") == []
    w.send("MONITOR L")
    assert w.recv_line() == ":chat.test 733 lister :End of MONITOR list"
    w.send("MONITOR S")
    assert monitor_lines(w, "pong") == []


def test_monitor_bad_input(srv: RunningServer) -> None:
    w = srv.client("picky")
    w.send("MONITOR + #room,bad!mask,ok,OK,,9lives,ok")  # only nicks, each once
    assert monitor_lines(w, "pong") == [":chat.test 731 picky ok,OK,ok"]
    w.send("MONITOR L")
    assert w.lines_until("733") == [":chat.test 732 picky ok",
                                    ":chat.test 733 picky :End of MONITOR list"]
    w.send("MONITOR")
    assert w.recv_line() == ":chat.test 461 picky MONITOR :Not enough parameters"
    w.send("MONITOR +")
    assert w.recv_line() == ":chat.test 461 picky MONITOR :Not enough parameters"
    w.send("MONITOR - ,")
    assert w.recv_line() == ":chat.test 461 picky MONITOR :Not enough parameters"
    w.send("MONITOR X y")
    assert w.recv_line() == ":chat.test 400 picky MONITOR X :Unknown MONITOR modifier"


def test_monitor_list_is_full_at_its_limit(srv: RunningServer) -> None:
    w = srv.client("hoarder")
    for start in (0, 50):
        w.send("MONITOR + " + ",".join(f"n{i}" for i in range(start, start + 50)))
        w.lines_until("731")
    w.send("MONITOR + n0,n99,n100,n101")  # n0 and n99: already there, so they still fit
    assert monitor_lines(w, "pong") == [
        ":chat.test 731 hoarder n0,n99",
        ":chat.test 734 hoarder 100 n100,n101 :Monitor list is full."]
    w.send("MONITOR - n5")
    w.send("MONITOR + n100,n101")
    assert monitor_lines(w, "pong") == [
        ":chat.test 731 hoarder n100",
        ":chat.test 734 hoarder 100 n101 :Monitor list is full."]
    w.send("MONITOR L")
    lines = w.lines_until("733")
    listed = [n for line in lines[:-1] for n in reply(line)[0].split(",")]
    assert len(listed) == 100 and "n100" in listed and "n5" not in listed
    assert all(len(line.encode()) <= 510 for line in lines)


def test_monitor_lists_are_forgotten_with_the_connection(srv: RunningServer) -> None:
    w = srv.client("brief")
    w.send("MONITOR + someone,other")
    w.expect("731")
    assert srv.server.reg.watchers
    w.send("QUIT")
    assert w.closed()
    assert srv.wait_for(lambda: not srv.server.reg.watchers)
    srv.client("someone")  # nobody left to tell, nothing breaks


# --- away-notify and AWAY ----------------------------------------------------------------


def test_away_notify_reaches_room_mates_with_the_cap(srv: RunningServer) -> None:
    n = capped(srv, "noticer", "away-notify", room="#aw")
    plain = srv.client("plainly", "#aw")
    away = srv.client("leaver", "#aw")
    sync(n, plain)
    away.send("AWAY :gone fishing")
    assert away.recv_line() == ":chat.test 306 leaver :You have been marked as being away"
    assert n.recv_line() == f":{pfx('leaver')} AWAY :gone fishing"
    away.send("AWAY :gone fishing")  # nothing changed: nothing to tell
    away.expect("306")
    away.send("AWAY :back soon")
    away.expect("306")
    assert n.recv_line() == f":{pfx('leaver')} AWAY :back soon"
    away.send("AWAY")
    assert away.recv_line() == ":chat.test 305 leaver :You are no longer marked as being away"
    assert n.recv_line() == f":{pfx('leaver')} AWAY"
    away.send("AWAY")  # not away: still 305, and no AWAY
    away.expect("305")
    n.no_line()
    plain.no_line()
    away.no_line()  # never its own AWAY, even with the cap
    self_aware = capped(srv, "selfish", "away-notify", room="#aw")
    self_aware.send("AWAY :me")
    self_aware.expect("306")
    self_aware.no_line()
    assert n.expect("AWAY")[-1] == f":{pfx('selfish')} AWAY :me"


def test_away_user_joining_is_announced_after_its_join(srv: RunningServer) -> None:
    n = capped(srv, "greeter", "away-notify extended-join", room="#door")
    plain = srv.client("plainer", "#door")
    sync(n)
    late = srv.client("sleepy")
    late.send("AWAY :zzz")
    late.expect("306")
    n.no_line()  # no room in common yet
    late.join("#door")
    assert n.recv_line() == f":{pfx('sleepy')} JOIN #door * :Real Name"
    assert n.recv_line() == f":{pfx('sleepy')} AWAY :zzz"
    assert plain.expect("JOIN")[-1] == f":{pfx('sleepy')} JOIN #door"
    plain.no_line()
    awake = srv.client("awake", "#door")
    assert n.recv_line() == f":{pfx('awake')} JOIN #door * :Real Name"
    n.no_line()  # not away: no AWAY
    assert awake


def test_away_edge_cases(srv: RunningServer) -> None:
    a, q = srv.client("edgy"), srv.client("asker")
    a.send("AWAY :")
    assert a.recv_line() == ":chat.test 305 edgy :You are no longer marked as being away"
    a.send("AWAY :   ")  # blank is empty
    a.expect("305")
    q.send("WHOIS edgy")
    assert not [x for x in q.lines_until("318") if command_of(x) == "301"]
    a.send("AWAY :" + "é" * 150)  # 300 bytes: cut to AWAYLEN (200) on a character boundary
    a.expect("306")
    q.send("WHOIS edgy")
    away = next(x for x in q.lines_until("318") if command_of(x) == "301")
    assert reply(away) == ("edgy", "é" * 100)
    q.send("WHO edgy")
    assert reply(q.lines_until("315")[0])[5] == "G"
    q.send("PRIVMSG edgy :hi")
    assert q.recv_line() == ":chat.test 301 asker edgy " + "é" * 100


# --- extended-monitor --------------------------------------------------------------------


def test_extended_monitor_sends_changes_of_watched_nicks(srv: RunningServer) -> None:
    w = capped(srv, "fan", "extended-monitor away-notify setname account-notify")
    half = capped(srv, "halffan", "away-notify setname")  # no extended-monitor
    star = srv.client("star")
    for c in (w, half):
        c.send("MONITOR + star")
        c.expect("730")
    star.send("AWAY :on stage")
    star.expect("306")
    assert w.recv_line() == f":{pfx('star')} AWAY :on stage"
    star.send("SETNAME :Star Person")
    assert w.recv_line() == f":{pfx('star')} SETNAME :Star Person"
    star.send(f"REGISTER * * :{PW}")
    star.expect("REGISTER SUCCESS")
    assert w.recv_line() == f":{pfx('star')} ACCOUNT star"
    half.no_line()
    # Sharing a room and watching: one copy, not two.
    join(w, "#stage")
    star.join("#stage")
    w.expect("JOIN")
    assert w.recv_line() == f":{pfx('star')} AWAY :on stage"  # away-notify on join
    star.send("AWAY")
    star.expect("305")
    assert w.recv_line() == f":{pfx('star')} AWAY"
    w.no_line()


# --- SETNAME ----------------------------------------------------------------------------


def test_setname_relayed_to_those_with_the_cap(srv: RunningServer) -> None:
    me = capped(srv, "renamer", "setname", room="#sn")
    mate = capped(srv, "mate", "setname", room="#sn")
    plain = srv.client("oldfashioned", "#sn")
    sync(me, mate)
    me.send("SETNAME :Bruce Wayne <bruce@wayne.enterprises>")
    line = f":{pfx('renamer')} SETNAME :Bruce Wayne <bruce@wayne.enterprises>"
    assert me.recv_line() == line
    assert mate.recv_line() == line
    plain.no_line()
    plain.send("WHOIS renamer")
    assert plain.recv_line() == (f":chat.test 311 oldfashioned renamer ~u {H} * "
                                 ":Bruce Wayne <bruce@wayne.enterprises>")
    plain.lines_until("318")
    plain.send("WHO renamer")
    assert plain.recv_line().endswith(" H :0 Bruce Wayne <bruce@wayne.enterprises>")
    plain.lines_until("315")
    plain.send("SETNAME Simple")  # without the cap: silent, but done
    plain.no_line()
    assert mate.recv_line() == f":{pfx('oldfashioned')} SETNAME :Simple"
    assert me.recv_line() == f":{pfx('oldfashioned')} SETNAME :Simple"
    me.send("WHO oldfashioned")
    assert me.recv_line().endswith(" :0 Simple")


def test_setname_bad_input(srv: RunningServer) -> None:
    me = capped(srv, "fussy", "setname")
    fail = "FAIL SETNAME INVALID_REALNAME :Realname is not valid"
    for bad in ("SETNAME :", "SETNAME :   ", "SETNAME :" + "x" * 101, "SETNAME :a\x01b",
                "SETNAME :" + "é" * 51):
        me.send(bad)
        assert body(me.recv_line()) == ":chat.test " + fail, bad
    me.send("SETNAME")
    assert me.recv_line() == ":chat.test 461 fussy SETNAME :Not enough parameters"
    me.send("WHOIS fussy")
    assert me.recv_line().endswith(" * :Real Name")  # unchanged by all that
    me.lines_until("318")
    me.send("SETNAME :" + "x" * 100)  # exactly NAMELEN bytes is fine
    assert me.recv_line() == f":{pfx('fussy')} SETNAME :" + "x" * 100
    me.send("SETNAME :\x02bold\x02 name")  # formatting codes are allowed
    assert me.recv_line() == f":{pfx('fussy')} SETNAME :\x02bold\x02 name"


# --- bot mode ---------------------------------------------------------------------------


def test_bot_mode_in_whois_who_and_tag(srv: RunningServer) -> None:
    bot = srv.client("robo", "#bots")
    tagged = capped(srv, "tagged", "message-tags", room="#bots")
    plain = srv.client("human", "#bots")
    sync(bot)
    bot.send("MODE robo +B")
    assert bot.recv_line() == f":{pfx('robo')} MODE robo +B"
    bot.send("MODE robo")
    assert bot.recv_line() == ":chat.test 221 robo +B"
    plain.send("WHOIS robo")
    whois = plain.lines_until("318")
    assert ":chat.test 335 human robo :is a bot on TestNet" in whois
    assert [command_of(x) for x in whois] == ["311", "312", "319", "335", "317", "318"]
    plain.send("WHO #bots")
    who = plain.lines_until("315")
    assert [reply(x)[5] for x in who[:-1]] == ["HB@", "H", "H"]
    plain.send("WHO robo")
    assert reply(plain.lines_until("315")[0])[5] == "HB"
    sync(tagged, plain)
    bot.send("PRIVMSG #bots :beep")
    _, _, rest, text = full(tagged.recv_line())
    assert (rest, text) == (";bot", f":{pfx('robo')} PRIVMSG #bots :beep")
    assert plain.recv_line() == f":{pfx('robo')} PRIVMSG #bots :beep"
    bot.send("@+draft/react=x TAGMSG #bots")
    _, _, rest, text = full(tagged.recv_line())
    assert rest == ";+draft/react=x;bot" and text == f":{pfx('robo')} TAGMSG #bots"
    bot.send("NOTICE tagged :private beep")
    _, _, rest, _ = full(tagged.recv_line())
    assert rest == ";bot"
    plain.send("PRIVMSG #bots :not a bot")  # people's messages carry no bot tag
    _, _, rest, _ = full(tagged.recv_line())
    assert rest == ""
    tagged.send("@bot PRIVMSG #bots :forged")  # the tag is the server's to give
    assert plain.expect("forged")[-1] == f":{pfx('tagged')} PRIVMSG #bots :forged"
    bot.send("MODE robo -B")
    bot.expect("MODE robo -B")
    plain.send("WHOIS robo")
    assert not [x for x in plain.lines_until("318") if command_of(x) == "335"]
    bot.send("PRIVMSG #bots :human now")
    _, _, rest, _ = full(tagged.expect("human now")[-1])
    assert rest == ""


# --- WHOX and WHO ------------------------------------------------------------------------


def test_whox_every_field_and_the_token(srv: RunningServer) -> None:
    acct = srv.client("acct", "#wx")
    acct.send(f"REGISTER * * :{PW}")
    acct.expect("REGISTER SUCCESS")
    acct.send("MODE acct +B")
    acct.expect("MODE")
    guest = srv.client("guest", "#wx")
    guest.send("AWAY :out")
    guest.expect("306")
    guest.send("WHO #wx %tcuihsnfdlaor,42")
    lines = guest.lines_until("315")
    assert lines[-1] == ":chat.test 315 guest #wx :End of WHO list"
    rows = [reply(x) for x in lines[:-1]]
    assert all(command_of(x) == "354" for x in lines[:-1])
    idle = [r[9] for r in rows]
    assert all(i.isdigit() for i in idle)
    assert [r[:9] + r[10:] for r in rows] == [
        ("42", "#wx", "~u", H, H, "chat.test", "acct", "HB@", "0", "acct", "n/a", "Real Name"),
        ("42", "#wx", "~u", H, H, "chat.test", "guest", "G", "0", "0", "n/a", "Real Name"),
    ]
    # Each field alone gives exactly that field; a nick's query names one of its rooms.
    expected = {"c": "#wx", "u": "~u", "i": H, "h": H, "s": "chat.test", "n": "acct",
                "f": "HB", "d": "0", "a": "acct", "o": "n/a", "r": "Real Name"}
    for field, value in expected.items():
        guest.send(f"WHO acct %{field}")
        row, end = guest.lines_until("315")
        assert reply(row) == (value,), field
        assert end == ":chat.test 315 guest acct :End of WHO list"
    guest.send("WHO acct %l")
    assert reply(guest.lines_until("315")[0])[0].isdigit()


def test_whox_order_tokens_and_bad_fields(srv: RunningServer) -> None:
    srv.client("target", "#ord")
    q = srv.client("querier")
    cases = {
        "%rna": ("target", "0", "Real Name"),  # the spec's order, whatever the request's
        "%zqnXY": ("target",),  # unknown letters are ignored
        "%t,7": ("7",),
        "%t,007": ("007",),
        "%t": ("0",),  # no token: t still gets a placeholder
        "%t,1234": ("0",),  # at most three digits
        "%tn,ab": ("0", "target"),  # digits only
        "%c": ("#ord",),  # one of the target's rooms
        "o%n": (),  # flags before '%': "o" (operators only) still applies
    }
    for request, want in cases.items():
        q.send(f"WHO target {request}")
        lines = q.lines_until("315")
        if request.startswith("o"):
            assert lines == [":chat.test 315 querier target :End of WHO list"]
            continue
        assert [reply(x) for x in lines[:-1]] == [want], request
    q.send("WHO target %")
    assert q.lines_until("315") == [":chat.test 354 querier",
                                    ":chat.test 315 querier target :End of WHO list"]
    q.send("WHO targ* %n")
    assert [reply(x) for x in q.lines_until("315")] == [("target",),
                                                        ("targ*", "End of WHO list")]
    hidden = srv.client("hidden", "#secret")
    hidden.send("MODE #secret +s")
    hidden.expect("MODE #secret +s")
    q.send("WHO hidden %cn")  # a secret room is never named to an outsider
    assert reply(q.lines_until("315")[0]) == ("*", "hidden")
    q.send("WHO target")  # plain WHO is as it was
    assert q.lines_until("315")[0] == ":chat.test 352 querier * ~u 127.0.0.1 chat.test " \
                                      "target H :0 Real Name"


def test_who_of_an_invisible_user(srv: RunningServer) -> None:
    inv = srv.client("ghost", "#haunt")
    inv.send("MODE ghost +i")
    inv.expect("MODE ghost +i")
    out = srv.client("outsider")
    out.send("WHO gh*")
    assert out.lines_until("315") == [":chat.test 315 outsider gh* :End of WHO list"]
    out.send("WHO *")
    assert not [x for x in out.lines_until("315") if " ghost " in x]
    out.send("WHO #haunt")
    assert out.lines_until("315") == [":chat.test 315 outsider #haunt :End of WHO list"]
    out.send("WHO ghost")  # asked by name: there is no hiding
    assert out.lines_until("315")[0].startswith(":chat.test 352 outsider * ~u ")
    inv.send("WHO gh*")  # itself
    assert len(inv.lines_until("315")) == 2
    out.join("#haunt")
    out.send("WHO gh* %n")
    assert [reply(x) for x in out.lines_until("315")][0] == ("ghost",)
    out.send("WHO #haunt %n")
    assert [reply(x) for x in out.lines_until("315")[:-1]] == [("ghost",), ("outsider",)]
