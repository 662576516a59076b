"""The desktop client's accounts, without a display: ChatSession logging in (SASL PLAIN) and
creating accounts (REGISTER) against a real server, the refusals in words, reconnects that
log in again, a guest on a registered name, the local password checks, the remembered
password file, and that the password reaches no log."""

from __future__ import annotations

import base64
import logging
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import FakePeer, FakeServer, RunningServer
from test_client_session import FAST, Watcher

from chatroom import events as EV
from chatroom import handlers
from chatroom import protocol as P
from chatroom import session as S
from chatroom.secrets_store import PasswordStore

PW = "tr0ub4dor & 3"
Connect = Callable[..., tuple[S.ChatSession, Watcher]]
Factory = Callable[..., RunningServer]


@pytest.fixture
def connect() -> Iterator[Connect]:
    """A session logging in to (``password=``) or creating (``create=True``) ``name``'s
    account, started; not waited for."""
    made: list[S.ChatSession] = []

    def factory(srv: RunningServer | FakeServer, name: str, password: str | None = PW, *,
                create: bool = False, **kw: object) -> tuple[S.ChatSession, Watcher]:
        kw.setdefault("backoff", FAST)
        account = S.Credentials(name, password, create) if password is not None else None
        s = S.ChatSession("127.0.0.1", srv.address[1], name, account=account,
                          **kw)  # type: ignore[arg-type]
        made.append(s)
        s.start()
        return s, Watcher(s)

    yield factory
    for s in made:
        s.close(timeout=2.0)
    for s in made:
        assert not s.alive, "session threads still running after close()"


def make_account(srv: RunningServer, name: str, password: str = PW) -> None:
    """An account made over the wire, as another client would."""
    c = srv.client()
    c.send("CAP LS 302")
    c.expect(" LS ")
    c.send(f"NICK {name}")
    c.send(f"USER {name} 0 * :{name}")
    c.send(f"REGISTER * * :{password}")
    assert "REGISTER SUCCESS" in c.expect("REGISTER")[-1]
    c.send("QUIT")
    assert c.closed()
    assert srv.wait_for(lambda: srv.server.reg.nicks.get(P.casefold(name)) is None)


def account_of(srv: RunningServer, nick: str) -> str | None:
    with srv.server.reg.lock:
        client = srv.server.reg.nicks.get(P.casefold(nick))
        return client.account if client is not None else None


def whois(srv: RunningServer, nick: str) -> list[str]:
    c = srv.client("asker")
    c.send(f"WHOIS {nick}")
    return c.lines_until("318")


# --- logging in ----------------------------------------------------------------------------


def test_log_in_and_the_server_says_so(srv: RunningServer, connect: Connect) -> None:
    make_account(srv, "alice")
    s, w = connect(srv, "alice")
    assert w.wait(EV.LoggedIn) == EV.LoggedIn("alice", created=False)
    assert w.wait(EV.Registered).nick == "alice"
    w.wait(EV.Joined)
    # LoggedIn came first: the login happened before registration ended (before CAP END).
    kinds = [type(e) for e in w.seen]
    assert kinds.index(EV.LoggedIn) < kinds.index(EV.Registered)
    assert s.account_name == "alice" and account_of(srv, "alice") == "alice"
    assert ":chat.test 330 asker alice alice :is logged in as" in whois(srv, "alice")


def test_wrong_password_is_said_in_words(srv: RunningServer, connect: Connect) -> None:
    make_account(srv, "alice")
    _s, w = connect(srv, "alice", "not it")
    ev = w.wait(EV.LoginFailed)
    assert ev.kind is EV.LoginKind.WRONG_PASSWORD
    assert ev.message == "Wrong name or password. Check both and try again."
    w.wait(EV.Closed)
    assert not any(isinstance(e, EV.Registered) for e in w.seen)
    # An account that does not exist gets the same words: the server won't say which.
    _s2, w2 = connect(srv, "nobody")
    assert w2.wait(EV.LoginFailed).kind is EV.LoginKind.WRONG_PASSWORD


def test_too_many_tries_says_how_long_to_wait(make_server: Factory, connect: Connect) -> None:
    srv = make_server(login_free=0)  # the first failure already costs 2 s
    make_account(srv, "alice")
    _s, w = connect(srv, "alice", "wrong")
    assert w.wait(EV.LoginFailed).kind is EV.LoginKind.WRONG_PASSWORD
    _s2, w2 = connect(srv, "alice")  # even the right password must wait now
    ev = w2.wait(EV.LoginFailed)
    assert ev.kind is EV.LoginKind.THROTTLED and ev.wait == 2
    assert ev.message == "Too many tries: wait 2 s, then try again."


