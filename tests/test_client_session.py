"""ChatSession against a real server on an ephemeral port: no display, no mocks."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from conftest import RunningServer

import client as C

E = TypeVar("E", bound=C.Event)
FAST = C.Backoff(initial=0.05, factor=2.0, maximum=0.3, jitter=0.5)


class Watcher:
    """Reads a session's events with a deadline and keeps everything it has seen."""

    def __init__(self, session: C.ChatSession) -> None:
        self.session = session
        self.seen: list[C.Event] = []

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

    def none_of(self, kind: type[C.Event], wait: float = 0.2) -> None:
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            try:
                ev = self.session.events.get(timeout=left)
            except queue.Empty:
                return
            self.seen.append(ev)
            assert not isinstance(ev, kind), f"unexpected {ev}"


@pytest.fixture
def connect() -> Iterator[Callable[..., tuple[C.ChatSession, Watcher]]]:
    made: list[C.ChatSession] = []

    def factory(srv: RunningServer | tuple[str, int], nick: str, *, join: bool = True,
                **kw: object) -> tuple[C.ChatSession, Watcher]:
        host, port = srv.address if isinstance(srv, RunningServer) else srv
        kw.setdefault("backoff", FAST)
        s = C.ChatSession(host, port, nick, **kw)  # type: ignore[arg-type]
        made.append(s)
        w = Watcher(s)
        s.start()
        if join:
            w.wait(C.Registered)
            w.wait(C.Joined)
            w.wait(C.Names)
        return s, w

    yield factory
    for s in made:
        s.close(timeout=2.0)
    for s in made:
        assert not s.alive, "session threads still running after close()"


def test_register_join_and_names(srv: RunningServer,
                                 connect: Callable[..., tuple[C.ChatSession, Watcher]]) -> None:
    s, w = connect(srv, "alice")
    assert s.state == "joined" and s.in_room
    assert s.members == ("@alice",)  # the creator of the room is its operator
    assert s.count == 1
    reg = next(e for e in w.seen if isinstance(e, C.Registered))
    assert reg == C.Registered("alice", "chat.test")
    assert C.Joined("#chat", "alice", False) in w.seen


def test_motd_376_path_and_motd_shown(make_server: Callable[..., RunningServer],
                                      connect: Callable[..., tuple[C.ChatSession, Watcher]]
                                      ) -> None:
    srv = make_server(motd=["Be nice"])
    _s, w = connect(srv, "alice")
    assert any(isinstance(e, C.Notice) and "Be nice" in e.text for e in w.seen)


def test_send_and_receive(srv: RunningServer,
                          connect: Callable[..., tuple[C.ChatSession, Watcher]]) -> None:
    a, aw = connect(srv, "alice")
    b, bw = connect(srv, "bob")
    aw.wait(C.UserJoined, lambda e: e.nick == "bob")
    assert a.send_message("hello 😀 wörld")
    m = bw.wait(C.Message)
    assert (m.sender, m.target, m.text, m.private, m.action) == (
        "alice", "#chat", "hello 😀 wörld", False, False)
    assert b.send_action("waves")
    m = aw.wait(C.Message)
    assert (m.sender, m.text, m.action, m.private) == ("bob", "waves", True, False)
    assert b.send_private("alice", "psst")
    m = aw.wait(C.Message)
    assert (m.sender, m.target, m.text, m.private) == ("bob", "alice", "psst", True)
    # Two lines in one call become two messages; blank input is refused.
    assert a.send_message("one\ntwo")
    assert [bw.wait(C.Message).text for _ in range(2)] == ["one", "two"]
    assert not a.send_message("   ")


def test_long_message_is_split_without_loss(srv: RunningServer,
                                            connect: Callable[..., tuple[C.ChatSession, Watcher]]
                                            ) -> None:
    a, _ = connect(srv, "alice")
    _b, bw = connect(srv, "bob")
    text = ("word🙂 " * 200).strip()  # about 1,800 bytes
    assert a.send_message(text)
    got = []
    while "".join(got) != text:
        got.append(bw.wait(C.Message).text)
        assert len(got) < 10
    assert len(got) > 1


