"""Server operators against a real server: OPER and its refusals, +o in WHOIS and WHO,
KILL, WALLOPS, server bans (KLINE/UNKLINE/STATS K: by address and by account, at
registration and on the spot, expiry, a restart), operators acting as room operators,
INFO/HELP/ADMIN, the admin command line's ``oper``/``deoper``, and the audit log."""

from __future__ import annotations

import base64
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, LineClient, RunningServer
from test_client_accounts import make_account as register_account

from chatroom.moderation import Moderation, ServerBan, ban_mask

PW = "s3cret-pa55"
ServerFactory = Callable[..., RunningServer]


def make_account(srv: RunningServer, name: str, password: str = PW) -> None:
    """An account made over the wire (REGISTER), with this file's password by default."""
    register_account(srv, name, password)


def opered(srv: RunningServer, nick: str, account: str = "boss",
           password: str = PW) -> LineClient:
    c = srv.client(nick)
    c.send(f"OPER {account} {password}")
    assert c.lines_until("381")[-1] == f":chat.test 381 {nick} :You are now an IRC operator"
    assert c.recv_line() == f":{nick}!~u@127.0.0.1 MODE {nick} +o"
    return c


def sasl_client(srv: RunningServer, nick: str, password: str = PW) -> LineClient:
    """Logged in to account ``nick`` with SASL PLAIN, registration not yet finished."""
    c = srv.client()
    c.send("CAP REQ :sasl")
    c.expect("ACK")
    c.send(f"NICK {nick}")
    c.send(f"USER {nick} 0 * :{nick}")
    c.send("AUTHENTICATE PLAIN")
    c.expect("AUTHENTICATE +")
    c.send("AUTHENTICATE " + base64.b64encode(f"\0{nick}\0{password}".encode()).decode())
    c.lines_until("903")
    return c


def welcomed(srv: RunningServer, user: str) -> bool:
    """Can a new connection with user name ``user`` register?  (It is closed after.)"""
    c = srv.client()
    c.send(f"NICK n{user}")
    c.send(f"USER {user} 0 * :x")
    first = c.expect(lambda s: " 001 " in s or " 465 " in s)[-1]
    if " 465 " in first:
        assert c.recv_line().startswith("ERROR :Closing Link: 127.0.0.1 (K-Lined (")
        assert c.closed()
        return False
    c.send("QUIT")
    return True


@pytest.fixture
def osrv(make_server: ServerFactory) -> RunningServer:
    s = make_server(opers=("boss",))
    make_account(s, "boss")
    return s


# --- OPER ----------------------------------------------------------------------------------


def test_oper_gives_plus_o_seen_in_whois_and_who(osrv: RunningServer) -> None:
    boss = opered(osrv, "chief")
    boss.send("MODE chief")
    assert boss.recv_line() == ":chat.test 221 chief +o"
    other = osrv.client("other")
    other.send("WHOIS chief")
    lines = other.lines_until("318")
    assert ":chat.test 313 other chief :is an IRC operator" in lines
    other.send("WHO chief")
    assert other.lines_until("315")[0] == ":chat.test 352 other * ~u 127.0.0.1 chat.test chief H* :0 Real Name"
    other.send("WHOIS other")
    assert not any(" 313 " in line for line in other.lines_until("318"))
    # WHO ... o lists operators only.
    other.send("WHO * o")
    lines = other.lines_until("315")
    assert [line.split()[7] for line in lines[:-1]] == ["chief"]
    # +o can be dropped, never taken with MODE.
    other.send("MODE other +o")
    other.no_line()
    boss.send("MODE chief -o")
    assert boss.recv_line() == ":chief!~u@127.0.0.1 MODE chief -o"
    other.send("WHO chief")
    assert " H :0 " in other.lines_until("315")[0]


