"""The client's use of the server's history (issue 9, the client's part), with no display.

A real server on an ephemeral port (its own data directory, or one the test fills through
the store's own API to make old lines), and a :class:`~chatroom.session.ChatSession`;
scripted fake servers for what ours never does (no capabilities at all, a live line in the
middle of a fetch, a fetch that is refused or never answered).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import FakePeer, FakeServer, LineClient, RunningServer
from test_client_session import Watcher

from chatroom import events as EV
from chatroom import lines as LN
from chatroom import protocol as P
from chatroom import session as S
from chatroom.history import History

FAST = S.Backoff(initial=0.05, factor=2.0, maximum=0.3, jitter=0.5)
Connect = Callable[..., tuple[S.ChatSession, Watcher]]


def pfx(nick: str) -> str:
    return f"{nick}!~u@127.0.0.1"


def seed(data_dir: Path, room: str, said: list[tuple[int, str, str]]) -> None:
    """Put (ms, nick, text) PRIVMSGs into ``room``'s stored history, as if said then."""
    store = History(str(data_dir))
    store.start()
    try:
        for ms, nick, text in said:
            store.add(P.casefold(room), ms, True,
                      f":{pfx(nick)} PRIVMSG {room} :{text}\r\n".encode(), None)
        store.flush()
    finally:
        store.close()


def local_noon(days_ago: int) -> int:
    """Milliseconds at 12:00 local time ``days_ago`` days ago (no DST edge near noon)."""
    t = time.localtime(time.time() - days_ago * 86400)
    return int(time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 12, 0, 0, 0, 0, -1)) * 1000)


def texts(entries: tuple[EV.RoomLine, ...]) -> list[str]:
    return [e.text for e in entries if isinstance(e, EV.Message)]


def tagged(srv: RunningServer, nick: str, room: str) -> LineClient:
    """A line client with message-tags (it sees every line's msgid and time)."""
    c = srv.client()
    c.send("CAP REQ :message-tags")
    c.expect(" ACK ")
    c.send("CAP END")
    c.register(nick)
    c.join(room)
    return c


@pytest.fixture
def connect() -> Iterator[Connect]:
    made: list[S.ChatSession] = []

    def factory(address: tuple[str, int], nick: str, *, join: bool = True,
                **kw: object) -> tuple[S.ChatSession, Watcher]:
        kw.setdefault("backoff", FAST)
        s = S.ChatSession(*address, nick, **kw)  # type: ignore[arg-type]
        made.append(s)
        w = Watcher(s)
        s.start()
        if join:
            w.wait(EV.Joined)
        return s, w

    yield factory
    S.close_sessions(made)
    assert not any(s.alive for s in made)


# --- joining: history first, with its own times, then the live lines ----------------------


def test_history_on_join_has_original_times_then_live_lines(
        make_server: Callable[..., RunningServer], tmp_path: Path, connect: Connect) -> None:
    then = int(time.time() * 1000) - 3600_000  # an hour ago
    said = [(then + i * 60_000, "ann", f"earlier {i}") for i in range(5)]
    seed(tmp_path, "#chat", said)
    srv = make_server(data_dir=str(tmp_path))
    s, w = connect(srv.address, "alice")
    assert {"draft/chathistory", "batch", "message-tags", "echo-message"} <= s.caps
    hist = w.wait(EV.History)
    assert hist.kind is EV.HistoryKind.LATEST and hist.room == "#chat"
    assert texts(hist.entries) == [t for _, _, t in said]
    assert [e.time for e in hist.entries] == [ms / 1000 for ms, _, _ in said]
    assert all(isinstance(e, EV.Message) and e.msgid == f"{ms:x}"
               for e, (ms, _, _) in zip(hist.entries, said))
    assert hist.start  # five lines, fewer than a page: the whole conversation
    assert not any(isinstance(e, EV.Message) for e in w.seen)  # nothing live before it
    bob = srv.client("bob", "#chat")
    bob.send("PRIVMSG #chat :now")
    live = w.wait(EV.Message)
    assert (live.text, live.own, live.msgid is not None) == ("now", False, True)
    assert abs(live.time - time.time()) < 5
    w.none_of(EV.History)


