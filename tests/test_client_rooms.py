"""ChatSession in several rooms at once, against a real server: join, part, LIST, reconnect.

No display: the session alone (the window's part is in test_gui_rooms.py).
"""

from __future__ import annotations

from collections.abc import Callable

from conftest import FakeServer, RunningServer
from test_client_session import Watcher, _kill, connect  # noqa: F401  (a fixture)

from chatroom import events as EV
from chatroom import session as S

Connect = Callable[..., tuple[S.ChatSession, Watcher]]


def test_join_a_second_room_and_route_by_room(srv: RunningServer, connect: Connect) -> None:
    a, aw = connect(srv, "alice")
    assert a.join("#dev")
    joined = aw.wait(EV.Joined)
    assert (joined.room, joined.rejoined) == ("#dev", False)
    names = aw.wait(EV.Names, lambda e: e.room == "#dev")
    assert names.members == ("@alice",)
    assert a.rooms == ("#chat", "#dev")
    assert a.is_in("#dev") and a.is_in("#DEV") and a.in_room
    assert a.join("#dev")  # already in it: nothing to do, not an error
    bob = srv.client("bob", "#dev")
    aw.wait(EV.UserJoined, lambda e: e.room == "#dev" and e.nick == "bob")
    assert a.members_of("#dev") == ("@alice", "bob")
    assert a.members_of("#chat") == ("@alice",)  # the other room's list is its own
    bob.send("PRIVMSG #dev :hi dev")
    m = aw.wait(EV.Message)
    assert (m.room, m.text, m.private) == ("#dev", "hi dev", False)
    assert a.send_message("to dev", room="#dev")
    assert bob.expect("PRIVMSG #dev :to dev")
    assert a.send_action("waves", "#dev")
    assert bob.expect("PRIVMSG #dev :\x01ACTION waves\x01")
    assert a.set_topic("dev talk", "#dev")
    aw.wait(EV.Topic, lambda e: e.room == "#dev" and e.text == "dev talk")
    assert a.topic_of("#dev") == "dev talk" and a.topic_of("#chat") == ""
    assert not a.send_message("nope", room="#nowhere")  # not in it: refused at once


def test_part_one_room_keeps_the_others(srv: RunningServer, connect: Connect) -> None:
    a, aw = connect(srv, "alice", rooms=["#dev"])
    aw.wait(EV.Joined, lambda e: e.room == "#dev")
    bob = srv.client("bob", "#chat")
    bob.join("#dev")
    aw.wait(EV.UserJoined, lambda e: e.room == "#dev")
    assert a.part("#dev", "bye dev")
    left = aw.wait(EV.Left)
    assert (left.room, left.parted, left.refused) == ("#dev", True, False)
    assert bob.expect("PART #dev :bye dev")
    assert a.rooms == ("#chat",) and not a.is_in("#dev")
    assert not a.part("#dev")  # no such room kept any more
    assert a.send_message("still here")
    assert bob.expect("PRIVMSG #chat :still here")
    # Parting the home room too leaves the session connected, in no room.
    assert a.part("#chat")
    assert aw.wait(EV.Left).parted
    assert a.rooms == () and a.state == "joined" and not a.in_room
    assert a.join("#chat")
    assert aw.wait(EV.Joined).room == "#chat"


def test_reconnect_joins_every_room_again(srv: RunningServer, connect: Connect) -> None:
    a, aw = connect(srv, "alice", rooms=["#dev", "#ops"])
    for room in ("#dev", "#ops"):
        aw.wait(EV.Joined, lambda e, r=room: e.room == r)
    assert a.part("#ops")
    aw.wait(EV.Left, lambda e: e.parted)
    _kill(srv, "alice", "drop")
    aw.wait(EV.Disconnected)
    back = {aw.wait(EV.Joined).room for _ in range(2)}
    assert back == {"#chat", "#dev"}  # not #ops: it was left on purpose
    again = [e for e in aw.seen[aw.seen.index(next(
        e for e in aw.seen if isinstance(e, EV.Disconnected))):] if isinstance(e, EV.Joined)]
    assert [e.rejoined for e in again] == [True, True]
    with srv.server.reg.lock:
        rooms = {room.name.lower() for room in srv.server.reg.nicks["alice"].channels.values()}
    assert rooms == {"#chat", "#dev"}


def test_the_rooms_at_start_are_all_joined(srv: RunningServer, connect: Connect) -> None:
    a, aw = connect(srv, "alice", join=False, rooms=["#dev", "bad name", "#chat"])
    got = {aw.wait(EV.Joined).room for _ in range(2)}
    assert got == {"#chat", "#dev"}  # the bad name is skipped, #chat not joined twice
    assert a.rooms == ("#chat", "#dev")


def test_a_refused_room_is_dropped_and_said_in_words(srv: RunningServer,
                                                      connect: Connect) -> None:
    boss = srv.client("boss", "#locked")
    boss.send("MODE #locked +k sesame")
    boss.lines_until("MODE")
    a, aw = connect(srv, "alice")
    assert a.join("#locked")
    left = aw.wait(EV.Left)
    assert left.refused and left.room == "#locked"
    assert "could not join #locked" in left.reason.lower() and "+k" not in left.reason
    assert a.rooms == ("#chat",) and a.in_room