def test_the_owner_gets_the_name_back_from_a_guest(make_server: Factory,
                                                   connect: Connect) -> None:
    srv = make_server(nick_grace=60)
    make_account(srv, "alice")
    squatter = srv.client("alice")
    s, w = connect(srv, "alice")
    w.wait(EV.LoggedIn)
    assert w.wait(EV.Registered).nick == "alice"  # registered as alice_, given alice
    w.wait(EV.Joined)
    assert s.nick == "alice"
    assert squatter.expect(" NICK ")[-1].startswith(":alice!~u@127.0.0.1 NICK Guest")


# --- creating an account --------------------------------------------------------------------


def test_create_an_account_then_a_fresh_session_logs_in(srv: RunningServer,
                                                       connect: Connect) -> None:
    s, w = connect(srv, "newbie", create=True)
    assert w.wait(EV.LoggedIn) == EV.LoggedIn("newbie", created=True)
    w.wait(EV.Joined)
    assert account_of(srv, "newbie") == "newbie"
    s.close()
    assert srv.wait_for(lambda: "newbie" not in srv.server.reg.nicks)
    _s2, w2 = connect(srv, "newbie")
    assert w2.wait(EV.LoggedIn) == EV.LoggedIn("newbie", created=False)
    w2.wait(EV.Joined)


def test_create_a_name_that_is_registered(srv: RunningServer, connect: Connect) -> None:
    make_account(srv, "taken")
    _s, w = connect(srv, "taken", "another", create=True)
    ev = w.wait(EV.LoginFailed)
    assert ev.kind is EV.LoginKind.NAME_REGISTERED
    assert ev.message == "That name is registered: log in, or pick another."


def test_create_when_registration_is_closed(make_server: Factory, connect: Connect) -> None:
    srv = make_server(registration="closed")
    _s, w = connect(srv, "hopeful", create=True)
    ev = w.wait(EV.LoginFailed)
    assert ev.kind is EV.LoginKind.REGISTRATION_CLOSED
    assert ev.message.startswith("Registration is closed on this server")


def test_passwords_are_checked_before_anything_is_sent() -> None:
    assert S.password_problem("same", "same") is None
    assert S.password_problem("é" * 150, "é" * 150) is None  # 300 bytes
    assert S.password_problem("typed", None) is None  # logging in: nothing to confirm
    where, words = S.password_problem("one", "two") or ("", "")
    assert where == "confirm" and "not the same" in words
    assert S.password_problem("", "")[0:1] == ("password",)  # type: ignore[index]
    where, words = S.password_problem("é" * 151) or ("", "")
    assert where == "password" and "1 to 300 bytes" in words
    assert S.password_problem("two\nlines")[0] == "password"  # type: ignore[index]


def test_plain_response_chunks() -> None:
    """400-byte chunks; a response that fills its last chunk is ended with ``+``."""
    for name, password in [("a", "b"), ("e4", "x" * (300 - len("\0e4\0"))),
                           ("chunky", "p" * 298 + "é")]:
        lines = S.sasl_plain_lines(name, password).decode().split("\r\n")[:-1]
        chunks = [ln.split(" ", 1)[1] for ln in lines]
        assert all(ln.startswith("AUTHENTICATE ") for ln in lines)
        assert all(len(c) <= 400 for c in chunks)
        body = "".join(c for c in chunks if c != "+")
        assert base64.b64decode(body) == f"\0{name}\0{password}".encode()
        assert (chunks[-1] == "+") == (len(body) % 400 == 0)


def test_long_passwords_log_in(srv: RunningServer, connect: Connect) -> None:
    """300 bytes (two chunks), and one whose response is exactly 400 base64 bytes."""
    for name, password in [("chunky", "p" * 298 + "é"), ("e4", "x" * 294)]:
        make_account(srv, name, password)
        _s, w = connect(srv, name, password)
        assert w.wait(EV.LoggedIn).account == name


# --- servers without accounts ---------------------------------------------------------------


def test_a_server_without_accounts(make_server: Factory, connect: Connect,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "CAPABILITIES",
                        tuple(c for c in handlers.CAPABILITIES if c != "sasl"))
    srv = make_server(registration="closed")  # no sasl, no draft/account-registration
    for create in (False, True):
        _s, w = connect(srv, "alice", create=create)
        ev = w.wait(EV.LoginFailed)
        assert ev.kind is EV.LoginKind.NO_ACCOUNTS
        assert ev.message.startswith("This server has no accounts")
        assert not any(isinstance(e, EV.Registered) for e in w.seen)