def test_a_live_line_during_the_fetch_comes_after_it_once(fake: FakeServer,
                                                          connect: Connect) -> None:
    """Lines said between our join and the server's answer are in both; shown once, after
    the history (this fake has no labeled-response: replies are matched by room)."""
    s, w = connect(fake.address, "alice", join=False)
    peer = fake.peer()
    caps(peer, "batch draft/chathistory message-tags server-time")
    peer.join()
    request = peer.expect("CHATHISTORY ")
    assert request == "CHATHISTORY LATEST #chat * 100"
    live = "@msgid=b;time=2026-12-01T10:00:02.000Z :bob!b@h PRIVMSG #chat :in between"
    peer.send(live, ":bob!b@h JOIN #chat")  # no msgid: a server that stores no joins
    w.wait(EV.Names)
    w.none_of(EV.Message, wait=0.2)  # held back until the history is in
    peer.send(":fake.server BATCH +h1 chathistory #chat",
              "@batch=h1;msgid=a;time=2026-12-01T10:00:01.000Z :ann!a@h PRIVMSG #chat :before",
              "@batch=h1;" + live[1:],
              ":fake.server BATCH -h1")
    hist = w.wait(EV.History)
    assert texts(hist.entries) == ["before"] and hist.start
    assert w.wait(EV.Message).text == "in between"
    assert w.wait(EV.UserJoined).nick == "bob"
    assert s.members == ("alice", "bob")  # the batch changed no member list


def caps(peer: FakePeer, offered: str, nick: str = "alice") -> None:
    """Negotiate ``offered`` (all of it is granted), then welcome ``nick``."""
    peer.expect("CAP LS 302")
    peer.expect("USER")
    peer.send(f":fake.server CAP * LS :{offered}")
    wanted = peer.expect("CAP REQ").split(":", 1)[1].split()
    assert set(wanted) <= set(offered.split())
    peer.send(f":fake.server CAP {nick} ACK :{' '.join(wanted)}")
    peer.expect("CAP END")
    peer.send(f":fake.server 001 {nick} :Welcome {nick}!alice@fake.example",
              f":fake.server 422 {nick} :MOTD File is missing")


def test_a_fetch_never_answered_or_refused_lets_the_room_go_live(
        fake: FakeServer, connect: Connect) -> None:
    _, w = connect(fake.address, "alice", join=False, history_timeout=0.3)
    peer = fake.peer()
    caps(peer, "batch draft/chathistory message-tags")
    peer.join()
    peer.expect("CHATHISTORY LATEST")
    peer.send("@msgid=x :bob!b@h PRIVMSG #chat :still shown")
    assert w.wait(EV.Message).text == "still shown"  # after the wait, not never
    err = w.wait(EV.ServerError)
    assert "did not send the earlier messages of #chat" in err.text
    # Its answer, late, is read and dropped: the room is live already.
    peer.send(":fake.server BATCH +late chathistory #chat",
              "@batch=late;msgid=old :ann!a@h PRIVMSG #chat :too late to show",
              ":fake.server BATCH -late")
    # A refusal (FAIL) is said in words, and the room goes live at once.
    peer.send(":fake.server KICK #chat alice :again")
    w.wait(EV.Left)
    peer.send(":alice!alice@fake.example JOIN #chat",
              ":fake.server 366 alice #chat :End of /NAMES list.")
    assert peer.expect("CHATHISTORY ") == "CHATHISTORY AFTER #chat msgid=x 100"
    peer.send("@msgid=y :bob!b@h PRIVMSG #chat :after the refusal",
              ":fake.server FAIL CHATHISTORY INVALID_TARGET AFTER #chat "
              ":Messages could not be retrieved")
    missed = w.wait(EV.History)
    assert missed.kind is EV.HistoryKind.MISSED and missed.entries == ()
    assert not any(isinstance(e, EV.History) for e in w.seen[:-1])
    assert "could not be loaded (Messages could not be retrieved)" in w.wait(
        EV.ServerError).text
    assert w.wait(EV.Message).text == "after the refusal"


# --- our own lines ---------------------------------------------------------------------------


