"""Registration: NICK/USER, CAP negotiation, PASS, collisions and bad nicks, byte-exact."""

from __future__ import annotations

from conftest import RunningServer


def test_welcome_burst_in_spec_order(srv: RunningServer) -> None:
    c = srv.client()
    lines = c.register("alice", "al", "Alice A")
    codes = [line.split(" ")[1] for line in lines]
    assert codes == ["001", "002", "003", "004", "005", "005", "005", "251", "255", "265", "266",
                     "422"]
    assert lines[0] == ":chat.test 001 alice :Welcome to the TestNet Network, alice!~al@127.0.0.1"
    assert lines[1].startswith(":chat.test 002 alice :Your host is chat.test, running version ")
    assert lines[3].startswith(":chat.test 004 alice chat.test ")
    isupport = " ".join(lines[4:7])
    for token in ("CASEMAPPING=ascii", "CHANTYPES=#", "PREFIX=(ov)@+", "CHANMODES=",
                  "NICKLEN=30", "CHANNELLEN=50", "TOPICLEN=390", "NETWORK=TestNet",
                  "UTF8ONLY"):
        assert token in isupport
    assert lines[4].endswith(" :are supported by this server")
    assert lines[7] == ":chat.test 251 alice :There are 1 users and 0 invisible on 1 servers"
    assert lines[8] == ":chat.test 255 alice :I have 1 clients and 0 servers"
    assert lines[9] == ":chat.test 265 alice :Current local users 1, max 1"
    assert lines[11] == ":chat.test 422 alice :MOTD File is missing"


def test_motd(make_server) -> None:
    s = make_server(motd=["Hello there", "Be nice"])
    c = s.client()
    lines = c.register("bob")
    assert lines[-4:] == [
        ":chat.test 375 bob :- chat.test Message of the day - ",
        ":chat.test 372 bob :- Hello there",
        ":chat.test 372 bob :- Be nice",
        ":chat.test 376 bob :End of /MOTD command.",
    ]


def test_user_before_nick(srv: RunningServer) -> None:
    c = srv.client()
    c.send("USER x 0 * :X")
    c.send("NICK late")
    assert c.recv_line().startswith(":chat.test 001 late ")


def test_cap_negotiation_holds_registration_until_end(srv: RunningServer) -> None:
    c = srv.client()
    c.send("CAP LS 302")
    assert c.recv_line() == (":chat.test CAP * LS :account-notify account-tag away-notify "
                             "batch cap-notify echo-message extended-join "
                             "extended-monitor labeled-response message-tags multi-prefix "
                             "sasl=PLAIN server-time setname standard-replies "
                             "userhost-in-names "
                             "draft/account-registration=before-connect draft/chathistory "
                             "draft/event-playback draft/read-marker "
                             "draft/multiline=max-bytes=4096,max-lines=100")
    c.send("NICK capper")
    c.send("USER c 0 * :C")
    c.send("CAP REQ :multi-prefix userhost-in-names")
    assert c.recv_line() == ":chat.test CAP capper ACK :multi-prefix userhost-in-names"
    c.send("CAP REQ :sasl=PLAIN")  # a value is never part of the name
    assert c.recv_line() == ":chat.test CAP capper NAK sasl=PLAIN"
    c.send("CAP LIST")
    assert c.recv_line() == ":chat.test CAP capper LIST :multi-prefix userhost-in-names"
    c.send("CAP END")
    assert c.recv_line().startswith(":chat.test 001 capper ")


def test_cap_req_is_atomic_and_removal(srv: RunningServer) -> None:
    c = srv.client()
    c.send("CAP REQ :multi-prefix bogus")
    assert c.recv_line() == ":chat.test CAP * NAK :multi-prefix bogus"
    c.send("CAP LIST")
    assert c.recv_line() == ":chat.test CAP * LIST :"
    c.send("CAP REQ multi-prefix")
    assert c.recv_line() == ":chat.test CAP * ACK multi-prefix"
    c.send("CAP REQ -multi-prefix")
    assert c.recv_line() == ":chat.test CAP * ACK -multi-prefix"
    c.send("CAP FROB")
    assert c.recv_line() == ":chat.test 410 * FROB :Invalid CAP command"


def test_nick_errors(srv: RunningServer) -> None:
    srv.client("taken")
    c = srv.client()
    c.send("NICK")
    assert c.recv_line() == ":chat.test 431 * :No nickname given"
    c.send("NICK 9lives")
    assert c.recv_line() == ":chat.test 432 * 9lives :Erroneous nickname"
    c.send("NICK TAKEN")
    assert c.recv_line() == ":chat.test 433 * TAKEN :Nickname is already in use"
    c.send("NICK free")
    c.send("USER f 0 * :F")
    assert c.recv_line().startswith(":chat.test 001 free ")


def test_nick_collision_between_unregistered_clients(srv: RunningServer) -> None:
    a, b = srv.client(), srv.client()
    a.send("NICK same")
    a.no_line()
    b.send("NICK same")
    assert b.recv_line() == ":chat.test 433 * same :Nickname is already in use"


def test_user_needs_params_and_no_reregister(srv: RunningServer) -> None:
    c = srv.client()
    c.send("USER onlyone")
    assert c.recv_line() == ":chat.test 461 * USER :Not enough parameters"
    c.register("ok")
    c.send("USER again 0 * :x")
    assert c.recv_line() == ":chat.test 462 ok :You may not reregister"
    c.send("PASS late")
    assert c.recv_line() == ":chat.test 462 ok :You may not reregister"


def test_commands_before_registration(srv: RunningServer) -> None:
    c = srv.client()
    c.send("JOIN #chat")
    assert c.recv_line() == ":chat.test 451 * :You have not registered"
    c.send("FROBNICATE")
    assert c.recv_line() == ":chat.test 451 * :You have not registered"
    c.send("PING :abc")
    assert c.recv_line() == ":chat.test PONG chat.test abc"


def test_password_required(make_server) -> None:
    s = make_server(password="sesame")
    good = s.client()
    good.send("PASS sesame")
    good.register("good")
    bad = s.client()
    bad.send("PASS wrong")
    bad.send("NICK bad")
    bad.send("USER b 0 * :B")
    assert bad.recv_line() == ":chat.test 464 bad :Password incorrect"
    assert bad.recv_line() == "ERROR :Closing Link: 127.0.0.1 (Bad password)"
    assert bad.closed()
    none = s.client()
    none.send("NICK none")
    none.send("USER n 0 * :N")
    assert none.recv_line() == ":chat.test 464 none :Password incorrect"
    assert s.wait_for(lambda: "bad" not in s.server.reg.nicks and "none" not in s.server.reg.nicks)


def test_quit_before_registration(srv: RunningServer) -> None:
    c = srv.client()
    c.send("QUIT")
    assert c.recv_line() == "ERROR :Closing Link: 127.0.0.1 (Quit)"
    assert c.closed()


def test_registration_timeout(make_server) -> None:
    s = make_server(register_timeout=0.3)
    c = s.client()
    c.send("NICK slowpoke")
    assert c.recv_line() == "ERROR :Closing Link: 127.0.0.1 (Registration timed out)"
    assert c.closed()
    assert s.wait_for(lambda: not s.server.reg.clients)
