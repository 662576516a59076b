"""What the client says (issue 13): goodbyes, refusals and mode changes in words, and /away
and /whois, against a real server; the wording functions on their own."""

from __future__ import annotations

from collections.abc import Callable

from conftest import RunningServer
from test_client_session import Watcher, connect  # noqa: F401  (connect is a fixture)

from chatroom import events as EV
from chatroom import protocol as P
from chatroom import session as S
from chatroom import slash
from chatroom import wording as W

Connect = Callable[..., tuple[S.ChatSession, Watcher]]
GROUPS = ("beI", "k", "l", "imnpst")


def test_goodbyes_lose_the_host_and_the_jargon() -> None:
    assert W.goodbye("Closing Link: 127.0.0.1 (Server shutting down)") == (
        "the server is shutting down")
    assert W.goodbye("Closing Link: example.org (Excess Flood)") == (
        "you sent too much too quickly")
    assert W.goodbye("Closing link: 10.0.0.1 (Ping timeout: 120 seconds)") == (
        "the connection stopped answering")
    assert W.goodbye("Closing Link: h (Quit: bye)") == "you left"
    assert W.goodbye("Closing Link: h (Banned for spamming)") == "Banned for spamming"
    assert W.goodbye("Closing Link: h") == "the server closed the connection"
    assert W.goodbye("") == "the server closed the connection"
    assert W.goodbye("Go away") == "Go away"  # not the usual form: the words as they are


def test_join_refusals_name_the_reason_not_the_mode_letter() -> None:
    assert W.join_refused(P.ERR_BANNEDFROMCHAN, "#a", "Cannot join channel (+b)") == (
        "you are banned from #a")
    assert "invite" in W.join_refused(P.ERR_INVITEONLYCHAN, "#a", "Cannot join channel (+i)")
    assert "password" in W.join_refused(P.ERR_BADCHANNELKEY, "#a", "(+k)")
    assert W.join_refused(P.ERR_CHANNELISFULL, "#a", "(+l)") == "#a is full"
    assert W.join_refused("477", "#a", "You need to log in") == "You need to log in"
    assert "(+" not in S._friendly_error(P.ERR_BANNEDFROMCHAN,
                                         ("#a", "Cannot join channel (+b)"))


def test_mode_changes_in_words() -> None:
    def say(modes: str, *args: str) -> str:
        return W.mode_sentence("ann", modes, list(args), *GROUPS[:3])

    assert say("+b", "epuser!*@*") == "ann banned epuser"
    assert say("+b", "*!*@10.0.0.*") == "ann banned *!*@10.0.0.*"  # a pattern stays one
    assert say("-b", "bob!*@*") == "ann lifted the ban on bob"
    assert say("+o", "bob") == "ann made bob a room operator"
    assert say("+ov-v", "bob", "cid", "dan") == (
        "ann made bob a room operator, gave cid a voice and took dan's voice")
    assert say("+k", "secret") == "ann set a password for the room"  # never the key
    assert say("+l", "10") == "ann limited the room to 10 people"
    assert say("-l") == "ann removed the room's size limit"
    assert say("+mt") == ("ann made the room moderated: only operators and voiced members "
                          "can talk and let only operators change the topic")
    assert say("+Z") == "ann set the room's mode +Z"  # unknown: still says something
    assert say("") == "ann changed the room's settings"
    # Arguments are consumed in order even by modes shown without them.
    assert say("+lo", "5", "bob") == "ann limited the room to 5 people and made bob a room operator"


def test_slash_table_has_away_and_whois() -> None:
    for name in ("away", "whois"):
        assert name in slash.BY_NAME
        assert any(usage.startswith(f"/{name}") for usage, _ in slash.HELP)


def test_mode_and_refusal_lines_from_a_real_server(srv: RunningServer,
                                                   connect: Connect) -> None:  # noqa: F811
    boss = srv.client("boss", "#chat")
    a, w = connect(srv, "alice")
    boss.send("MODE #chat +b epuser!*@*")
    note = w.wait(EV.Notice, lambda n: n.room == "#chat")
    assert note.text == "boss banned epuser"
    boss.send("MODE #chat +v alice")
    assert w.wait(EV.Notice, lambda n: "voice" in n.text).text == "boss gave alice a voice"
    boss.send("KICK #chat alice :out")
    w.wait(EV.Left)
    boss.send("MODE #chat +b alice!*@*")
    boss.expect("MODE #chat +b alice!*@*")  # this one: the +v's echo may still be unread
    assert a.rejoin()
    refused = w.wait(EV.ServerError)
    assert refused.text == "You could not join #chat again: you are banned from #chat."


def test_shutdown_reason_in_words(srv: RunningServer, connect: Connect) -> None:  # noqa: F811
    _a, w = connect(srv, "alice", reconnect=False)
    # Its history fetch goes out after the join's NAMES: let it be answered, or it could
    # reach the server after the close, whose reset would make us lose the ERROR.
    w.wait(EV.History)
    srv.stop()
    lost = w.wait(EV.Disconnected)
    assert lost.reason == "the server is shutting down"


def test_away_and_whois(srv: RunningServer, connect: Connect) -> None:  # noqa: F811
    a, wa = connect(srv, "alice")
    b, wb = connect(srv, "bob")
    assert b.set_away("lunch, back at 2")
    assert wb.wait(EV.AwayChanged).away
    # Every message to an away user brings a 301; the user sees it once per text.
    for text in ("hi", "are you there?"):
        assert a.send_private("bob", text)
    assert wa.wait(EV.Away) == EV.Away("bob", "lunch, back at 2")
    assert a.whois("bob")
    info = wa.wait(EV.Whois)
    assert info.nick == "bob"
    assert any(f.startswith("Address: ") for f in info.facts), info.facts
    assert "In rooms: #chat" in info.facts
    assert "Away: lunch, back at 2" in info.facts
    assert any(f.startswith("Idle for ") for f in info.facts)
    wa.none_of(EV.Away)  # the whois's 301 is part of the Whois, not a second Away
    assert b.set_away("")
    assert not wb.wait(EV.AwayChanged).away
    # An unknown name: the 401 says so, in words, and no empty Whois follows.
    assert a.whois("nobody")
    assert wa.wait(EV.ServerError).text == "No one called “nobody” is online."
    wa.none_of(EV.Whois)
    assert not a.whois("bad name")  # not a nick: nothing is sent