def test_own_line_comes_from_the_echo_with_the_server_time(
        srv: RunningServer, connect: Connect) -> None:
    s, w = connect(srv.address, "alice")
    w.wait(EV.History)
    bob = tagged(srv, "bob", "#chat")
    w.wait(EV.UserJoined)
    assert s.echoes
    assert s.send_message("hello from me")
    echo = w.wait(EV.Echo)
    relayed = P.parse(bob.expect("hello from me")[-1])
    assert echo.message.own and echo.message.text == "hello from me"
    assert echo.message.msgid == relayed.tags["msgid"]
    assert echo.message.time == P.parse_time(relayed.tags["time"]) / 1000  # type: ignore[operator]
    # No second copy of it, as a Message or as anything else.
    w.none_of(EV.Message)
    assert s.send_private("bob", "psst")
    private = w.wait(EV.Echo).message
    assert (private.private, private.target, private.own) == (True, "bob", True)
    assert s.send_private("alice", "note to self")  # the echo and the message: one line
    assert w.wait(EV.Echo).message.text == "note to self"
    w.none_of(EV.Message)


def test_old_server_without_capabilities_still_works(fake: FakeServer,
                                                     connect: Connect) -> None:
    """A server that knows no CAP: no history is asked for, our lines are not echoed (the
    app shows them itself), everything else as before."""
    s, w = connect(fake.address, "alice", join=False)
    peer = fake.peer()
    assert peer.expect("CAP") == "CAP LS 302"  # ignored by this server
    peer.welcome()
    peer.join(names=["alice", "bob"])
    w.wait(EV.Names)
    assert s.caps == frozenset() and not s.echoes and not s.has_history
    assert s.send_message("hi")
    assert P.parse(peer.expect("PRIVMSG")).params == ("#chat", "hi")
    peer.send(":bob!b@h PRIVMSG #chat :hello")
    m = w.wait(EV.Message)
    assert (m.text, m.msgid, m.own) == ("hello", None, False)
    assert not s.load_older()
    assert not any(ln.startswith(b"CHATHISTORY") for ln in peer.received)
    w.none_of(EV.History)


# --- paging back ------------------------------------------------------------------------------


def test_paging_before_down_to_the_start(make_server: Callable[..., RunningServer],
                                         tmp_path: Path, connect: Connect) -> None:
    then = int(time.time() * 1000) - 86400_000
    said = [(then + i * 1000, "ann", f"line {i}") for i in range(45)]
    seed(tmp_path, "#chat", said)
    srv = make_server(data_dir=str(tmp_path))
    s, w = connect(srv.address, "alice", history_page=20)
    pages = [w.wait(EV.History)]
    assert pages[0].kind is EV.HistoryKind.LATEST and not pages[0].start
    while s.can_load_older:
        assert s.load_older()
        assert not s.load_older()  # one page at a time
        pages.append(w.wait(EV.History))
        assert pages[-1].kind is EV.HistoryKind.OLDER
    assert [p.start for p in pages] == [False, False, True]
    got = [t for p in reversed(pages) for t in texts(p.entries)]
    assert got == [t for _, _, t in said]  # every line once, in order
    assert not s.load_older()
    w.none_of(EV.History)


def test_history_joins_and_renames_are_events_that_change_no_member_list(
        srv: RunningServer, connect: Connect) -> None:
    carol = srv.client("carol", "#ev")
    dave = srv.client("dave", "#ev")
    dave.send("NICK david")
    dave.send("PRIVMSG #ev :renamed")
    dave.send("PART #ev :bye")
    dave.send("PING :done")
    dave.expect("PONG")  # all of it done before carol speaks
    carol.send("PRIVMSG #ev :hello")
    carol.send("PING :done")
    carol.expect("PONG")
    s, w = connect(srv.address, "alice", room="#ev")
    hist = w.wait(EV.History)
    shown = [LN.render(e) for e in hist.entries]
    words = ["".join(text for text, _ in row[0]) for row in shown if row is not None]
    assert [w_[8:] for w_ in words] == [  # after "[HH:MM] "
        "— carol joined #ev", "— dave joined #ev", "— dave is now known as david", "david: renamed",
        "— david left #ev (bye)", "carol: hello"]
    assert all(getattr(e, "members", ()) == () for e in hist.entries)
    assert s.members == ("@carol", "alice")


# --- reconnecting: what was missed, once, in order ----------------------------------------


