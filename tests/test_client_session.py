"""ChatSession against a real server on an ephemeral port: no display, no mocks."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from conftest import FakeServer, RunningServer, blackhole, free_port

from chatroom import events as EV
from chatroom import lines as LN
from chatroom import protocol as P
from chatroom import serverinfo as SI
from chatroom import session as S

E = TypeVar("E", bound=EV.Event)
FAST = S.Backoff(initial=0.05, factor=2.0, maximum=0.3, jitter=0.5)


class Watcher:
    """Reads a session's events with a deadline and keeps everything it has seen."""

    def __init__(self, session: S.ChatSession) -> None:
        self.session = session
        self.seen: list[EV.Event] = []

    def wait(self, kind: type[E], pred: Callable[[E], bool] = lambda e: True,
             timeout: float = 5.0) -> E:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind.__name__} within {timeout}s; saw {self.seen}")
            try:
                ev = self.session.events.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(ev)
            if isinstance(ev, kind) and pred(ev):
                return ev

    def none_of(self, kind: type[EV.Event], wait: float = 0.2) -> None:
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            try:
                ev = self.session.events.get(timeout=left)
            except queue.Empty:
                return
            self.seen.append(ev)
            assert not isinstance(ev, kind), f"unexpected {ev}"


@pytest.fixture
def connect() -> Iterator[Callable[..., tuple[S.ChatSession, Watcher]]]:
    made: list[S.ChatSession] = []

    def factory(srv: RunningServer | tuple[str, int], nick: str, *, join: bool = True,
                **kw: object) -> tuple[S.ChatSession, Watcher]:
        host, port = srv.address if isinstance(srv, RunningServer) else srv
        kw.setdefault("backoff", FAST)
        s = S.ChatSession(host, port, nick, **kw)  # type: ignore[arg-type]
        made.append(s)
        w = Watcher(s)
        s.start()
        if join:
            w.wait(EV.Registered)
            w.wait(EV.Joined)
            w.wait(EV.Names)
        return s, w

    yield factory
    for s in made:
        s.close(timeout=2.0)
    for s in made:
        assert not s.alive, "session threads still running after close()"