def test_a_server_without_cap_registers_us_anyway(fake: FakeServer, connect: Connect) -> None:
    """No CAP at all: the welcome comes without a login; the session says so and leaves."""
    _s, w = connect(fake, "alice")
    peer = fake.peer()
    peer.welcome("alice")
    ev = w.wait(EV.LoginFailed)
    assert ev.kind is EV.LoginKind.NO_ACCOUNTS
    peer.expect("QUIT")
    assert not any(isinstance(e, EV.Registered) for e in w.seen)


def offer(peer: FakePeer, caps: str = "sasl=PLAIN draft/account-registration=before-connect"
          ) -> None:
    """Answer the session's CAP LS with ``caps`` and ACK what it asks for."""
    peer.expect("CAP LS")
    peer.send(f":fake.server CAP * LS :{caps}")
    asked = peer.expect("CAP REQ").split(":", 1)[1]
    peer.send(f":fake.server CAP * ACK :{asked}")


@pytest.mark.parametrize(("create", "reply", "kind", "words"), [
    (False, ("904 * :SASL authentication failed: passwords are only accepted over TLS (port "
             "6697)"), EV.LoginKind.INSECURE, "only accepted over an encrypted connection"),
    (False, "904 * :SASL authentication failed: too many failed attempts: try again in 40 s",
     EV.LoginKind.THROTTLED, "Too many tries: wait 40 s"),
    (False, "905 * :SASL message too long", EV.LoginKind.BAD_ACCOUNT_PASSWORD,
     "1 to 300 bytes"),
    (True, ("FAIL REGISTER INSECURE_CONNECTION alice :Passwords are only accepted over TLS: "
            "connect to port 6697"), EV.LoginKind.INSECURE, "tick “Use TLS”"),
    (True, ("FAIL REGISTER TEMPORARILY_UNAVAILABLE alice :Registration is closed on this "
            "server: ask its administrator for an account"), EV.LoginKind.REGISTRATION_CLOSED,
     "Registration is closed on this server"),
    (True, ("FAIL REGISTER TEMPORARILY_UNAVAILABLE alice :Too many new accounts from your "
            "address: try again in 1200 s"), EV.LoginKind.THROTTLED, "wait 1200 s"),
    (True, "FAIL REGISTER UNACCEPTABLE_PASSWORD alice :the password must be 1 to 300 bytes",
     EV.LoginKind.BAD_ACCOUNT_PASSWORD, "1 to 300 bytes"),
    (True, "FAIL REGISTER BAD_ACCOUNT_NAME alice :Guest and a number is a guest's name",
     EV.LoginKind.BAD_NICK, "will not make an account called “alice”"),
])
def test_refusals_in_words(fake: FakeServer, connect: Connect, create: bool, reply: str,
                           kind: EV.LoginKind, words: str) -> None:
    _s, w = connect(fake, "alice", create=create)
    peer = fake.peer()
    offer(peer)
    if create:
        assert peer.expect("REGISTER") == f"REGISTER * * :{PW}"
    else:
        peer.expect("AUTHENTICATE PLAIN")
        peer.send("AUTHENTICATE +")
        peer.expect("AUTHENTICATE ")
    peer.send(f":fake.server {reply}")
    ev = w.wait(EV.LoginFailed)
    assert ev.kind is kind and words in ev.message, ev
    for jargon in ("SASL", "904", "FAIL", "REGISTER", "PLAIN"):
        assert jargon not in ev.message
    if kind is EV.LoginKind.INSECURE:
        assert ev.tls_port == 6697


# --- reconnects ---------------------------------------------------------------------------


def test_reconnect_logs_in_again(srv: RunningServer, connect: Connect) -> None:
    s, w = connect(srv, "maker", create=True)
    assert w.wait(EV.LoggedIn).created
    w.wait(EV.Joined)
    with srv.server.reg.lock:
        victim = srv.server.reg.nicks["maker"]
    srv.server.kill(victim, "testing")
    assert w.wait(EV.Disconnected).will_retry
    # The account exists now: the reconnect logs in to it, it does not create it again.
    assert w.wait(EV.LoggedIn) == EV.LoggedIn("maker", created=False)
    assert w.wait(EV.Joined).rejoined
    assert account_of(srv, "maker") == "maker"
    assert s.nick == "maker"


def test_a_wrong_password_on_reconnect_is_final(srv: RunningServer, connect: Connect) -> None:
    make_account(srv, "alice")
    _s, w = connect(srv, "alice")
    w.wait(EV.Joined)
    srv.server.hub.accounts.set_password("alice", "changed elsewhere")  # type: ignore[union-attr]
    with srv.server.reg.lock:
        victim = srv.server.reg.nicks["alice"]
    srv.server.kill(victim, "testing")
    assert w.wait(EV.LoginFailed).kind is EV.LoginKind.WRONG_PASSWORD
    w.wait(EV.Closed)