def test_oper_refusals(osrv: RunningServer) -> None:
    make_account(osrv, "pleb")
    c = osrv.client("tryer")
    c.send("OPER boss")
    assert c.recv_line() == ":chat.test 461 tryer OPER :Not enough parameters"
    c.send(f"OPER pleb {PW}")  # a real account, but no operator's
    assert c.recv_line() == ":chat.test 491 tryer :No O-lines for your host"
    c.send(f"OPER nobody {PW}")
    assert c.recv_line() == ":chat.test 491 tryer :No O-lines for your host"
    c.send("OPER boss wrong-password")
    assert c.recv_line() == ":chat.test 464 tryer :Password incorrect"
    c.send("MODE tryer")
    assert c.recv_line() == ":chat.test 221 tryer +"


def test_oper_is_throttled_like_a_login(make_server: ServerFactory) -> None:
    s = make_server(opers=("boss",), login_free=0)
    make_account(s, "boss")
    c = s.client("tryer")
    c.send("OPER boss wrong")
    assert c.recv_line() == ":chat.test 464 tryer :Password incorrect"
    c.send(f"OPER boss {PW}")  # right, but too soon after a failure
    line = c.recv_line()
    assert line.startswith(":chat.test 464 tryer :Password incorrect: too many failed "
                           "attempts, try again in ")
    c.send("MODE tryer")
    assert c.recv_line() == ":chat.test 221 tryer +"


# --- KILL and WALLOPS --------------------------------------------------------------------------


def test_kill_refusals(osrv: RunningServer) -> None:
    c = osrv.client("pleb")
    osrv.client("victim")
    c.send("KILL victim :go")
    assert c.recv_line() == ":chat.test 481 pleb :Permission Denied- You're not an IRC operator"
    boss = opered(osrv, "chief")
    boss.send("KILL nobody :go")
    assert boss.recv_line() == ":chat.test 401 chief nobody :No such nick/channel"
    boss.send("KILL victim")
    assert boss.recv_line() == ":chat.test 461 chief KILL :Not enough parameters"


def test_kill_is_seen_by_room_mates_with_who_and_why(osrv: RunningServer) -> None:
    victim = osrv.client("victim", "#room")
    mate = osrv.client("mate", "#room")
    victim.expect("JOIN")
    boss = opered(osrv, "chief")  # not in the room
    boss.send("KILL victim :spamming links")
    assert victim.recv_line() == ":chief!~u@127.0.0.1 KILL victim :spamming links"
    assert victim.recv_line() == (
        "ERROR :Closing Link: 127.0.0.1 (Killed (chief (spamming links)))")
    assert victim.closed()
    assert mate.recv_line() == ":victim!~u@127.0.0.1 QUIT :Killed (chief (spamming links))"
    boss.no_line()


def test_kill_yourself(osrv: RunningServer) -> None:
    boss = opered(osrv, "chief")
    mate = osrv.client("mate", "#room")
    boss.join("#room")
    mate.expect("JOIN")
    boss.send("KILL chief :enough")
    assert boss.recv_line() == ":chief!~u@127.0.0.1 KILL chief :enough"
    assert boss.recv_line() == "ERROR :Closing Link: 127.0.0.1 (Killed (chief (enough)))"
    assert boss.closed()
    assert mate.recv_line() == ":chief!~u@127.0.0.1 QUIT :Killed (chief (enough))"


def test_wallops(osrv: RunningServer) -> None:
    pleb = osrv.client("pleb")
    pleb.send("WALLOPS :hello")
    assert pleb.recv_line() == ":chat.test 481 pleb :Permission Denied- You're not an IRC operator"
    listener = osrv.client("listener")
    listener.send("MODE listener +w")
    assert listener.recv_line() == ":listener!~u@127.0.0.1 MODE listener +w"
    boss = opered(osrv, "chief")
    boss.send("WALLOPS :server restarts at noon")
    wall = ":chief!~u@127.0.0.1 WALLOPS :server restarts at noon"
    assert listener.recv_line() == wall
    assert boss.recv_line() == wall  # operators get it too
    pleb.no_line()  # no +w: nothing
    listener.send("MODE listener -w")
    assert listener.recv_line() == ":listener!~u@127.0.0.1 MODE listener -w"
    boss.send("WALLOPS :again")
    boss.recv_line()
    listener.no_line()


# --- operators act as room operators ---------------------------------------------------------