def test_counts_follow_join_part_quit_nick_kick(
        srv: RunningServer, connect: Callable[..., tuple[C.ChatSession, Watcher]]) -> None:
    boss = srv.client("boss", "#chat")  # first in, so the room's operator
    a, w = connect(srv, "alice")
    assert a.members == ("@boss", "alice") and a.count == 2
    carol = srv.client("carol", "#chat")
    assert w.wait(C.UserJoined).members == ("@boss", "alice", "carol")
    carol.send("NICK caroline")
    ev = w.wait(C.UserRenamed)
    assert (ev.old, ev.new, ev.is_self, ev.members) == ("carol", "caroline", False,
                                                        ("@boss", "alice", "caroline"))
    carol.send("PART #chat :bye")
    ev2 = w.wait(C.UserLeft)
    assert (ev2.nick, ev2.reason, ev2.members, ev2.kicked_by) == ("caroline", "bye",
                                                                  ("@boss", "alice"), None)
    dave = srv.client("dave", "#chat")
    w.wait(C.UserJoined, lambda e: e.nick == "dave")
    dave.send("QUIT :gone home")
    ev3 = w.wait(C.UserQuit)
    assert (ev3.nick, ev3.reason, ev3.members) == ("dave", "Quit: gone home",
                                                   ("@boss", "alice"))
    srv.client("eve", "#chat")
    w.wait(C.UserJoined, lambda e: e.nick == "eve")
    boss.send("KICK #chat eve :rude")
    ev4 = w.wait(C.UserLeft)
    assert (ev4.nick, ev4.kicked_by, ev4.reason, ev4.members) == ("eve", "boss", "rude",
                                                                  ("@boss", "alice"))
    boss.send("MODE #chat +v alice")
    assert w.wait(C.Names).members == ("@boss", "+alice")
    boss.send("KICK #chat alice :out")
    left = w.wait(C.Left)
    assert (left.room, left.kicked_by, left.reason) == ("#chat", "boss", "out")
    assert a.count == 0 and not a.in_room and not a.send_message("anyone?")


def test_names_over_several_lines_with_prefixes(
        srv: RunningServer, connect: Callable[..., tuple[C.ChatSession, Watcher]]) -> None:
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
    names = w.wait(C.Names)
    assert names.count == 42 == a.count
    assert sorted(m.lstrip("@+") for m in names.members) == sorted(others + ["alice", "boss"])


def test_rename_self(srv: RunningServer,
                     connect: Callable[..., tuple[C.ChatSession, Watcher]]) -> None:
    _a, aw = connect(srv, "alice")
    b, bw = connect(srv, "bob")
    assert b.change_nick("robert")
    ev = bw.wait(C.UserRenamed)
    assert (ev.old, ev.new, ev.is_self) == ("bob", "robert", True)
    assert b.nick == "robert" and "robert" in b.members
    assert aw.wait(C.UserRenamed).new == "robert"
    # A taken name after registration is an error in words, and the name stays.
    assert b.change_nick("alice")
    err = bw.wait(C.ServerError)
    assert err.code == "433" and "taken" in err.text
    assert b.nick == "robert"
    assert not b.change_nick("9lives")  # invalid names are refused before sending


def test_topic(srv: RunningServer, connect: Callable[..., tuple[C.ChatSession, Watcher]]) -> None:
    a, aw = connect(srv, "alice")
    assert a.set_topic("Welcome 🎉")
    t = aw.wait(C.Topic)
    assert (t.text, t.by) == ("Welcome 🎉", "alice")
    b, bw = connect(srv, "bob", join=False)
    t2 = bw.wait(C.Topic)
    assert (t2.room, t2.text, t2.by) == ("#chat", "Welcome 🎉", None)
    bw.wait(C.Names)
    assert b.set_topic("mine")  # only operators may: an error in words comes back
    assert "operator" in bw.wait(C.ServerError).text


def test_private_to_unknown_nick_is_an_error(
        srv: RunningServer, connect: Callable[..., tuple[C.ChatSession, Watcher]]) -> None:
    a, w = connect(srv, "alice")
    assert a.send_private("nobody", "hi")
    assert "nobody" in w.wait(C.ServerError, lambda e: e.code == "401").text