def test_reconnect_fetches_what_was_missed_once_in_order(srv: RunningServer,
                                                         connect: Connect) -> None:
    s, w = connect(srv.address, "alice", backoff=S.Backoff(initial=0.4, jitter=0.0))
    w.wait(EV.History)
    bob = tagged(srv, "bob", "#chat")
    bob.send("PRIVMSG #chat :before the drop")
    assert w.wait(EV.Message).text == "before the drop"
    with srv.server.reg.lock:
        victim = srv.server.reg.nicks["alice"]
    srv.server.kill(victim, "testing")
    w.wait(EV.Disconnected)
    for text in ("while away 1", "while away 2"):
        bob.send(f"PRIVMSG #chat :{text}")
    bob.send("PING :sync")
    bob.expect("PONG")  # both are stored before alice is back
    assert w.wait(EV.Joined).rejoined
    missed = w.wait(EV.History)
    assert missed.kind is EV.HistoryKind.MISSED and not missed.more
    assert texts(missed.entries) == ["while away 1", "while away 2"]
    quit_ = [e for e in missed.entries if isinstance(e, EV.UserQuit)]
    assert [q.nick for q in quit_] == ["alice"]  # our own drop, as the room saw it
    bob.send("PRIVMSG #chat :live again")
    assert w.wait(EV.Message).text == "live again"
    said = [e.text for e in w.seen if isinstance(e, EV.Message)]
    said[1:1] = texts(missed.entries)
    assert said == ["before the drop", "while away 1", "while away 2", "live again"]
    assert s.in_room


def test_reconnect_to_a_restarted_server_shows_no_line_twice(
        make_server: Callable[..., RunningServer], tmp_path: Path, connect: Connect) -> None:
    data = str(tmp_path / "data")
    first = make_server(data_dir=data)
    port = first.address[1]
    s, w = connect(first.address, "alice", backoff=S.Backoff(initial=0.5, jitter=0.0))
    w.wait(EV.History)
    s.send_message("said before the restart")
    w.wait(EV.Echo)
    first.server.shutdown()  # with alice still connected: she is told, and drops
    first.thread.join(timeout=10)
    w.wait(EV.Disconnected)
    second = make_server(data_dir=data, port=port)
    bob = second.client("bob", "#chat")
    bob.send("PRIVMSG #chat :said after the restart")
    bob.send("PING :sync")
    bob.expect("PONG")
    assert w.wait(EV.Joined).rejoined
    missed = w.wait(EV.History)
    assert texts(missed.entries) == ["said after the restart"]
    everything = [e.message.text if isinstance(e, EV.Echo) else e.text
                  for e in w.seen if isinstance(e, (EV.Echo, EV.Message))]
    assert everything.count("said before the restart") == 1


# --- days -------------------------------------------------------------------------------------


def test_day_lines_where_the_date_changes(make_server: Callable[..., RunningServer],
                                          tmp_path: Path, connect: Connect) -> None:
    said = [(local_noon(2), "ann", "two days ago"), (local_noon(2) + 60_000, "ann", "same day"),
            (local_noon(1), "bob", "yesterday"), (int(time.time() * 1000) - 1000, "ann", "now")]
    seed(tmp_path, "#chat", said)
    srv = make_server(data_dir=str(tmp_path))
    _, w = connect(srv.address, "alice")
    hist = w.wait(EV.History)
    messages = [e for e in hist.entries if isinstance(e, EV.Message)]
    rows = LN.dated([(e.time, row) for e in messages if (row := LN.render(e))], None)
    shown = ["".join(t for t, _ in parts) for parts, _ in rows]
    day = [LN.day(ms / 1000)[0][0] for ms, _, _ in said]
    assert [x for x in shown if x in day] == [day[0], day[2], day[3]]
    assert shown.index(day[2]) == shown.index(day[0]) + 3  # after both lines of that day
    # Live lines continue from the last line's day: a day line only when it changes.
    assert LN.dated([(time.time(), rows[-1])], LN.day_of(time.time()))[0] == rows[-1]
    t = time.localtime(local_noon(2) / 1000)
    assert day[0] == f"{time.strftime('%A', t)} {t.tm_mday} {time.strftime('%B %Y', t)}"


def test_seen_is_bounded() -> None:
    seen = S.Seen(3)
    assert all(seen.add(x) for x in "abcd")
    assert len(seen) == 3 and "a" not in seen and "d" in seen
    assert not seen.add("d")