def test_oper_overrides_room_modes_kicks_and_topics(osrv: RunningServer,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    owner = osrv.client("owner", "#room")
    member = osrv.client("member", "#room")
    owner.expect("JOIN")
    boss = opered(osrv, "chief")
    boss.send("MODE #room +m")  # not even in the room
    assert owner.recv_line() == ":chief!~u@127.0.0.1 MODE #room +m"
    assert member.recv_line() == ":chief!~u@127.0.0.1 MODE #room +m"
    boss.join("#room")
    owner.expect("JOIN")
    boss.send("MODE #room +o member")  # in the room, not its operator
    assert owner.recv_line() == ":chief!~u@127.0.0.1 MODE #room +o member"
    boss.send("TOPIC #room :set by an operator")
    assert owner.expect("TOPIC")[-1] == ":chief!~u@127.0.0.1 TOPIC #room :set by an operator"
    boss.send("KICK #room owner :bye")
    assert owner.expect("KICK")[-1] == ":chief!~u@127.0.0.1 KICK #room owner :bye"
    # A plain member still can't.
    plain = osrv.client("plain", "#room")
    plain.send("MODE #room -m")
    assert plain.recv_line() == ":chat.test 482 plain #room :You're not channel operator"
    audit = [r.getMessage() for r in caplog.records if "oper override" in r.getMessage()]
    assert audit == ["oper override: chief!~u@127.0.0.1 set MODE +m in #room",
                     "oper override: chief!~u@127.0.0.1 set MODE +o member in #room",
                     "oper override: chief!~u@127.0.0.1 set the topic in #room",
                     "oper override: chief!~u@127.0.0.1 kicked owner (bye) in #room"]


# --- server bans ---------------------------------------------------------------------------


def test_ban_by_address_refuses_and_disconnects_and_lifts(osrv: RunningServer) -> None:
    victim = osrv.client()
    victim.send("NICK victim")
    victim.send("USER spammer 0 * :x")
    victim.lines_until("001")
    victim.send("JOIN #room")
    victim.lines_until("366")
    mate = osrv.client("mate", "#room")
    pleb = osrv.client("pleb")
    pleb.send("KLINE ~spammer@127.0.0.1 :no")
    assert " 481 " in pleb.recv_line()
    boss = opered(osrv, "chief")
    boss.send("KLINE 127.0.0.1 :everyone here")  # would ban the operator too
    assert boss.recv_line() == ":chat.test NOTICE chief :Not banning *@127.0.0.1: it matches you"
    boss.send("KLINE bad!mask :x")
    assert "Invalid ban mask" in boss.recv_line()
    boss.send("KLINE 1h ~spammer@127.0.0.* :spam, spam and spam")
    assert boss.recv_line() == (":chat.test NOTICE chief :Added server ban ~spammer@127.0.0.* "
                                "for 3600 s (spam, spam and spam); disconnected 1")
    assert victim.expect(" 465 ")[-1] == (
        ":chat.test 465 victim :You are banned from this server: spam, spam and spam")
    assert victim.recv_line() == "ERROR :Closing Link: 127.0.0.1 (K-Lined (spam, spam and spam))"
    assert victim.closed()
    assert mate.expect("QUIT")[-1] == ":victim!~spammer@127.0.0.1 QUIT :K-Lined (spam, spam and spam)"
    assert not welcomed(osrv, "spammer")
    assert welcomed(osrv, "decent")
    boss.send("STATS K")
    lines = boss.lines_until("219")
    assert len(lines) == 2 and lines[0].startswith(
        ":chat.test 216 chief K 127.0.0.* * ~spammer :spam, spam and spam (by chief, until ")
    assert lines[1] == ":chat.test 219 chief K :End of /STATS report"
    pleb.send("STATS K")
    assert " 481 " in pleb.recv_line()
    boss.send("UNKLINE ~SPAMMER@127.0.0.*")
    assert boss.recv_line() == ":chat.test NOTICE chief :Removed server ban ~spammer@127.0.0.*"
    boss.send("UNKLINE ~spammer@127.0.0.*")
    assert boss.recv_line() == ":chat.test NOTICE chief :No server ban on ~spammer@127.0.0.*"
    assert welcomed(osrv, "spammer")


def test_ban_by_account_at_login_and_on_the_spot(osrv: RunningServer) -> None:
    make_account(osrv, "troll")
    make_account(osrv, "fine")
    troll = sasl_client(osrv, "troll")
    troll.send("CAP END")
    troll.lines_until("001")
    boss = opered(osrv, "chief")
    boss.send("KLINE $a:TROLL :trolling")
    assert "Added server ban $a:troll permanently (trolling); disconnected 1" in boss.recv_line()
    assert " 465 " in troll.expect(" 465 ")[-1]
    assert troll.recv_line() == "ERROR :Closing Link: 127.0.0.1 (K-Lined (trolling))"
    assert troll.closed()
    again = sasl_client(osrv, "troll")  # the login works; the registration does not
    again.send("CAP END")
    assert again.recv_line() == ":chat.test 465 troll :You are banned from this server: trolling"
    assert again.recv_line().startswith("ERROR ")
    assert again.closed()
    fine = sasl_client(osrv, "fine")
    fine.send("CAP END")
    fine.lines_until("001")
    # Registered first, logging in to the banned account afterwards: cut at once.
    late = osrv.client("latecomer")
    late.send("CAP REQ :sasl")
    late.expect("ACK")
    late.send("AUTHENTICATE PLAIN")
    late.expect("AUTHENTICATE +")
    late.send("AUTHENTICATE " + base64.b64encode(f"\0troll\0{PW}".encode()).decode())
    assert " 465 " in late.expect(" 465 ")[-1]
    assert late.closed()


def test_bans_expire(osrv: RunningServer) -> None:
    boss = opered(osrv, "chief")
    boss.send("KLINE 1s ~brief@127.0.0.1 :a moment")
    assert "for 1 s (a moment)" in boss.recv_line()
    assert not welcomed(osrv, "brief")
    store = osrv.server.hub.moderation
    assert store is not None
    (ban,) = store.bans()
    time.sleep(max(0.0, ban.expires - time.time()) + 0.05)  # a clock, not a race
    assert store.bans() == []
    assert welcomed(osrv, "brief")
    boss.send("STATS K")
    assert boss.recv_line() == ":chat.test 219 chief K :End of /STATS report"


def test_bans_and_admin_opers_persist_across_a_restart(make_server: ServerFactory,
                                                       tmp_path: Path) -> None:
    data = str(tmp_path)
    s = make_server(data_dir=data)  # no --oper: the data directory says who is one
    make_account(s, "boss")
    c = s.client("chief")
    c.send(f"OPER boss {PW}")
    assert " 491 " in c.recv_line()
    assert admin("oper", "boss", data_dir=data).stdout == (
        "boss may now become a server operator (OPER)\n")
    c.send(f"OPER boss {PW}")
    assert " 381 " in c.recv_line()
    c.send("KLINE ~gone@127.0.0.1 :for good")
    c.expect("NOTICE")
    s.stop()
    s2 = make_server(data_dir=data)
    assert not welcomed(s2, "gone")
    boss = opered(s2, "chief")
    boss.send("STATS K")
    assert boss.lines_until("219")[0].startswith(":chat.test 216 chief K 127.0.0.1 * ~gone :for good")
    assert admin("deoper", "boss", data_dir=data).returncode == 0
    failed = admin("deoper", "boss", data_dir=data)
    assert failed.returncode == 1 and "boss is not a server operator" in failed.stderr
    assert admin("oper", "nobody", data_dir=data).returncode == 1
    late = s2.client("late")
    late.send(f"OPER boss {PW}")
    assert " 491 " in late.recv_line()


def admin(*args: str, data_dir: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chatroom.admin", "account", *args,
                           "--data-dir", data_dir], capture_output=True, text=True,
                          timeout=30, cwd=ROOT, check=False)