def test_room_names_are_checked_before_anything_is_sent(srv: RunningServer,
                                                        connect: Connect) -> None:
    a, aw = connect(srv, "alice")
    for bad in ("chat", "#", "#a b", "#a,b", "#a:b", "#\x07bell", "#" + "x" * 60, ""):
        assert a.room_problem(bad), bad
        assert not a.join(bad), bad
    assert a.room_problem("#ok-room_1") is None
    aw.none_of(EV.Joined)


def test_list_rooms_with_counts_and_topics(srv: RunningServer, connect: Connect) -> None:
    bob = srv.client("bob", "#big")
    cid = srv.client("cid", "#big")
    cid.join("#small")
    bob.send("TOPIC #big :the big one")
    bob.lines_until("TOPIC")
    a, aw = connect(srv, "alice")
    assert a.list_rooms()
    listing = aw.wait(EV.RoomList)
    assert listing.complete
    by_name = {r.name: r for r in listing.rooms}
    assert by_name["#big"] == EV.RoomInfo("#big", 2, "the big one")
    assert by_name["#small"].users == 1 and by_name["#chat"].users == 1
    assert listing.rooms[0].name == "#big"  # most members first


def test_part_while_disconnected_forgets_the_room_at_once(fake: FakeServer,
                                                          connect: Connect) -> None:
    a, aw = connect(fake.address, "alice", join=False, rooms=["#dev"])
    peer = fake.peer()
    peer.welcome()
    peer.expect("JOIN #chat,#dev")
    peer.send(":alice!u@h JOIN #chat")
    peer.send(":alice!u@h JOIN #dev")
    aw.wait(EV.Joined, lambda e: e.room == "#dev")
    peer.close()
    aw.wait(EV.Disconnected)
    assert a.part("#dev")
    assert aw.wait(EV.Left).parted
    assert a.rooms == ("#chat",)
    peer = fake.peer()
    peer.welcome()
    peer.expect("JOIN #chat")  # and only #chat


def test_a_room_that_never_answers_is_given_up(fake: FakeServer, connect: Connect) -> None:
    a, aw = connect(fake.address, "alice", join=False, rooms=["#slow"], join_timeout=0.3)
    peer = fake.peer()
    peer.welcome()
    peer.expect("JOIN #chat,#slow")
    peer.send(":alice!u@h JOIN #chat")
    aw.wait(EV.Joined)
    left = aw.wait(EV.Left)
    assert left.refused and left.room == "#slow" and "did not answer" in left.reason
    assert a.state == "joined" and a.rooms == ("#chat",)


def test_private_action_and_bad_targets(srv: RunningServer, connect: Connect) -> None:
    a, _ = connect(srv, "alice")
    bob = srv.client("bob")
    assert a.send_action("waves at you", "bob")
    assert bob.expect("PRIVMSG bob :\x01ACTION waves at you\x01")
    assert not a.send_action("x", "not a name!")
    assert not a.send_private("#chat", "a room is not a person")


def test_a_room_we_were_kicked_from_is_not_joined_again_by_a_reconnect(
        srv: RunningServer, connect: Connect) -> None:
    boss = srv.client("boss", "#dev")
    a, aw = connect(srv, "alice", rooms=["#dev"])
    aw.wait(EV.Joined, lambda e: e.room == "#dev")
    boss.send("KICK #dev alice :out")
    left = aw.wait(EV.Left)
    assert left.kicked_by == "boss" and not left.parted and not left.refused
    assert a.rooms == ("#chat",)  # not remembered for a reconnect or the next start
    _kill(srv, "alice", "drop")
    aw.wait(EV.Disconnected)
    assert aw.wait(EV.Joined).room == "#chat"
    aw.none_of(EV.Joined, wait=0.3)
    assert a.join("#dev")  # asked for: back in, and kept again
    assert aw.wait(EV.Joined).room == "#dev"
    assert a.rooms == ("#chat", "#dev")


def test_the_notify_list_says_who_comes_and_goes(srv: RunningServer, connect: Connect) -> None:
    a, aw = connect(srv, "alice")
    assert a.watch("bob") and not a.watch("not a nick!")
    assert aw.wait(EV.Presence) == EV.Presence("bob", False)  # told at once: not here
    bob = srv.client("bob")
    assert aw.wait(EV.Presence) == EV.Presence("bob", True)
    bob.send("QUIT :bye")
    assert aw.wait(EV.Presence) == EV.Presence("bob", False)
    _kill(srv, "alice", "drop")  # the list is the session's: sent again after a reconnect
    aw.wait(EV.Disconnected)
    srv.client("bob")
    assert aw.wait(EV.Presence, lambda e: e.online) == EV.Presence("bob", True)
    assert a.unwatch("bob") and a.watching == ()


def test_who_is_away_in_the_rooms_we_share(srv: RunningServer, connect: Connect) -> None:
    bob = srv.client("bob", "#chat")
    bob.send("AWAY :lunch")
    bob.lines_until("306")
    a, aw = connect(srv, "alice")
    assert "away-notify" in a.caps
    assert ("bob", True) in aw.wait(EV.AwayStates).states  # from the WHO after the join
    bob.send("AWAY")
    assert aw.wait(EV.AwayStates).states == (("bob", False),)
    bob.send("AWAY :meeting")
    assert aw.wait(EV.AwayStates).states == (("bob", True),)
