"""IRCv3 draft/read-marker against a real server: MARKREAD set and get, a marker that only
moves forward, FAIL replies, the marker on join before 366, every connection of an account
told, markers that survive a restart, guests' markers per connection, and nothing unasked
for a client without the cap."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from conftest import LineClient, RunningServer
from test_login import create_account, finish, fresh, sasl

from chatroom import protocol as P

Factory = Callable[..., RunningServer]
CAP = "draft/read-marker"
T0 = "2024-01-04T14:33:26.123Z"
T1 = "2024-01-05T08:00:00.500Z"
T2 = "2024-02-01T00:00:00.000Z"


def mark(target: str, stamp: str | None) -> str:
    return f":chat.test MARKREAD {target} " + (f"timestamp={stamp}" if stamp else "*")


def user(srv: RunningServer, nick: str, account: str | None = None,
         caps: str = CAP) -> LineClient:
    """A registered client with ``caps``, logged in to ``account`` if given."""
    wanted = " ".join(w for w in (caps, "sasl" if account else "") if w)
    if wanted:
        c = fresh(srv, wanted, nick)
        if account is not None:
            assert sasl(c, account)[-1].split(" ")[1] == "903"
        finish(c)
    else:
        c = srv.client(nick)
    return c


def test_cap_is_offered(srv: RunningServer) -> None:
    c = srv.client()
    c.send("CAP LS 302")
    assert CAP in c.recv_line().split(" :", 1)[1].split()


def test_set_get_forward_only_and_clamped(srv: RunningServer) -> None:
    create_account(srv, "ann")
    a = user(srv, "ann", "ann")
    a.send("MARKREAD #room")
    assert a.recv_line() == mark("#room", None)
    a.send(f"MARKREAD #room timestamp={T1}")
    assert a.recv_line() == mark("#room", T1)
    # Older, then equal: answered with the stored value, which stays.
    a.send(f"MARKREAD #room timestamp={T0}")
    assert a.recv_line() == mark("#room", T1)
    a.send(f"MARKREAD #room timestamp={T1}")
    assert a.recv_line() == mark("#room", T1)
    a.send("MARKREAD #ROOM")  # casefolded: the same room
    assert a.recv_line() == mark("#ROOM", T1)
    a.send(f"MARKREAD #room timestamp={T2}")
    assert a.recv_line() == mark("#room", T2)
    # From the future: taken as now.
    before = int(time.time() * 1000)
    a.send("MARKREAD #room timestamp=2999-01-01T00:00:00.000Z")
    line = a.recv_line()
    after = int(time.time() * 1000)
    assert line.startswith(":chat.test MARKREAD #room timestamp="), line
    got = P.parse_time(line.rsplit("=", 1)[1])
    assert got is not None and before <= got <= after
    # A nick target: the other party, casefolded.
    a.send(f"MARKREAD Bob timestamp={T0}")
    assert a.recv_line() == mark("Bob", T0)
    a.send("MARKREAD bob")
    assert a.recv_line() == mark("bob", T0)
    a.send("MARKREAD carol")
    assert a.recv_line() == mark("carol", None)


def test_bad_parameters_fail(srv: RunningServer) -> None:
    c = user(srv, "bad")
    c.send("MARKREAD")
    assert c.recv_line() == ":chat.test FAIL MARKREAD NEED_MORE_PARAMS :Missing parameters"
    for stamp in ("*", "2024-01-04T14:33:26.123Z", "timestamp=2024-02-30T00:00:00.000Z",
                  "timestamp=2024-01-04T14:33:26Z", "timestamp=yesterday"):
        c.send(f"MARKREAD #room {stamp}")
        assert c.recv_line() == f":chat.test FAIL MARKREAD INVALID_PARAMS {stamp} " \
                                ":Invalid parameters"
    c.send(f"MARKREAD a,b timestamp={T0}")
    assert c.recv_line() == ":chat.test FAIL MARKREAD INVALID_PARAMS a,b :Invalid parameters"
    c.no_line()


def test_join_gives_the_marker_before_366(srv: RunningServer) -> None:
    create_account(srv, "jo")
    j = user(srv, "jo", "jo")
    lines = j.join("#fresh")
    assert [x for x in lines if " MARKREAD " in x] == [mark("#fresh", None)]
    j.send(f"MARKREAD #Later timestamp={T1}")
    assert j.recv_line() == mark("#Later", T1)
    other = user(srv, "other", caps="")
    other.join("#Later")
    other.send("TOPIC #Later :hello")
    other.expect("TOPIC")
    lines = j.join("#later")
    kinds = [x.split(" ")[1] for x in lines]
    assert kinds[0] == "JOIN" and kinds[-1] == "366", lines
    assert lines.count(mark("#Later", T1)) == 1, lines  # the room's own name
    assert kinds.index("MARKREAD") < kinds.index("353") < kinds.index("366")
    j.no_line()


def test_every_connection_of_the_account_is_told(srv: RunningServer) -> None:
    create_account(srv, "multi")
    one = user(srv, "multi", "multi")
    two = user(srv, "multi2", "multi")
    blind = user(srv, "multi3", "multi", caps="")  # the account, without the cap
    stranger = user(srv, "stranger")  # the cap, another identity
    one.send(f"MARKREAD #room timestamp={T1}")
    assert one.recv_line() == mark("#room", T1)
    assert two.recv_line() == mark("#room", T1)
    # Older: only the sender hears the stored value; nobody else hears anything.
    two.send(f"MARKREAD #room timestamp={T0}")
    assert two.recv_line() == mark("#room", T1)
    one.no_line()
    blind.no_line()
    stranger.no_line()
    # Asked, a client without the cap is answered; joining, it is told nothing.
    blind.send("MARKREAD #room")
    assert blind.recv_line() == mark("#room", T1)
    assert not [x for x in blind.join("#room") if "MARKREAD" in x]
    stranger.send("MARKREAD #room")
    assert stranger.recv_line() == mark("#room", None)


def test_markers_survive_a_restart(make_server: Factory, tmp_path: Path) -> None:
    data = str(tmp_path)
    s1 = make_server(data_dir=data)
    create_account(s1, "keep")
    k = user(s1, "keep", "keep")
    k.send(f"MARKREAD #room timestamp={T1}")
    assert k.recv_line() == mark("#room", T1)
    k.send(f"MARKREAD Pal timestamp={T0}")
    assert k.recv_line() == mark("Pal", T0)
    s1.stop()
    db = sqlite3.connect(tmp_path / "chat.sqlite3")
    try:
        rows = sorted(db.execute("SELECT account, target FROM read_markers").fetchall())
    finally:
        db.close()
    assert rows == [("keep", "#room"), ("keep", "pal")]
    s2 = make_server(data_dir=data)
    k2 = user(s2, "keep", "keep")
    assert mark("#room", T1) in k2.join("#room")
    k2.send("MARKREAD pal")
    assert k2.recv_line() == mark("pal", T0)
    k2.send(f"MARKREAD #room timestamp={T0}")
    assert k2.recv_line() == mark("#room", T1)


def test_guests_keep_markers_per_connection(srv: RunningServer) -> None:
    g1 = user(srv, "guest1")
    g2 = user(srv, "guest2")
    g1.send(f"MARKREAD #room timestamp={T1}")
    assert g1.recv_line() == mark("#room", T1)
    g1.send(f"MARKREAD #room timestamp={T0}")
    assert g1.recv_line() == mark("#room", T1)
    assert mark("#room", T1) in g1.join("#room")
    g2.no_line()
    g2.send("MARKREAD #room")
    assert g2.recv_line() == mark("#room", None)
    assert mark("#room", None) in g2.join("#room")
    g1.send("QUIT")
    assert g1.closed()
    assert srv.wait_for(lambda: not srv.server.hub.guest_marks)  # gone with its connection
    again = user(srv, "guest1")
    again.send("MARKREAD #room")
    assert again.recv_line() == mark("#room", None)