def test_register_join_and_names(srv: RunningServer,
                                 connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    s, w = connect(srv, "alice")
    assert s.state == "joined" and s.in_room
    assert s.members == ("@alice",)  # the creator of the room is its operator
    assert s.count == 1
    reg = next(e for e in w.seen if isinstance(e, EV.Registered))
    assert reg == EV.Registered("alice", "chat.test")
    assert EV.Joined("#chat", "alice", False) in w.seen


def test_motd_376_path_and_motd_shown(make_server: Callable[..., RunningServer],
                                      connect: Callable[..., tuple[S.ChatSession, Watcher]]
                                      ) -> None:
    srv = make_server(motd=["Be nice"])
    _s, w = connect(srv, "alice")
    assert any(isinstance(e, EV.Notice) and "Be nice" in e.text for e in w.seen)


def test_send_and_receive(srv: RunningServer,
                          connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    a, aw = connect(srv, "alice")
    b, bw = connect(srv, "bob")
    aw.wait(EV.UserJoined, lambda e: e.nick == "bob")
    assert a.send_message("hello 😀 wörld")
    m = bw.wait(EV.Message)
    assert (m.sender, m.target, m.text, m.private, m.action) == (
        "alice", "#chat", "hello 😀 wörld", False, False)
    assert b.send_action("waves")
    m = aw.wait(EV.Message)
    assert (m.sender, m.text, m.action, m.private) == ("bob", "waves", True, False)
    assert b.send_private("alice", "psst")
    m = aw.wait(EV.Message)
    assert (m.sender, m.target, m.text, m.private) == ("bob", "alice", "psst", True)
    # Two lines in one call become two messages; blank input is refused.
    # Two lines in one call: one message of two lines (draft/multiline, which both have).
    assert a.send_message("one\ntwo")
    assert bw.wait(EV.Message).text == "one\ntwo"
    assert not a.send_message("   ")


def test_long_message_is_split_without_loss(
        make_server: Callable[..., RunningServer],
        connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    text = ("word🙂 " * 200).strip()  # about 1,800 bytes
    # A server without draft/multiline: several messages, cut at spaces, nothing lost.
    plain = make_server(multiline=False)
    a, _ = connect(plain, "alice")
    _b, bw = connect(plain, "bob")
    assert a.multiline is None
    assert a.send_message(text)
    got = []
    while "".join(got) != text:
        got.append(bw.wait(EV.Message).text)
        assert len(got) < 10
    assert len(got) > 1
    # With it: one message, its pieces joined by the concat tag, exactly the text sent;
    # a client without the cap gets the pieces as lines.
    srv = make_server()
    a, _ = connect(srv, "alice")
    _b, bw = connect(srv, "bob")
    raw = srv.client("raw", "#chat")
    assert a.multiline == S.MultilineLimits(4096, 100)
    assert a.send_message(text)
    assert bw.wait(EV.Message).text == text
    seen = raw.expect(lambda ln: ln.endswith(text[-20:]))
    pieces = [ln.split(" :", 1)[1] for ln in seen if " PRIVMSG #chat :" in ln]
    assert len(pieces) > 1 and "".join(pieces) == text


def test_counts_follow_join_part_quit_nick_kick(
        srv: RunningServer, connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    boss = srv.client("boss", "#chat")  # first in, so the room's operator
    a, w = connect(srv, "alice")
    assert a.members == ("@boss", "alice") and a.count == 2
    carol = srv.client("carol", "#chat")
    assert w.wait(EV.UserJoined).members == ("@boss", "alice", "carol")
    carol.send("NICK caroline")
    ev = w.wait(EV.UserRenamed)
    assert (ev.old, ev.new, ev.is_self, ev.members) == ("carol", "caroline", False,
                                                        ("@boss", "alice", "caroline"))
    carol.send("PART #chat :bye")
    ev2 = w.wait(EV.UserLeft)
    assert (ev2.nick, ev2.reason, ev2.members, ev2.kicked_by) == ("caroline", "bye",
                                                                  ("@boss", "alice"), None)
    dave = srv.client("dave", "#chat")
    w.wait(EV.UserJoined, lambda e: e.nick == "dave")
    dave.send("QUIT :gone home")
    ev3 = w.wait(EV.UserQuit)
    assert (ev3.nick, ev3.reason, ev3.members) == ("dave", "Quit: gone home",
                                                   ("@boss", "alice"))
    srv.client("eve", "#chat")
    w.wait(EV.UserJoined, lambda e: e.nick == "eve")
    boss.send("KICK #chat eve :rude")
    ev4 = w.wait(EV.UserLeft)
    assert (ev4.nick, ev4.kicked_by, ev4.reason, ev4.members) == ("eve", "boss", "rude",
                                                                  ("@boss", "alice"))
    boss.send("MODE #chat +v alice")
    assert w.wait(EV.Names).members == ("@boss", "+alice")
    boss.send("KICK #chat alice :out")
    left = w.wait(EV.Left)
    assert (left.room, left.kicked_by, left.reason) == ("#chat", "boss", "out")
    assert a.count == 0 and not a.in_room and not a.send_message("anyone?")


def test_names_over_several_lines_with_prefixes(
        srv: RunningServer, connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    boss = srv.client("boss", "#chat")
    others = [f"member{i:02d}_with_a_long_name"[:30] for i in range(40)]
    for nick in others:
        srv.client(nick, "#chat")
    boss.send(f"MODE #chat +v {others[0]}")
    boss.lines_until("MODE")
    a, w = connect(srv, "alice")  # its JOIN brings NAMES in several 353 lines
    assert a.count == 42
    assert a.members[:2] == ("@boss", "+" + others[0])
    assert a.request_names()
    names = w.wait(EV.Names)
    assert names.count == 42 == a.count
    assert sorted(m.lstrip("@+") for m in names.members) == sorted(others + ["alice", "boss"])


def test_rename_self(srv: RunningServer,
                     connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    _a, aw = connect(srv, "alice")
    b, bw = connect(srv, "bob")
    assert b.change_nick("robert")
    ev = bw.wait(EV.UserRenamed)
    assert (ev.old, ev.new, ev.is_self) == ("bob", "robert", True)
    assert b.nick == "robert" and "robert" in b.members
    assert aw.wait(EV.UserRenamed).new == "robert"
    # A taken name after registration is an error in words, and the name stays.
    assert b.change_nick("alice")
    err = bw.wait(EV.ServerError)
    assert err.code == "433" and "taken" in err.text
    assert b.nick == "robert"
    assert not b.change_nick("9lives")  # invalid names are refused before sending


def test_topic(srv: RunningServer, connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    a, aw = connect(srv, "alice")
    assert a.set_topic("Welcome 🎉")
    t = aw.wait(EV.Topic)
    assert (t.text, t.by) == ("Welcome 🎉", "alice")
    b, bw = connect(srv, "bob", join=False)
    t2 = bw.wait(EV.Topic)
    assert (t2.room, t2.text, t2.by) == ("#chat", "Welcome 🎉", None)
    bw.wait(EV.Names)
    assert b.set_topic("mine")  # only operators may: an error in words comes back
    assert "operator" in bw.wait(EV.ServerError).text


def test_private_to_unknown_nick_is_an_error(
        srv: RunningServer, connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    a, w = connect(srv, "alice")
    assert a.send_private("nobody", "hi")
    assert "nobody" in w.wait(EV.ServerError, lambda e: e.code == "401").text


def test_leave(srv: RunningServer, connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    _a, aw = connect(srv, "alice")
    b, bw = connect(srv, "bob")
    b.leave("see you")
    ev = aw.wait(EV.UserLeft)
    assert (ev.nick, ev.reason, ev.members) == ("bob", "see you", ("@alice",))
    bw.wait(EV.Closed)
    b.close()
    assert not b.alive
    assert not b.send_message("too late")
    assert srv.wait_for(lambda: "bob" not in srv.server.reg.nicks)
    aw.none_of(EV.UserQuit)  # PART first, so the room sees a leave, not a quit


def test_ping_is_answered(make_server: Callable[..., RunningServer],
                          connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    srv = make_server(ping_interval=0.15, ping_timeout=0.3)
    a, w = connect(srv, "alice", keepalive=30.0)
    joined_at = time.monotonic()
    w.none_of(EV.Disconnected, wait=1.0)
    assert a.state == "joined"
    # With its own keep-alive far off, the only lines it sent since are its PONGs.
    assert srv.server.reg.nicks["alice"].last_active > joined_at + 0.3


def test_send_never_blocks(srv: RunningServer,
                           connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    a, _ = connect(srv, "alice", max_outgoing=50)
    start = time.monotonic()
    results = [a.send_message(f"line {i}") for i in range(2000)]
    assert time.monotonic() - start < 0.5
    assert results[0] and False in results  # what does not fit is refused, not waited for


def _kill(srv: RunningServer, nick: str, reason: str) -> None:
    with srv.server.reg.lock:
        victim = srv.server.reg.nicks[nick]
    srv.server.kill(victim, reason)


def test_reconnect_after_server_kills_the_connection(
        srv: RunningServer, connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    _a, aw = connect(srv, "alice")
    b, bw = connect(srv, "bob")
    aw.wait(EV.UserJoined)
    _kill(srv, "bob", "testing")
    d = bw.wait(EV.Disconnected)
    assert d.will_retry and "testing" in d.reason
    r = bw.wait(EV.Reconnecting)
    assert r.attempt == 1 and 0 < r.delay <= FAST.initial
    assert bw.wait(EV.Registered).nick == "bob"
    assert bw.wait(EV.Joined).rejoined
    assert bw.wait(EV.Names).members == ("@alice", "bob")
    assert aw.wait(EV.UserQuit).nick == "bob"
    assert aw.wait(EV.UserJoined).members == ("@alice", "bob")
    assert b.send_message("back")
    assert aw.wait(EV.Message).text == "back"


def test_reconnect_after_server_restart_on_same_port(
        make_server: Callable[..., RunningServer],
        connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    first = make_server()
    port = first.address[1]
    a, w = connect(first, "alice")
    first.stop()
    assert w.wait(EV.Disconnected).will_retry
    w.wait(EV.Reconnecting)
    w.wait(EV.Reconnecting)  # the port is closed for now: it keeps trying, backing off
    second = make_server(port=port)
    assert second.address[1] == port
    assert w.wait(EV.Joined).rejoined
    assert a.nick == "alice" and a.members == ("@alice",)
    delays = [e.delay for e in w.seen if isinstance(e, EV.Reconnecting)]
    assert all(d <= FAST.maximum for d in delays)


def test_default_backoff_suits_a_chat() -> None:
    b = S.Backoff()
    assert all(0.4 <= b.delay(1) <= 1.0 for _ in range(50))  # the first retry is quick
    assert all(b.delay(n) <= 15.0 for n in range(1, 40) for _ in range(5))
    assert max(b.delay(30) for _ in range(50)) > 10.0  # but it does back off


def test_backoff_grows_with_jitter() -> None:
    b = S.Backoff(initial=1.0, factor=2.0, maximum=10.0, jitter=0.5)
    for attempt, base in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 10.0), (50, 10.0)]:
        values = {b.delay(attempt) for _ in range(20)}
        assert all(base * 0.5 <= v <= base for v in values)
        assert len(values) > 1


def test_bad_name(srv: RunningServer,
                  connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    _s, w = connect(srv, "9lives", join=False)
    ev = w.wait(EV.LoginFailed)
    assert ev.kind is EV.LoginKind.BAD_NICK and "9lives" in ev.message
    w.wait(EV.Closed)


def test_taken_name(srv: RunningServer,
                    connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    srv.client("alice")
    s, w = connect(srv, "ALICE", join=False)  # names compare without case
    ev = w.wait(EV.LoginFailed)
    assert ev.kind is EV.LoginKind.NICK_TAKEN and "taken" in ev.message
    w.wait(EV.Closed)
    s.close()
    assert not s.alive


def test_wrong_missing_and_right_password(
        make_server: Callable[..., RunningServer],
        connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    srv = make_server(password="sesame")
    _, w = connect(srv, "alice", password="wrong", join=False)
    ev = w.wait(EV.LoginFailed)
    assert ev.kind is EV.LoginKind.BAD_PASSWORD and "password" in ev.message
    _, w2 = connect(srv, "alice", join=False)
    ev2 = w2.wait(EV.LoginFailed)
    assert ev2.kind is EV.LoginKind.BAD_PASSWORD and "needs a password" in ev2.message
    # The server may still hold the name for the refused connection for a moment.
    assert srv.wait_for(lambda: "alice" not in srv.server.reg.nicks)
    s3, _ = connect(srv, "alice", password="sesame")
    assert s3.in_room



def test_connection_refused(connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    _, w = connect(("127.0.0.1", free_port()), "alice", join=False)
    ev = w.wait(EV.LoginFailed)
    assert ev.kind is EV.LoginKind.REFUSED and "server running" in ev.message


def test_unknown_host(connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    # .invalid never resolves (RFC 6761); offline, the lookup is cut off at connect_timeout.
    _, w = connect(("no-such-host.invalid", 1027), "alice", join=False, connect_timeout=2.0)
    ev = w.wait(EV.LoginFailed, timeout=4.0)
    assert ev.kind is EV.LoginKind.UNREACHABLE and "host name" in ev.message


def test_not_a_chat_server(connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        _, w = connect(listener.getsockname(), "alice", join=False, register_timeout=0.3)
        ev = w.wait(EV.LoginFailed)
        assert ev.kind is EV.LoginKind.UNREACHABLE and "did not answer" in ev.message


def test_close_ends_threads_and_quits(srv: RunningServer,
                                      connect: Callable[..., tuple[S.ChatSession, Watcher]]
                                      ) -> None:
    _a, aw = connect(srv, "alice")
    b, _ = connect(srv, "bob")

    def bobs_threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.endswith("-bob")]

    assert sorted(bobs_threads()) == ["chat-net-bob", "chat-send-bob"]
    b.quit("off to bed")
    b.close(timeout=2.0)
    assert not b.alive
    assert bobs_threads() == []
    assert aw.wait(EV.UserQuit).reason == "Quit: off to bed"


def test_close_while_reconnecting(make_server: Callable[..., RunningServer],
                                  connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    srv = make_server()
    s, w = connect(srv, "alice", backoff=S.Backoff(initial=5.0, maximum=5.0, jitter=0.0))
    srv.stop()
    w.wait(EV.Reconnecting)
    start = time.monotonic()
    s.close(timeout=2.0)
    assert not s.alive and time.monotonic() - start < 1.0


def test_quick_drops_back_off_further_and_stable_ones_start_afresh(
        srv: RunningServer, connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    a, w = connect(srv, "alice")
    _kill(srv, "alice", "first")
    assert w.wait(EV.Reconnecting).attempt == 1
    w.wait(EV.Joined)
    assert srv.wait_for(lambda: "alice" in srv.server.reg.nicks)
    _kill(srv, "alice", "again at once")
    assert w.wait(EV.Reconnecting).attempt == 2  # dropped right after joining: keep backing off
    w.wait(EV.Joined)
    a.STABLE_AFTER = 0.0  # now count the connection as having been up a good while
    assert srv.wait_for(lambda: "alice" in srv.server.reg.nicks)
    _kill(srv, "alice", "after a long time")
    assert w.wait(EV.Reconnecting).attempt == 1
    w.wait(EV.Joined)


# --- connecting, quitting, reconnecting ---------------------------------------------------


def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_close_during_connect_is_immediate(
        connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    with blackhole() as address:
        s, w = connect(address, "alice", join=False, connect_timeout=30.0)
        _until(lambda: s.state == "connecting")
        start = time.monotonic()
        s.close(timeout=5.0)
        assert time.monotonic() - start < 1.0, "close() waited for the connect"
        assert not s.alive
        w.wait(EV.Closed)
        assert not any(isinstance(e, EV.LoginFailed) for e in w.seen)  # cancelled, quietly


def test_closing_many_sessions_shares_one_deadline(
        connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    with blackhole() as address:
        sessions = [connect(address, f"user{i}", join=False, connect_timeout=30.0)[0]
                    for i in range(4)]
        _until(lambda: all(s.state == "connecting" for s in sessions))
        start = time.monotonic()
        S.close_sessions(sessions, timeout=2.0)
        assert time.monotonic() - start < 1.0
        assert not any(s.alive for s in sessions)


class _QuitAsItConnects(S.ChatSession):
    """The user gives up just as the connection is being made (after the stop check)."""

    def _resolve(self) -> list[tuple[object, ...]]:
        infos = super()._resolve()
        self.quit()
        return infos


def test_quit_racing_the_connect_never_registers(srv: RunningServer) -> None:
    s = _QuitAsItConnects(*srv.address, "alice", backoff=FAST)
    w = Watcher(s)
    s.start()
    w.wait(EV.Closed)
    s.close()
    assert not any(isinstance(e, (EV.Registered, EV.LoginFailed)) for e in w.seen)
    assert srv.wait_for(lambda: not srv.server.reg.clients)


class _QuitAfterHello(S.ChatSession):
    """quit() after NICK/USER went out, before the welcome."""

    def _write_now(self, conn: S._Conn, data: bytes) -> None:
        super()._write_now(conn, data)
        if b"USER " in data:
            self.quit()


def test_quit_during_registration_leaves_nothing_behind(srv: RunningServer) -> None:
    s = _QuitAfterHello(*srv.address, "alice", backoff=FAST)
    w = Watcher(s)
    s.start()
    w.wait(EV.Closed)
    s.close()
    assert not any(isinstance(e, (EV.Joined, EV.LoginFailed)) for e in w.seen)
    assert srv.wait_for(lambda: "alice" not in srv.server.reg.nicks)
    assert srv.wait_for(lambda: not srv.server.reg.channels.get("#chat"))


def test_name_in_use_when_reconnecting_is_said_then_given_up(
        fake: FakeServer, connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    s, w = connect(fake.address, "alice", join=False)
    first = fake.peer()
    first.welcome()
    first.join()
    w.wait(EV.Names)
    first.close()  # the connection drops; our old self still holds the name
    assert w.wait(EV.Disconnected).will_retry
    for tries_left in (2, 1):
        peer = fake.peer()
        peer.expect("USER")
        peer.send(":fake.server 433 * alice :Nickname is already in use")
        err = w.wait(EV.ServerError)
        assert err.code == "433" and "in use on the server" in err.text
        assert f"{tries_left} more tr" in err.text
        assert w.wait(EV.Reconnecting).name_in_use
    last = fake.peer()
    last.expect("USER")
    last.send(":fake.server 437 * alice :Nick/channel is temporarily unavailable")
    failed = w.wait(EV.LoginFailed)
    assert failed.kind is EV.LoginKind.NICK_TAKEN and "Back to Login" in failed.message
    w.wait(EV.Closed)
    s.close()
    assert not s.alive


def test_unavailable_name_at_login_is_taken(
        fake: FakeServer, connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    _, w = connect(fake.address, "alice", join=False)
    fake.peer().send(":fake.server 437 * alice :Nick/channel is temporarily unavailable")
    assert w.wait(EV.LoginFailed).kind is EV.LoginKind.NICK_TAKEN


def test_rejoin_refused_after_reconnect_says_why_and_stays_connected(
        srv: RunningServer, connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    boss = srv.client("boss", "#chat")
    _a, w = connect(srv, "alice")
    boss.send("MODE #chat +b alice!*@*")
    boss.lines_until("MODE")
    _kill(srv, "alice", "drop")
    w.wait(EV.Disconnected)
    left = w.wait(EV.Left)
    assert left.refused and left.room == "#chat"
    assert "back into #chat" in left.reason and "banned" in left.reason
    # Still connected, in no room: the others rooms (none here) and /join still work.
    assert srv.wait_for(lambda: _a.state == "joined" and not _a.in_room)
    assert _a.rooms == ()
    assert _a.join("#elsewhere")
    assert w.wait(EV.Joined).room == "#elsewhere"


def test_join_refused_with_any_error_naming_the_room(
        fake: FakeServer, connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    _, w = connect(fake.address, "alice", join=False)
    peer = fake.peer()
    peer.welcome()
    peer.expect("JOIN #chat")
    peer.send(":fake.server 477 alice #chat :Cannot join channel (+r) - you need to be "
              "logged into your NickServ account")
    failed = w.wait(EV.LoginFailed)
    assert failed.kind is EV.LoginKind.JOIN_REFUSED and "NickServ" in failed.message
    w.wait(EV.Closed)


def test_join_without_an_answer_times_out(
        fake: FakeServer, connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    _, w = connect(fake.address, "alice", join=False, join_timeout=0.3)
    peer = fake.peer()
    peer.welcome()
    peer.expect("JOIN #chat")  # and never answer it
    failed = w.wait(EV.LoginFailed)
    assert failed.kind is EV.LoginKind.JOIN_REFUSED and "did not answer" in failed.message


def test_rejoin_after_kick(srv: RunningServer,
                           connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    boss = srv.client("boss", "#chat")
    a, w = connect(srv, "alice")
    boss.send("KICK #chat alice :out")
    w.wait(EV.Left)
    assert a.rejoin()
    joined = w.wait(EV.Joined)
    assert joined.rejoined and a.in_room
    assert w.wait(EV.Names).members == ("@boss", "alice")
    assert not a.rejoin()  # already in


# --- what other servers send --------------------------------------------------------------


def test_invalid_utf8_and_long_lines_from_the_server(
        fake: FakeServer, connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    a, w = connect(fake.address, "alice", join=False)
    peer = fake.peer()
    peer.welcome()
    peer.join(names=["alice", "bob", "carol"])
    assert w.wait(EV.Names).count == 3
    peer.send(b":bob!b@h QUIT :caf\xe9 au lait")  # Latin-1
    quit_ = w.wait(EV.UserQuit)
    assert (quit_.nick, quit_.reason) == ("bob", "caf\ufffd au lait")
    assert a.members == ("alice", "carol")
    peer.send(b":carol!c@h PRIVMSG #chat :\xff\xfehi \xf0\x9f\x98\x80")
    assert w.wait(EV.Message).text == "\ufffd\ufffdhi 😀"
    # A NAMES line far over 512 bytes still counts everyone.
    assert a.request_names()
    peer.expect("NAMES #chat")
    many = [f"member{i:03d}" for i in range(100)]
    peer.send(f":fake.server 353 alice = #chat :alice {' '.join(many)}",
              ":fake.server 366 alice #chat :End of /NAMES list.")
    assert w.wait(EV.Names).count == 101


def test_parse_incoming_is_lenient() -> None:
    m = S.parse_incoming(b"@time=2024-01-01T00:00:00Z :n!u@h PRIVMSG #c :\xe9" + b"x" * 700)
    assert m is not None and m.command == "PRIVMSG" and m.params[0] == "#c"
    assert m.params[1] == "\ufffd" + "x" * 700 and m.tags == {"time": "2024-01-01T00:00:00Z"}
    assert S.parse_incoming(b":only.a.source") is None
    assert S.parse_incoming(b"PING :x\r").params == ("x",)  # type: ignore[union-attr]


def test_another_servers_isupport(
        fake: FakeServer, connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    a, w = connect(fake.address, "alice", join=False)
    peer = fake.peer()
    peer.welcome("alice", "PREFIX=(qaohv)~&@%+", "CHANMODES=beI,k,l,imnpst",
                 "CASEMAPPING=rfc1459", "NICKLEN=9", "TOPICLEN=80")
    peer.join(names=["alice", "+cy", "%bo", "@op", "&admin", "~owner", "Dan[1]", "plain"])
    assert w.wait(EV.Names).members == ("~owner", "&admin", "@op", "%bo", "+cy", "alice",
                                       "Dan[1]", "plain")
    assert (a.nicklen, a.topiclen) == (9, 80)
    assert a.server_info.casemapping == "rfc1459"
    assert not a.change_nick("ninechars0")  # 10 > NICKLEN
    assert a.nick_problem("ninechars0") == "a name is at most 9 characters"
    # l takes a parameter only when set, k always, h and v are member prefixes.
    peer.send(":op!o@h MODE #chat +lh-k+v 50 plain * alice")
    assert w.wait(EV.Names).members == ("~owner", "&admin", "@op", "%bo", "%plain", "+alice",
                                       "+cy", "Dan[1]")
    # +o on the owner keeps ~ (and -q then shows the @ underneath).
    peer.send(":op!o@h MODE #chat +o owner", ":op!o@h MODE #chat -q owner")
    w.wait(EV.Names)
    assert w.wait(EV.Names).members[:3] == ("&admin", "@op", "@owner")
    # rfc1459: [ ] \\ ~ fold to { } | ^, so dan{1} is Dan[1].
    peer.send(":dan{1}!d@h QUIT :bye")
    assert w.wait(EV.UserQuit).nick == "dan{1}"
    assert "Dan[1]" not in a.members


def test_server_info_defaults_and_tokens() -> None:
    d = SI.ServerInfo()
    assert (d.prefix_modes, d.prefix_symbols, d.casemapping) == ("ov", "@+", "rfc1459")
    assert d.fold("Nick[A]~") == "nick{a}^"
    i = d.updated(["CASEMAPPING=ascii", "PREFIX=(yqaohv)!~&@%+", "TOPICLEN=", "NICKLEN=16"])
    assert i.fold("Nick[A]") == "nick[a]" and i.prefix_symbols == "!~&@%+"
    assert (i.nicklen, i.topiclen) == (16, None)
    assert i.updated(["-PREFIX", "-NICKLEN"]).prefix_symbols == "@+"
    assert i.updated(["PREFIX=(ov)@"]).prefix_symbols == "!~&@%+"  # malformed: kept
    assert i.split_member("!~nick!u@h") == ("nick", "!~")


# --- sending ---------------------------------------------------------------------------------


def test_lone_surrogate_from_tk_is_replaced(
        srv: RunningServer, connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    a, _ = connect(srv, "alice")
    _, bw = connect(srv, "bob")
    assert a.send_message("half \ud83d an emoji")
    assert bw.wait(EV.Message).text == "half \ufffd an emoji"
    assert a.send_message("pair \ud83d\ude00 joined")
    assert bw.wait(EV.Message).text == "pair 😀 joined"
    assert a.set_topic("topic \udcff")
    assert bw.wait(EV.Topic).text == "topic \ufffd"
    assert S.clean_text("ok é 😀") == "ok é 😀"


def test_long_message_pieces_fill_the_relayed_line(
        srv: RunningServer, connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    nick = "a_rather_long_nickname_here"
    a, _ = connect(srv, nick)
    raw = srv.client("raw", "#chat")
    text = "x" * 2000 + "é" * 300
    assert a.send_message(text)
    got, sizes = "", []
    while got != text:
        line = raw.expect(" PRIVMSG #chat :")[-1]
        sizes.append(len(line.encode()) + 2)
        got += line.split(" :", 1)[1]
    assert max(sizes) <= 512
    assert sizes[0] >= 508, f"the first piece left {512 - sizes[0]} bytes unused"


def test_split_fits_a_long_host_learned_from_join_and_396(
        fake: FakeServer, connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    a, w = connect(fake.address, "alice", join=False)
    peer = fake.peer()
    host = "h" * 60 + ".example"
    peer.welcome(userhost=f"~alice@{host}")
    peer.join(userhost=f"~alice@{host}")
    w.wait(EV.Names)
    for shown_host in (host, "c" * 63 + "." + "d" * 50 + ".cloak.example"):
        if shown_host != host:
            peer.send(f":fake.server 396 alice {shown_host} :is now your displayed host")
            peer.send("PING :after-396")  # the PONG proves the 396 was read
            peer.expect("PONG")
        since = len(peer.received)

        def sent(since: int = since) -> list[bytes]:
            return [r for r in peer.received[since:] if r.startswith(b"PRIVMSG")]

        assert a.send_message("y" * 1500)
        _until(lambda: b"".join(P.parse(r).params[1].encode() for r in sent()) == b"y" * 1500)
        relayed = [len(f":alice!~alice@{shown_host} ".encode() + r) + 2 for r in sent()]
        assert max(relayed) <= 512
        assert relayed[0] >= 508


def test_ctcp_replies_are_rate_limited(
        srv: RunningServer, connect: Callable[..., tuple[S.ChatSession, Watcher]]) -> None:
    a, w = connect(srv, "alice")
    raw = srv.client("raw")
    raw.send("".join("PRIVMSG alice :\x01VERSION\x01\r\n" for _ in range(10))
             + "PRIVMSG alice :done\r\n")
    w.wait(EV.Message, lambda m: m.text == "done")
    assert a.send_private("raw", "end")  # after every reply, on the same connection
    lines = raw.expect("PRIVMSG raw :end")
    replies = [ln for ln in lines if "NOTICE raw :\x01VERSION" in ln]
    assert 1 <= len(replies) <= S.ChatSession.CTCP_BURST


def test_strip_formatting() -> None:
    assert LN.strip_formatting("\x02bold\x02 \x0304,12red\x03 \x1ditalic\x0f \x1funder\x16"
                              " \x0399 \x04ff0000,00ff00hex") == "bold red italic under  hex"
    assert LN.strip_formatting("plain 😀") == "plain 😀"
