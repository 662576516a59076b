"""Accounts on the wire, against a real server: SASL PLAIN (sasl-3.1/3.2), REGISTER and
VERIFY (draft/account-registration), account-tag, account-notify, extended-join, WHOIS 330,
nick protection, founders, --registration closed, --require-account, and the throttles."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from conftest import ROOT, Cert, LineClient, RunningServer, tls_client_context

from chatroom import login
from chatroom import protocol as P

Factory = Callable[..., RunningServer]
PW = "correct horse battery staple"


def b64(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return base64.b64encode(data).decode()


def welcome_end(line: str) -> bool:
    return line.split(" ")[1:2] in (["376"], ["422"])


def fresh(srv: RunningServer, caps: str = "sasl", nick: str | None = None) -> LineClient:
    """A connection that asked for ``caps`` (and got them) and, with ``nick``, sent NICK and
    USER, but has not ended CAP: registration waits for it."""
    c = srv.client()
    c.send("CAP LS 302")
    c.expect(lambda s: " LS :" in s)
    c.send(f"CAP REQ :{caps}")
    assert " ACK " in c.recv_line()
    if nick:
        c.send(f"NICK {nick}")
        c.send(f"USER {nick} 0 * :Real {nick}")
        c.nick = nick
    return c


def finish(c: LineClient) -> list[str]:
    c.send("CAP END")
    return c.expect(welcome_end)


def create_account(srv: RunningServer, name: str, password: str = PW) -> None:
    c = fresh(srv, "draft/account-registration", name)
    c.send(f"REGISTER * * :{password}")
    assert c.recv_line() == f":chat.test REGISTER SUCCESS {name} :Account created: you are " \
                            "logged in"
    c.send("QUIT")
    assert c.closed()
    assert srv.wait_for(lambda: srv.server.reg.nicks.get(P.casefold(name)) is None)


def sasl(c: LineClient, name: str, password: str = PW, authzid: str = "") -> list[str]:
    """Run one PLAIN exchange; the lines up to its verdict (903, or 902/904/905/906)."""
    c.send("AUTHENTICATE PLAIN")
    assert c.recv_line() == "AUTHENTICATE +"
    c.send("AUTHENTICATE " + b64(f"{authzid}\0{name}\0{password}"))
    return c.expect(lambda s: s.split(" ")[1:2] in (["903"], ["902"], ["904"], ["905"],
                                                     ["906"]))


def logged_in_as(srv: RunningServer, name: str, account: str) -> LineClient:
    c = fresh(srv, "sasl", name)
    assert sasl(c, account)[-1] == f":chat.test 903 {name} :SASL authentication successful"
    finish(c)
    return c


# --- SASL ----------------------------------------------------------------------------------


def test_sasl_plain_logs_in_with_the_specs_numerics(srv: RunningServer) -> None:
    create_account(srv, "alice")
    c = fresh(srv, "sasl", "alice")
    lines = sasl(c, "alice")
    assert lines == [":chat.test 900 alice alice!~alice@127.0.0.1 alice :You are now logged in "
                     "as alice", ":chat.test 903 alice :SASL authentication successful"]
    assert finish(c)[0].startswith(":chat.test 001 alice ")
    c.send("WHOIS alice")
    whois = c.lines_until("318")
    assert ":chat.test 330 alice alice alice :is logged in as" in whois


def test_sasl_before_nick_uses_star(srv: RunningServer) -> None:
    create_account(srv, "early")
    c = fresh(srv, "sasl")
    assert sasl(c, "early") == [
        ":chat.test 900 * * early :You are now logged in as early",
        ":chat.test 903 * :SASL authentication successful"]
    c.send("NICK early")
    c.send("USER e 0 * :E")  # NICK and USER during and after SASL are fine
    assert finish(c)[0].startswith(":chat.test 001 early ")


def test_sasl_needs_the_cap_and_a_known_mechanism(srv: RunningServer) -> None:
    c = srv.client()
    c.send("AUTHENTICATE PLAIN")  # before CAP REQ sasl
    assert c.recv_line().startswith(":chat.test 904 * :SASL authentication failed")
    c = fresh(srv, "sasl", "mech")
    c.send("AUTHENTICATE SCRAM-SHA-256")
    assert c.recv_line() == ":chat.test 908 mech PLAIN :are available SASL mechanisms"
    assert c.recv_line() == ":chat.test 904 mech :SASL authentication failed"
    c.send("AUTHENTICATE *")
    assert c.recv_line() == ":chat.test 906 mech :SASL authentication aborted"


def test_sasl_wrong_password_then_retry_succeeds(srv: RunningServer) -> None:
    create_account(srv, "retry")
    c = fresh(srv, "sasl", "retry")
    assert sasl(c, "retry", "nope")[-1].startswith(":chat.test 904 retry :SASL authentication "
                                                   "failed")
    assert sasl(c, "nosuchaccount")[-1].startswith(":chat.test 904 ")
    assert sasl(c, "retry")[-1] == ":chat.test 903 retry :SASL authentication successful"
    c.send("AUTHENTICATE PLAIN")  # once logged in, before registration: 907
    assert c.recv_line() == ":chat.test 907 retry :You have already authenticated using SASL"
    finish(c)


def test_sasl_bad_inputs_get_clean_errors(srv: RunningServer) -> None:
    c = fresh(srv, "sasl", "bad")
    cases = [
        ("!!!not base64!!!", "904"),
        (b64("only-one-field"), "904"),
        (b64("\0\0"), "904"),  # no name, no password
        (b64(b"\0bad\0\xff\xfe"), "904"),  # not UTF-8
        ("A" * 401, "905"),  # a chunk over 400 bytes
    ]
    for payload, code in cases:
        c.send("AUTHENTICATE PLAIN")
        assert c.recv_line() == "AUTHENTICATE +"
        c.send("AUTHENTICATE " + payload)
        assert c.recv_line().split(" ")[1] == code, payload[:20]
    # An endless run of full chunks is cut off, not buffered forever.
    c.send("AUTHENTICATE PLAIN")
    assert c.recv_line() == "AUTHENTICATE +"
    for _ in range(6):  # 2,400 bytes: over the 2,000 a response may take
        c.send("AUTHENTICATE " + "A" * 400)
    assert c.recv_line() == ":chat.test 905 bad :SASL message too long"
    # Another identity than the one logging in is refused.
    create_account(srv, "victim")
    assert sasl(c, "victim", authzid="bad")[-1].startswith(":chat.test 904 ")
    assert finish(c)[0].startswith(":chat.test 001 bad ")


def test_sasl_400_byte_chunks_and_the_plus_terminator(srv: RunningServer) -> None:
    long_pw = "p" * 298 + "é"  # 300 bytes of UTF-8: the longest password allowed
    create_account(srv, "chunky", long_pw)
    c = fresh(srv, "sasl", "chunky")
    payload = b64(f"chunky\0chunky\0{long_pw}")
    assert len(payload) > 400
    c.send("AUTHENTICATE PLAIN")
    assert c.recv_line() == "AUTHENTICATE +"
    for i in range(0, len(payload), 400):
        c.send("AUTHENTICATE " + payload[i:i + 400])
    if len(payload) % 400 == 0:
        c.send("AUTHENTICATE +")
    assert c.expect(" 903 ")[-1] == ":chat.test 903 chunky :SASL authentication successful"
    # A response of exactly 400 base64 bytes (300 raw) needs a "+" to end it.
    pw = "x" * (300 - len("e4\0e4\0"))
    raw = f"e4\0e4\0{pw}".encode()
    assert len(b64(raw)) == 400
    create_account(srv, "e4", pw)
    d = fresh(srv, "sasl", "e4")
    d.send("AUTHENTICATE PLAIN")
    assert d.recv_line() == "AUTHENTICATE +"
    d.send("AUTHENTICATE " + b64(raw))
    d.no_line()  # it waits for the rest
    d.send("AUTHENTICATE +")
    assert d.expect(" 903 ")[-1] == ":chat.test 903 e4 :SASL authentication successful"


def test_nick_and_user_in_the_middle_of_an_exchange(srv: RunningServer) -> None:
    create_account(srv, "midway")
    c = fresh(srv, "sasl")
    c.send("AUTHENTICATE PLAIN")
    assert c.recv_line() == "AUTHENTICATE +"
    c.send("NICK midway")
    c.send("USER m 0 * :M")  # no CAP END yet: registration still waits
    c.send("AUTHENTICATE " + b64("\0midway\0" + PW))
    assert c.recv_line() == (":chat.test 900 midway midway!~m@127.0.0.1 midway :You are now "
                             "logged in as midway")
    assert c.recv_line() == ":chat.test 903 midway :SASL authentication successful"
    assert finish(c)[0].startswith(":chat.test 001 midway ")
    c.no_line()  # no warning: the nick is its own


def test_cap_end_during_sasl_aborts_and_registers_as_guest(srv: RunningServer) -> None:
    c = fresh(srv, "sasl", "hasty")
    c.send("AUTHENTICATE PLAIN")
    assert c.recv_line() == "AUTHENTICATE +"
    c.send("CAP END")
    assert c.recv_line() == ":chat.test 906 hasty :SASL authentication aborted"
    assert c.recv_line().startswith(":chat.test 001 hasty ")


def test_reauthentication_after_registration(srv: RunningServer) -> None:
    create_account(srv, "first")
    create_account(srv, "second")
    c = fresh(srv, "sasl account-notify", "first")
    assert sasl(c, "first")[-1].endswith("SASL authentication successful")
    finish(c)
    lines = sasl(c, "second")
    assert ":first!~first@127.0.0.1 ACCOUNT second" in lines
    assert ":chat.test 900 first first!~first@127.0.0.1 second :You are now logged in as " \
           "second" in lines
    # The nick "first" belongs to the other account now: warned at once.
    assert "The nick first is registered" in c.recv_line()


def test_plaintext_password_refused_from_the_network_when_tls_is_on(
        make_server: Factory, tls_cert: Cert, monkeypatch: pytest.MonkeyPatch) -> None:
    s = make_server(tls_port=0, tls_cert=str(tls_cert.cert), tls_key=str(tls_cert.key))
    assert s.tls_address is not None
    port = s.tls_address[1]
    create_account(s, "local")
    c = fresh(s, "sasl", "local")  # plaintext, but from this machine: allowed
    assert sasl(c, "local")[-1].endswith("SASL authentication successful")
    # From another machine (the tests can only dial loopback, so the address check is
    # told this one is remote), a plaintext password is refused before it is sent.
    monkeypatch.setattr(login, "is_loopback", lambda host: False)
    far = fresh(s, "sasl draft/account-registration", "far")
    far.send("AUTHENTICATE PLAIN")
    assert far.recv_line() == (":chat.test 904 far :SASL authentication failed: passwords are "
                               f"only accepted over TLS (port {port})")
    far.send("REGISTER * * :pw")
    assert far.recv_line() == (":chat.test FAIL REGISTER INSECURE_CONNECTION far :Passwords "
                               f"are only accepted over TLS: connect to port {port}")
    t = s.client(tls=tls_client_context(tls_cert))  # over TLS, from anywhere: fine
    t.send("CAP REQ :sasl")
    t.recv_line()
    t.send("NICK local2")
    t.send("USER l 0 * :L")
    assert sasl(t, "local")[-1].endswith("SASL authentication successful")


# --- REGISTER and VERIFY ---------------------------------------------------------------------


def test_register_before_connect_logs_in(srv: RunningServer) -> None:
    c = fresh(srv, "draft/account-registration", "newbie")
    c.send("REGISTER * * :s3cret")
    assert c.recv_line() == ":chat.test REGISTER SUCCESS newbie :Account created: you are " \
                            "logged in"
    assert c.recv_line() == ":chat.test 900 newbie newbie!~newbie@127.0.0.1 newbie :You are " \
                            "now logged in as newbie"
    finish(c)
    c.send("REGISTER * * :again")
    assert c.recv_line() == (":chat.test FAIL REGISTER ALREADY_AUTHENTICATED newbie :You are "
                             "already logged in as newbie")
    c.send("VERIFY newbie 1234")
    assert c.recv_line().startswith(":chat.test FAIL VERIFY ALREADY_AUTHENTICATED newbie :")


def test_register_refusals(srv: RunningServer) -> None:
    early = srv.client()
    early.send("REGISTER * * :pw")
    assert early.recv_line().startswith(":chat.test FAIL REGISTER NEED_NICK * :")
    create_account(srv, "taken")
    c = fresh(srv, "draft/account-registration", "taken")  # a guest on a registered nick
    c.send("REGISTER * * :pw")
    assert c.recv_line() == (":chat.test FAIL REGISTER ACCOUNT_EXISTS taken :That name is "
                             "already registered: log in, or pick another")
    c.send("NICK other")
    c.send("REGISTER someoneelse * :pw")
    assert c.recv_line().startswith(
        ":chat.test FAIL REGISTER ACCOUNT_NAME_MUST_BE_NICK someoneelse :")
    c.send("REGISTER * * :")
    assert c.recv_line().startswith(":chat.test FAIL REGISTER UNACCEPTABLE_PASSWORD other :")
    c.send("REGISTER other * :" + "x" * 301)
    line = c.recv_line()
    assert line.startswith(":chat.test FAIL REGISTER UNACCEPTABLE_PASSWORD other :")
    assert "x" * 20 not in line  # the password is never echoed
    c.send("REGISTER other *")
    assert c.recv_line() == ":chat.test 461 other REGISTER :Not enough parameters"
    c.send("NICK Guest12345")
    c.send("REGISTER * * :pw")
    assert c.recv_line().startswith(":chat.test FAIL REGISTER BAD_ACCOUNT_NAME Guest12345 :")
    c.send("VERIFY other 123456")
    assert c.recv_line().startswith(":chat.test FAIL VERIFY INVALID_CODE other :")
    c.send("NICK Other")
    c.send("REGISTER oTHER * :fine")  # the account name compares as nicks do
    assert c.recv_line().startswith(":chat.test REGISTER SUCCESS Other ")


def test_register_twice_the_second_is_refused(srv: RunningServer) -> None:
    a = fresh(srv, "draft/account-registration", "twin")
    a.send("REGISTER * * :pw1")
    a.send("REGISTER * * :pw2")
    assert "REGISTER SUCCESS twin" in a.recv_line()
    a.recv_line()  # 900
    assert "ALREADY_AUTHENTICATED" in a.recv_line()


def test_registration_closed(make_server: Factory) -> None:
    s = make_server(registration="closed")
    c = s.client()
    c.send("CAP LS 302")
    assert "draft/account-registration" not in c.recv_line()
    c.send("NICK shut")
    c.send("REGISTER * * :pw")
    assert c.recv_line().startswith(":chat.test FAIL REGISTER TEMPORARILY_UNAVAILABLE shut :"
                                    "Registration is closed")


def test_register_is_limited_per_address(make_server: Factory) -> None:
    s = make_server(register_limit=2)
    for i in range(2):
        c = fresh(s, "draft/account-registration", f"many{i}")
        c.send("REGISTER * * :pw")
        assert "REGISTER SUCCESS" in c.recv_line()
    c = fresh(s, "draft/account-registration", "many9")
    c.send("REGISTER * * :pw")
    line = c.recv_line()
    assert line.startswith(":chat.test FAIL REGISTER TEMPORARILY_UNAVAILABLE many9 :Too many ")
    assert "try again in" in line


def test_register_needs_the_server_password_first(make_server: Factory) -> None:
    s = make_server(password="letmein")
    c = s.client()
    c.send("NICK sneaky")
    c.send("REGISTER * * :pw")
    assert "Send the server password (PASS) first" in c.recv_line()
    c.send("PASS letmein")
    c.send("REGISTER * * :pw")
    assert "REGISTER SUCCESS sneaky" in c.recv_line()


# --- the throttle --------------------------------------------------------------------------


def test_failed_logins_slow_down_then_refuse_and_successes_never_count(
        make_server: Factory) -> None:
    s = make_server(login_free=2, login_max=4, login_window=600.0)
    create_account(s, "target")
    c = fresh(s, "sasl", "attacker")
    for _ in range(2):  # the free ones
        assert "wrong name or password" in sasl(c, "target", "bad")[-1]
    # The third failure is counted; the next try must wait (2 s, then 4 s, ...).
    assert "wrong name or password" in sasl(c, "target", "bad")[-1]
    line = sasl(c, "target", PW)[-1]  # even the right password is not checked now
    assert line.startswith(":chat.test 904 attacker :SASL authentication failed: too many "
                           "failed attempts: try again in ")
    # The account is protected from another connection too (per account).
    d = fresh(s, "sasl", "other")
    assert "too many failed attempts" in sasl(d, "target", PW)[-1]
    # Other accounts are not affected, and their successes don't reset anything.
    create_account(s, "bystander")
    assert sasl(d, "bystander")[-1].endswith("SASL authentication successful")
    # After the wait, the owner gets in.
    time.sleep(2.1)
    e = fresh(s, "sasl", "owner")
    assert sasl(e, "target")[-1].endswith("SASL authentication successful")


# --- what others see -----------------------------------------------------------------------


def test_account_tag_extended_join_and_account_notify(srv: RunningServer) -> None:
    create_account(srv, "tagged")
    watcher = fresh(srv, "account-tag extended-join account-notify", "watcher")
    finish(watcher)
    watcher.join("#tags")
    plain = srv.client("plain", "#tags")
    assert watcher.recv_line() == ":plain!~u@127.0.0.1 JOIN #tags * :Real Name"
    t = logged_in_as(srv, "tagged", "tagged")
    t.join("#tags")
    assert watcher.recv_line() == "@account=tagged :tagged!~tagged@127.0.0.1 JOIN #tags " \
                                  "tagged :Real tagged"
    assert plain.recv_line() == ":tagged!~tagged@127.0.0.1 JOIN #tags"
    t.send("PRIVMSG #tags :hello")
    assert watcher.recv_line() == "@account=tagged :tagged!~tagged@127.0.0.1 PRIVMSG #tags " \
                                  ":hello"
    assert plain.recv_line() == ":tagged!~tagged@127.0.0.1 PRIVMSG #tags :hello"
    guest = srv.client("guesty", "#tags")
    assert watcher.recv_line() == ":guesty!~u@127.0.0.1 JOIN #tags * :Real Name"
    plain.recv_line()
    # A guest logging in once registered: ACCOUNT to those who asked, and to itself.
    create_account(srv, "guesty2")
    guest.send("CAP REQ :sasl")
    guest.recv_line()
    guest.send("NICK guesty2")
    guest.expect("NICK")
    assert "The nick guesty2 is registered" in guest.recv_line()
    assert sasl(guest, "guesty2")[-1].endswith("SASL authentication successful")
    assert watcher.expect("ACCOUNT")[-1] == ("@account=guesty2 :guesty2!~u@127.0.0.1 ACCOUNT "
                                             "guesty2")
    plain.send("WHOIS guesty2")
    assert ":chat.test 330 plain guesty2 guesty2 :is logged in as" in plain.lines_until("318")


# --- your name is yours --------------------------------------------------------------------


def test_a_guest_on_a_registered_nick_is_warned_then_renamed(make_server: Factory) -> None:
    s = make_server(nick_grace=0.5)
    create_account(s, "owned")
    g = s.client()
    g.register("owned")
    assert g.recv_line() == (":chat.test NOTICE owned :The nick owned is registered. Log in "
                             "to it within 1 s, or you will be renamed to a guest name.")
    line = g.expect("NICK")[-1]
    assert line.startswith(":owned!~u@127.0.0.1 NICK Guest")
    guest = line.rsplit(" ", 1)[1]
    assert P.valid_nick(guest) and guest[5:].isdigit()
    assert f"you are now {guest}" in g.recv_line()
    g.send("NICK owned")  # no second grace
    assert g.recv_line() == (f":chat.test 433 {guest} owned :That nick is registered: log in "
                             "to use it")


def test_logging_in_in_time_keeps_the_nick(make_server: Factory) -> None:
    s = make_server(nick_grace=0.5)
    create_account(s, "quick")
    g = s.client()
    g.send("CAP REQ :sasl")
    g.recv_line()
    g.send("CAP END")
    g.register("quick")
    assert "The nick quick is registered" in g.recv_line()
    assert sasl(g, "quick")[-1].endswith("SASL authentication successful")
    time.sleep(0.8)
    g.no_line()
    assert s.server.reg.find_nick("quick") is not None


def test_the_owner_takes_the_nick_from_a_guest_at_registration(make_server: Factory) -> None:
    s = make_server(nick_grace=60)
    create_account(s, "mine")
    squatter = s.client("mine")
    owner = fresh(s, "sasl")
    owner.send("NICK mine")
    assert " 433 " in owner.recv_line()
    owner.send("NICK mine_")
    owner.send("USER m 0 * :M")
    assert sasl(owner, "mine")[-1].endswith("SASL authentication successful")
    assert finish(owner)[0].startswith(":chat.test 001 mine ")
    assert squatter.expect("NICK")[-1].startswith(":mine!~u@127.0.0.1 NICK Guest")


def test_login_later_changes_nothing_until_the_owner_asks(make_server: Factory) -> None:
    s = make_server(nick_grace=60)
    create_account(s, "later")
    squatter = s.client("later")
    assert "The nick later is registered" in squatter.recv_line()
    owner = s.client("elsewhere")
    owner.send("CAP REQ :sasl")
    owner.recv_line()
    assert sasl(owner, "later")[-1].endswith("SASL authentication successful")
    squatter.no_line()
    owner.send("NICK later")
    assert squatter.expect("NICK")[-1].startswith(":later!~u@127.0.0.1 NICK Guest")
    assert owner.expect("NICK")[-1] == ":elsewhere!~u@127.0.0.1 NICK later"


# --- your room is yours --------------------------------------------------------------------


def test_the_founder_gets_op_and_keeps_the_room_across_a_restart(
        make_server: Factory, tmp_path: object) -> None:
    data = str(tmp_path)
    s = make_server(data_dir=data)
    create_account(s, "boss")
    b = logged_in_as(s, "boss", "boss")
    b.join("#hq")
    b.send("MODE #hq +i")
    b.expect("MODE")
    b.send("TOPIC #hq :Boss's room")
    b.expect("TOPIC")
    other = s.client("other")
    other.send("JOIN #hq")
    assert " 473 " in other.recv_line()  # invite only
    b.send("PART #hq")
    b.expect("PART")
    # Empty, the room is still the founder's: a guest can't take it over.
    other.send("JOIN #hq")
    assert " 473 " in other.recv_line()
    s.stop()
    s2 = make_server(data_dir=data)
    g = s2.client("early")
    g.send("JOIN #hq")
    assert " 473 " in g.recv_line()
    b2 = logged_in_as(s2, "boss", "boss")
    lines = b2.join("#hq")
    assert ":chat.test 332 boss #hq :Boss's room" in lines
    assert ":chat.test 353 boss = #hq @boss" in lines


def test_a_guests_room_works_as_before(srv: RunningServer) -> None:
    a = srv.client("guest1", "#open")
    b = srv.client("guest2")
    assert ":chat.test 353 guest2 = #open :@guest1 guest2" in b.join("#open")
    assert srv.server.reg.channels["#open"].founder is None
    a.send("PART #open")
    b.send("PART #open")
    assert srv.wait_for(lambda: "#open" not in srv.server.reg.channels)
    assert "#open" not in srv.server.hub.saved_rooms  # forgotten, as IRC rooms are


# --- a private server ----------------------------------------------------------------------


def test_require_account(make_server: Factory) -> None:
    s = make_server(require_account=True)
    g = s.client()
    g.register("guest")
    assert g.recv_line() == (":chat.test NOTICE guest :This server is for registered users: "
                             "log in to your account to join rooms and talk.")
    g.send("JOIN #x")
    assert g.recv_line() == (":chat.test FAIL JOIN ACCOUNT_REQUIRED :Log in first: this "
                             "server is for registered users")
    g.send("PRIVMSG guest :hi")
    assert "FAIL PRIVMSG ACCOUNT_REQUIRED" in g.recv_line()
    g.send("NOTICE guest :hi")  # NOTICE never answers
    g.no_line()
    create_account(s, "member")
    m = logged_in_as(s, "member", "member")
    assert ":chat.test 366 member #x :End of /NAMES list" in m.join("#x")


# --- the admin command line ----------------------------------------------------------------


def test_admin_cli_adds_an_account_a_running_server_accepts(srv: RunningServer) -> None:
    data = srv.server.config.data_dir
    run = subprocess.run([sys.executable, str(ROOT / "server.py"), "account", "add", "admin1",
                          "--data-dir", data], input="from-stdin\n", capture_output=True,
                         text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert "from-stdin" not in run.stdout + run.stderr
    c = fresh(srv, "sasl", "admin1")
    assert sasl(c, "admin1", "from-stdin")[-1].endswith("SASL authentication successful")
    run = subprocess.run([sys.executable, str(ROOT / "server.py"), "account", "passwd",
                          "admin1", "--data-dir", data], input="newer\n",
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    d = fresh(srv, "sasl", "admin2")
    assert "wrong name or password" in sasl(d, "admin1", "from-stdin")[-1]
    assert sasl(d, "admin1", "newer")[-1].endswith("SASL authentication successful")


def test_passwords_never_reach_the_log(srv: RunningServer,
                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    c = fresh(srv, "sasl draft/account-registration", "logme")
    c.send("REGISTER * * :sup3r-s3cret-pw")
    c.expect(" 900 ")
    finish(c)
    d = fresh(srv, "sasl", "logme2")
    d.send("AUTHENTICATE PLAIN")
    d.recv_line()
    d.send("AUTHENTICATE " + b64("\0logme\0an0ther-s3cret"))
    d.expect(" 904 ")
    finish(d)
    text = caplog.text
    assert "sup3r-s3cret-pw" not in text and "an0ther-s3cret" not in text
    assert b64("\0logme\0an0ther-s3cret") not in text


def test_parallel_guesses_are_counted_before_they_are_checked(make_server: Factory) -> None:
    s = make_server()
    create_account(s, "target2")
    guessers = [fresh(s, "sasl", f"g{i}") for i in range(30)]
    for g in guessers:
        g.send("AUTHENTICATE PLAIN")
    for g in guessers:
        assert g.recv_line() == "AUTHENTICATE +"
    for g in guessers:  # all at once
        g.send("AUTHENTICATE " + b64("\0target2\0guess"))
    answers = [g.expect(" 904 ")[-1] for g in guessers]
    checked = [a for a in answers if "wrong name or password" in a]
    assert 1 <= len(checked) <= 4  # login_free 3, then the fourth's failure starts the wait
    assert all("too many failed attempts" in a for a in answers if a not in checked)


def test_junk_names_cannot_flush_an_accounts_throttle(make_server: Factory) -> None:
    s = make_server(login_free=0)
    create_account(s, "locked")
    c = fresh(s, "sasl", "locker")
    assert "wrong name or password" in sasl(c, "locked", "bad")[-1]
    assert "too many failed attempts" in sasl(c, "locked", PW)[-1]
    s.server.hub.login_throttle.max_keys = 20  # a small table, quickly full of junk
    for i in range(50):
        d = fresh(s, "sasl", f"flusher{i}")
        d.send("AUTHENTICATE PLAIN")
        d.recv_line()
        d.send("AUTHENTICATE " + b64(f"\0junk{i}\0x"))
        d.expect(" 904 ")
        d.close()
    assert len(s.server.hub.login_throttle) <= 21
    e = fresh(s, "sasl", "owner2")
    assert "too many failed attempts" in sasl(e, "locked", PW)[-1]


def test_changing_case_buys_no_grace(make_server: Factory) -> None:
    s = make_server(nick_grace=1.0)
    create_account(s, "hopper")
    g = s.client()
    g.register("hopper")
    assert "within 1 s" in g.recv_line()
    deadline = time.monotonic() + 4
    renamed = False
    while time.monotonic() < deadline and not renamed:
        time.sleep(0.3)
        g.send("NICK " + ("HOPPER" if g.nick == "hopper" else "hopper"))
        g.nick = "HOPPER" if g.nick == "hopper" else "hopper"
        try:
            while True:
                line = g.recv_line(timeout=0.2)
                if " NICK Guest" in line:
                    renamed = True
        except TimeoutError:
            pass
    assert renamed, "a case change restarted the grace"


def test_sasl_waits_for_the_server_password(make_server: Factory) -> None:
    s = make_server(password="srvpw")
    c = s.client()
    c.send("PASS srvpw")
    c.send("NICK admin0")
    c.send("REGISTER * * :pw")
    assert "REGISTER SUCCESS" in c.recv_line()
    d = s.client()
    d.send("CAP REQ :sasl")
    d.recv_line()
    d.send("AUTHENTICATE PLAIN")
    assert d.recv_line() == (":chat.test 904 * :SASL authentication failed: send the server "
                             "password (PASS) first")


def test_secrets_never_reach_the_debug_log_however_spelled(
        srv: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    c = srv.client()
    for line in [":src PASS hunter-one", "   PASS hunter-two", "@a=b   :x PASS hunter-three",
                 "@a=b AUTHENTICATE hunter-four", "register * * :hunter-five"]:
        c.send(line)
    c.send("PING :x")
    c.expect("PONG")
    assert "hunter-" not in caplog.text


def test_an_account_founds_at_most_twenty_rooms(srv: RunningServer) -> None:
    create_account(srv, "claimer")
    c = logged_in_as(srv, "claimer", "claimer")
    for i in range(22):
        c.join(f"#claim{i}")
        c.send(f"PART #claim{i}")
        c.expect("PART")
    assert srv.wait_for(lambda: not any(k.startswith("#claim") for k in
                                         srv.server.reg.channels))
    kept = [k for k in srv.server.hub.saved_rooms if k.startswith("#claim")]
    assert sorted(kept) == sorted(f"#claim{i}" for i in range(20))


def test_many_correct_logins_at_once_from_one_address_all_get_in(make_server: Factory) -> None:
    s = make_server(register_limit=100)
    names = [f"crowd{i}" for i in range(25)]
    for n in names:
        create_account(s, n)
    conns = [fresh(s, "sasl", n) for n in names]
    for c in conns:
        c.send("AUTHENTICATE PLAIN")
    for c in conns:
        assert c.recv_line() == "AUTHENTICATE +"
    for c, n in zip(conns, names):  # 25 at once, one address: a room after a restart
        c.send("AUTHENTICATE " + b64(f"\0{n}\0{PW}"))
    for c in conns:
        assert c.expect(lambda x: " 903 " in x or " 904 " in x)[-1].endswith(
            "SASL authentication successful")


def test_garbage_login_commands_never_hurt_anyone(make_server: Factory,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Random AUTHENTICATE/REGISTER/VERIFY lines from several connections, while two others
    chat: every message arrives, and the server still answers everyone."""
    import random
    rnd = random.Random(1234)
    s = make_server(register_limit=1000)
    a = s.client("talker1", "#calm")
    b = s.client("talker2", "#calm")
    pieces = ["AUTHENTICATE", "REGISTER", "VERIFY", "PLAIN", "*", "+", "=", ":", "\\0",
              b64("\0x\0y"), b64("a\0b\0c\0d"), "A" * 400, "A" * 399, "é", "Guest1"]
    noisy = [fresh(s, "sasl draft/account-registration", f"noise{i}") for i in range(4)]
    for round_ in range(60):
        for n in noisy:
            words = [rnd.choice(pieces) for _ in range(rnd.randint(1, 4))]
            n.send(rnd.choice(["AUTHENTICATE", "REGISTER", "VERIFY"]) + " " + " ".join(words))
        a.send(f"PRIVMSG #calm :line {round_}")
    got = [b.expect("PRIVMSG")[-1] for _ in range(60)]
    assert [g.rsplit(" ", 1)[1] for g in got] == [str(i) for i in range(60)]
    for n in noisy:
        n.send("PING :still")
        n.expect("still")
    assert s.server.hub.accounts is not None
    assert all(name.startswith("noise") for name in s.server.hub.accounts.names())
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