def test_leave(srv: RunningServer, connect: Callable[..., tuple[C.ChatSession, Watcher]]) -> None:
    _a, aw = connect(srv, "alice")
    b, bw = connect(srv, "bob")
    b.leave("see you")
    ev = aw.wait(C.UserLeft)
    assert (ev.nick, ev.reason, ev.members) == ("bob", "see you", ("@alice",))
    bw.wait(C.Closed)
    b.close()
    assert not b.alive
    assert not b.send_message("too late")
    aw.none_of(C.UserQuit)  # PART first, so the room sees a leave, not a quit
    assert srv.wait_for(lambda: "bob" not in srv.server.reg.nicks)


def test_ping_is_answered(make_server: Callable[..., RunningServer],
                          connect: Callable[..., tuple[C.ChatSession, Watcher]]) -> None:
    srv = make_server(ping_interval=0.15, ping_timeout=0.3)
    a, w = connect(srv, "alice", keepalive=30.0)
    w.none_of(C.Disconnected, wait=1.0)
    assert a.state == "joined"


def test_send_never_blocks(srv: RunningServer,
                           connect: Callable[..., tuple[C.ChatSession, Watcher]]) -> None:
    a, _ = connect(srv, "alice", max_outgoing=50)
    start = time.monotonic()
    results = [a.send_message(f"line {i}") for i in range(2000)]
    assert time.monotonic() - start < 0.5
    assert results[0]  # what does not fit is refused, not waited for


def _kill(srv: RunningServer, nick: str, reason: str) -> None:
    with srv.server.reg.lock:
        victim = srv.server.reg.nicks[nick]
    srv.server.kill(victim, reason)


def test_reconnect_after_server_kills_the_connection(
        srv: RunningServer, connect: Callable[..., tuple[C.ChatSession, Watcher]]) -> None:
    _a, aw = connect(srv, "alice")
    b, bw = connect(srv, "bob")
    aw.wait(C.UserJoined)
    _kill(srv, "bob", "testing")
    d = bw.wait(C.Disconnected)
    assert d.will_retry and "testing" in d.reason
    r = bw.wait(C.Reconnecting)
    assert r.attempt == 1 and 0 < r.delay <= FAST.initial
    assert bw.wait(C.Registered).nick == "bob"
    assert bw.wait(C.Joined).rejoined
    assert bw.wait(C.Names).members == ("@alice", "bob")
    assert aw.wait(C.UserQuit).nick == "bob"
    assert aw.wait(C.UserJoined).members == ("@alice", "bob")
    assert b.send_message("back")
    assert aw.wait(C.Message).text == "back"


def test_reconnect_after_server_restart_on_same_port(
        make_server: Callable[..., RunningServer],
        connect: Callable[..., tuple[C.ChatSession, Watcher]]) -> None:
    first = make_server()
    port = first.address[1]
    a, w = connect(first, "alice")
    first.stop()
    assert w.wait(C.Disconnected).will_retry
    w.wait(C.Reconnecting)
    w.wait(C.Reconnecting)  # the port is closed for now: it keeps trying, backing off
    second = make_server(port=port)
    assert second.address[1] == port
    assert w.wait(C.Joined).rejoined
    assert a.nick == "alice" and a.members == ("@alice",)
    delays = [e.delay for e in w.seen if isinstance(e, C.Reconnecting)]
    assert all(d <= FAST.maximum for d in delays)


def test_backoff_grows_with_jitter() -> None:
    b = C.Backoff(initial=1.0, factor=2.0, maximum=10.0, jitter=0.5)
    for attempt, base in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 10.0), (50, 10.0)]:
        values = {b.delay(attempt) for _ in range(20)}
        assert all(base * 0.5 <= v <= base for v in values)
        assert len(values) > 1


def test_bad_name(srv: RunningServer,
                  connect: Callable[..., tuple[C.ChatSession, Watcher]]) -> None:
    _s, w = connect(srv, "9lives", join=False)
    ev = w.wait(C.LoginFailed)
    assert ev.kind is C.LoginKind.BAD_NICK and "9lives" in ev.message
    w.wait(C.Closed)