# --- guests on registered names -------------------------------------------------------------


def test_guest_on_a_registered_name_is_warned_then_renamed(make_server: Factory,
                                                           connect: Connect) -> None:
    srv = make_server(nick_grace=1)
    make_account(srv, "bob")
    s, w = connect(srv, "bob", None)
    warning = w.wait(EV.RenameWarning)
    assert (warning.nick, warning.seconds) == ("bob", 1.0)
    w.wait(EV.Joined)
    renamed = w.wait(EV.UserRenamed, timeout=5)
    assert renamed.is_self and renamed.forced and renamed.old == "bob"
    assert renamed.new.startswith("Guest") and s.nick == renamed.new
    # The server's notice about it is not shown again as a notice.
    w.none_of(EV.Notice, wait=0.3)
    assert not any(isinstance(e, EV.Notice) and "registered" in e.text for e in w.seen)
    # A name change the user asks for is not "forced".
    assert s.change_nick("bobby")
    assert not w.wait(EV.UserRenamed).forced


def test_a_members_only_server_refuses_a_guest_at_once(make_server: Factory,
                                                       connect: Connect) -> None:
    srv = make_server(require_account=True)
    _s, w = connect(srv, "guest", None, join_timeout=30.0)
    ev = w.wait(EV.LoginFailed, timeout=3)  # not after the join timeout
    assert ev.kind is EV.LoginKind.ACCOUNT_REQUIRED and "log in" in ev.message
    make_account(srv, "member")
    _s2, w2 = connect(srv, "member")
    w2.wait(EV.Joined)


# --- the password stays secret --------------------------------------------------------------


def test_the_password_reaches_no_log_and_no_repr(srv: RunningServer, connect: Connect,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "Sw0rdfish-unique-9137"
    s, w = connect(srv, "carol", secret, create=True)
    w.wait(EV.Joined)
    s.close()
    _s2, w2 = connect(srv, "carol", "wrong-unique-5521")
    w2.wait(EV.LoginFailed)
    _s3, w3 = connect(srv, "carol", secret)
    w3.wait(EV.Joined)
    encoded = base64.b64encode(f"\0carol\0{secret}".encode()).decode()
    text = caplog.text + "".join(repr(e) for e in w.seen + w2.seen + w3.seen)
    text += repr(S.Credentials("carol", secret)) + str(S.Credentials("carol", secret))
    for leak in (secret, "wrong-unique-5521", encoded):
        assert leak not in text
    assert "logged in to" in caplog.text  # the login itself is logged, by name
    assert s._account is None  # the password went with the closed session


# --- the remembered password file -----------------------------------------------------------


def test_remembered_passwords_file(tmp_path: Path) -> None:
    store = PasswordStore(tmp_path / "conf" / "chatroom" / "passwords.json")
    assert store.get("127.0.0.1", 1027, "alice") is None and store.latest("h", 1) is None
    store.set("127.0.0.1", 1027, "alice", "pw-a")
    store.set("127.0.0.1", 1027, "Bob", "pw-b")
    store.set("other.example", 1027, "alice", "pw-other")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    assert not [p for p in store.path.parent.iterdir() if p.name.endswith(".tmp")]
    assert store.get("127.0.0.1", 1027, "ALICE") == "pw-a"  # per host:port:name
    assert store.get("127.0.0.1", 1028, "alice") is None
    assert store.latest("127.0.0.1", 1027) == ("Bob", "pw-b")
    assert "pw-" not in repr(store)
    assert store.remove("127.0.0.1", 1027, "bob") and not store.remove("127.0.0.1", 1027, "bob")
    assert store.remove("127.0.0.1", 1027, "alice")
    assert store.remove("other.example", 1027, "alice")
    assert not store.path.exists()  # gone with its last entry
    # A damaged file holds nothing, and the next save replaces it.
    store.path.write_text("{not json")
    assert store.get("127.0.0.1", 1027, "alice") is None
    store.set("127.0.0.1", 1027, "alice", "again")
    assert store.get("127.0.0.1", 1027, "alice") == "again"


def test_the_default_file_is_in_the_config_directory(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    store = PasswordStore()
    assert store.path == tmp_path / "chatroom" / "passwords.json"
    store.set("h", 1, "n", "p")
    assert oct(os.stat(store.path).st_mode & 0o777) == "0o600"