def test_a_deleted_operator_account_registered_again_is_no_operator(tmp_path: Path) -> None:
    store = Moderation(tmp_path)
    try:
        store.add_oper("Boss", 1000.0)
        assert store.oper_created("boss") == 1000.0
        assert store.oper_names() == ["Boss"]
        assert store.oper_created("other") is None
    finally:
        store.close()
    # The server compares that time with the account's own (see oper_account): a new
    # account of the same name has a later one.


def test_ban_masks_and_matching() -> None:
    assert ban_mask("10.0.0.0/8") == "*@10.0.0.0/8"
    assert ban_mask("Bob@Host.Example") == "bob@host.example"
    assert ban_mask("$a:Bob") == "$a:bob"
    for bad in ("", "a b", "nick!u@h", "$a:", "@host", "user@"):
        assert ban_mask(bad) is None, bad
    cidr = ServerBan("*@10.1.0.0/16", "r", "x", 0.0, 0.0)
    assert cidr.matches("~u", "10.1.2.3", None)
    assert not cidr.matches("~u", "10.2.0.1", None)
    assert not cidr.matches("~u", "::1", None)
    acct = ServerBan("$a:tr*", "r", "x", 0.0, 0.0)
    assert acct.matches("~u", "h", "Troll") and not acct.matches("~u", "h", None)
    assert not ServerBan("*@h", "r", "x", 0.0, 5.0).active(6.0)