def test_taken_name(srv: RunningServer,
                    connect: Callable[..., tuple[C.ChatSession, Watcher]]) -> None:
    srv.client("alice")
    s, w = connect(srv, "ALICE", join=False)  # names compare without case
    ev = w.wait(C.LoginFailed)
    assert ev.kind is C.LoginKind.NICK_TAKEN and "taken" in ev.message
    w.wait(C.Closed)
    assert not s.alive or s.state == "closed"


def test_wrong_missing_and_right_password(
        make_server: Callable[..., RunningServer],
        connect: Callable[..., tuple[C.ChatSession, Watcher]]) -> None:
    srv = make_server(password="sesame")
    _, w = connect(srv, "alice", password="wrong", join=False)
    ev = w.wait(C.LoginFailed)
    assert ev.kind is C.LoginKind.BAD_PASSWORD and "password" in ev.message
    _, w2 = connect(srv, "alice", join=False)
    ev2 = w2.wait(C.LoginFailed)
    assert ev2.kind is C.LoginKind.BAD_PASSWORD and "needs a password" in ev2.message
    s3, _ = connect(srv, "alice", password="sesame")
    assert s3.in_room


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused(connect: Callable[..., tuple[C.ChatSession, Watcher]]) -> None:
    _, w = connect(("127.0.0.1", _free_port()), "alice", join=False)
    ev = w.wait(C.LoginFailed)
    assert ev.kind is C.LoginKind.REFUSED and "server running" in ev.message


def test_unknown_host(connect: Callable[..., tuple[C.ChatSession, Watcher]]) -> None:
    _, w = connect(("no-such-host.invalid", 1027), "alice", join=False)
    ev = w.wait(C.LoginFailed, timeout=10)
    assert ev.kind is C.LoginKind.UNREACHABLE and "host name" in ev.message


def test_not_a_chat_server(connect: Callable[..., tuple[C.ChatSession, Watcher]]) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        _, w = connect(listener.getsockname(), "alice", join=False, register_timeout=0.3)
        ev = w.wait(C.LoginFailed)
        assert ev.kind is C.LoginKind.UNREACHABLE and "did not answer" in ev.message


def test_close_ends_threads_and_quits(srv: RunningServer,
                                      connect: Callable[..., tuple[C.ChatSession, Watcher]]
                                      ) -> None:
    _a, aw = connect(srv, "alice")
    b, _ = connect(srv, "bob")
    before = threading.active_count()
    b.quit("off to bed")
    b.close(timeout=2.0)
    assert not b.alive
    assert threading.active_count() < before
    assert aw.wait(C.UserQuit).reason == "Quit: off to bed"


def test_close_while_reconnecting(make_server: Callable[..., RunningServer],
                                  connect: Callable[..., tuple[C.ChatSession, Watcher]]) -> None:
    srv = make_server()
    s, w = connect(srv, "alice", backoff=C.Backoff(initial=5.0, maximum=5.0, jitter=0.0))
    srv.stop()
    w.wait(C.Reconnecting)
    start = time.monotonic()
    s.close(timeout=2.0)
    assert not s.alive and time.monotonic() - start < 1.0


def test_quick_drops_back_off_further_and_stable_ones_start_afresh(
        srv: RunningServer, connect: Callable[..., tuple[C.ChatSession, Watcher]]) -> None:
    a, w = connect(srv, "alice")
    _kill(srv, "alice", "first")
    assert w.wait(C.Reconnecting).attempt == 1
    w.wait(C.Joined)
    assert srv.wait_for(lambda: "alice" in srv.server.reg.nicks)
    _kill(srv, "alice", "again at once")
    assert w.wait(C.Reconnecting).attempt == 2  # dropped right after joining: keep backing off
    w.wait(C.Joined)
    a.STABLE_AFTER = 0.0  # now count the connection as having been up a good while
    assert srv.wait_for(lambda: "alice" in srv.server.reg.nicks)
    _kill(srv, "alice", "after a long time")
    assert w.wait(C.Reconnecting).attempt == 1
    w.wait(C.Joined)