# --- INFO, HELP, ADMIN -------------------------------------------------------------------------


def test_info_help_admin(srv: RunningServer) -> None:
    c = srv.client("asker")
    c.send("INFO")
    lines = c.lines_until("374")
    assert all(" 371 asker :" in line for line in lines[:-1]) and len(lines) > 1
    assert lines[-1] == ":chat.test 374 asker :End of INFO list"
    c.send("HELP")
    lines = c.lines_until("706")
    assert lines[0] == ":chat.test 704 asker * :** Help System **"
    assert all(" 705 asker * :" in line for line in lines[1:-1])
    assert any("KILL" in line and "OPER" in line for line in lines)
    assert lines[-1] == ":chat.test 706 asker * :End of /HELP"
    c.send("HELP kill")
    lines = c.lines_until("706")
    assert lines[0] == ":chat.test 704 asker kill :** The KILL command **"
    c.send("HELP frobnicate")
    assert c.recv_line() == ":chat.test 524 asker frobnicate :No help available on this topic"
    c.send("ADMIN")
    lines = c.lines_until("259")
    assert [line.split()[1] for line in lines] == ["256", "257", "258", "259"]
    assert lines[0] == ":chat.test 256 asker chat.test :Administrative info"
    c.send("ADMIN elsewhere.example")
    assert c.recv_line() == ":chat.test 402 asker elsewhere.example :No such server"


# --- the audit log -----------------------------------------------------------------------------


def test_operator_actions_are_logged_without_passwords(osrv: RunningServer,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    osrv.client("victim")
    pleb = osrv.client("pleb")
    pleb.send("OPER boss wrong-guess-123")
    pleb.lines_until("464")
    pleb.send("KILL victim :x")
    pleb.lines_until("481")
    boss = opered(osrv, "chief")
    boss.send("WALLOPS :hello all")
    boss.expect("WALLOPS")
    boss.send("KLINE 5m ~nobody@127.0.0.9 :test ban")
    boss.expect("NOTICE")
    boss.send("UNKLINE ~nobody@127.0.0.9")
    boss.expect("NOTICE")
    boss.send("KILL victim :bye now")
    boss.send("PING :sync")
    boss.expect("PONG")
    text = "\n".join(r.getMessage() for r in caplog.records)
    for expected in (
            "oper: pleb!~u@127.0.0.1 failed OPER as boss: wrong password",
            "oper: pleb!~u@127.0.0.1 refused KILL victim: not an operator",
            "oper: chief!~u@127.0.0.1 is now a server operator (account boss)",
            "oper: chief!~u@127.0.0.1 WALLOPS to 1: hello all",
            ("oper: chief!~u@127.0.0.1 KLINE ~nobody@127.0.0.9 for 300 s (test ban): "
             "disconnected nobody"),
            "oper: chief!~u@127.0.0.1 UNKLINE ~nobody@127.0.0.9",
            "oper: chief!~u@127.0.0.1 KILL victim!~u@127.0.0.1 (bye now)"):
        assert expected in text
    assert PW not in text and "wrong-guess-123" not in text
