"""Pasting many lines (issue 13): they reach everyone, in order, and nobody is cut off for
flooding; the sender sees what others get; a large paste is confirmed first.  Real server
with flood control on, real sessions and (for the window) Tk under Xvfb."""

from __future__ import annotations

import time
import tkinter as tk
from collections.abc import Callable

from conftest import RunningServer
from test_client_session import Watcher, connect  # noqa: F401  (connect is a fixture)
from test_gui import FAST, Factory, join_all, make_app, pump, say  # noqa: F401

from chatroom import app as A
from chatroom import events as EV
from chatroom import session as S

Connect = Callable[..., tuple[S.ChatSession, Watcher]]
# The server's flood control, its rate scaled up 25x from its defaults (10 at once, 2/s, cut
# with 60 waiting) so a test takes a second or two; the client paces a little below that
# rate, so a busy machine that delays the server's reads (the lines then arrive in a clump)
# can't fail a test that the real rates would pass.
FLOOD = {"flood_control": True, "flood_burst": 10, "flood_rate": 50.0, "flood_kill": 60}
# These tests are about a server without draft/multiline, where a paste goes line by line;
# the ones after them are about one with it.
LINES = {**FLOOD, "multiline": False}
PACE = {"send_burst": 5, "send_rate": 40.0}


def _received(w: Watcher, count: int, timeout: float = 10.0) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(got)} of {count} arrived"
        got.append(w.wait(EV.Message, timeout=left).text)
    return got


def test_a_100_line_paste_reaches_everyone_in_order(
        make_server: Callable[..., RunningServer], connect: Connect) -> None:  # noqa: F811
    srv = make_server(**LINES)
    a, wa = connect(srv, "alice", **PACE)
    _b, wb = connect(srv, "bob")
    paste = "\n".join(f"line {i:03d}" for i in range(100))
    assert a.send_message(paste)
    assert _received(wb, 100) == [f"line {i:03d}" for i in range(100)]
    done = wa.wait(EV.Sending, lambda e: e.sent == e.total)
    assert (done.target, done.total, done.gave_up) == ("#chat", 100, False)
    wa.none_of(EV.Disconnected, wait=0.3)
    assert a.state == "joined" and "alice" in srv.server.reg.nicks


def test_without_pacing_the_same_paste_is_cut_off(
        make_server: Callable[..., RunningServer], connect: Connect) -> None:  # noqa: F811
    # The check above means something: unpaced, a server cuts the sender off (here one that
    # cuts with 20 waiting, so the 90 over its burst are sure to be too many).
    srv = make_server(**{**LINES, "flood_kill": 20})
    a, wa = connect(srv, "alice", send_burst=1000, send_rate=1e6, reconnect=False)
    assert a.send_message("\n".join(f"line {i}" for i in range(100)))
    assert "too much too quickly" in wa.wait(EV.Disconnected).reason


def test_short_sends_are_not_held_back_and_quit_is_not_delayed(
        make_server: Callable[..., RunningServer], connect: Connect) -> None:  # noqa: F811
    srv = make_server(**LINES)
    a, wa = connect(srv, "alice", send_burst=5, send_rate=0.5)
    _b, wb = connect(srv, "bob")
    assert a.send_message("one\ntwo\nthree")  # within the burst: at once, no progress
    assert _received(wb, 3, timeout=2.0) == ["one", "two", "three"]
    wa.none_of(EV.Sending, wait=0.1)
    assert a.send_message("\n".join(f"slow {i}" for i in range(20)))  # 30 s at 0.5/s
    _received(wb, 2, timeout=2.0)  # the burst's last two
    started = time.monotonic()
    a.quit("bye")  # the goodbye goes now; the paste's rest is dropped, not waited for
    wb.wait(EV.UserQuit, lambda e: e.nick == "alice" and "bye" in e.reason, timeout=3.0)
    assert time.monotonic() - started < 2.0


def test_pieces_are_what_others_receive(make_server: Callable[..., RunningServer],
                                        connect: Connect) -> None:  # noqa: F811
    srv = make_server(**LINES)
    a, _ = connect(srv, "alice")
    _b, wb = connect(srv, "bob")
    long = " ".join(f"word{i:04d}" for i in range(112))  # 1,007 characters
    text = f"first\n\n{long}\r\nlast  "
    pieces = a.pieces("#chat", text)
    assert len(pieces) == 5 and pieces[0] == "first" and pieces[-1] == "last  "
    assert "".join(pieces[1:4]) == long  # cut at spaces, nothing lost, no blank message
    assert a.send_message(text)
    assert _received(wb, 5) == pieces


def test_window_confirms_a_paste_then_sends_it_all(
        root: tk.Tk, make_app: Factory,  # noqa: F811
        make_server: Callable[..., RunningServer]) -> None:
    srv = make_server(**LINES)
    alice = make_app(srv, session_options={**FAST, **PACE})
    bob = make_app(srv)
    join_all(root, (alice, "alice"), (bob, "bob"))
    asked: list[str] = []
    answer = [False]

    def confirm(title: str, text: str) -> bool:
        asked.append(text)
        return answer[0]

    alice.confirm = confirm
    paste = "\n".join(f"pasted {i:03d}" for i in range(100))
    say(root, alice, paste)
    assert asked and "100 messages" in asked[0] and "about 2 s" in asked[0]
    assert alice.chat.entry.get() == paste  # refused: nothing sent, the text stays
    assert "pasted 000" not in bob.chat.contents()
    answer[0] = True
    alice.chat.entry.delete(0, "end")
    say(root, alice, paste)
    pump(root, lambda: "pasted 099" in bob.chat.contents(), timeout=10, what="the paste")
    got = [ln.split(": ", 1)[1] for ln in bob.chat.contents().splitlines()
           if ": pasted " in ln]
    assert got == [f"pasted {i:03d}" for i in range(100)]
    pump(root, lambda: "All 100 lines reached #chat." in alice.chat.contents(),
         what="paste done")
    # The sender's own window shows the same 100 lines, one by one (the server's echo).
    mine = [ln for ln in alice.chat.contents().splitlines() if ": pasted " in ln]
    assert len(mine) == 100
    assert alice.phase == "chat" and "alice" in srv.server.reg.nicks
    assert A.paste_seconds(100, 5, 2.0) == 48
    # A few lines go without asking.
    asked.clear()
    say(root, alice, "a\nb\nc")
    pump(root, lambda: ": c" in bob.chat.contents(), what="three lines")
    assert not asked


# --- with draft/multiline ------------------------------------------------------------------


def test_with_multiline_a_paste_is_one_message_and_never_cut_off(
        make_server: Callable[..., RunningServer], connect: Connect) -> None:  # noqa: F811
    srv = make_server(**FLOOD)
    a, wa = connect(srv, "alice", **PACE)
    _b, wb = connect(srv, "bob")
    raw = srv.client("raw", "#chat")  # no caps: the lines one by one
    lines = [f"line {i:03d}" for i in range(100)]
    lines[50] = ""  # a blank line inside is kept for those who can show it
    paste = "\n".join(lines)
    assert a.pieces("#chat", paste) == [paste]  # what others with multiline will see
    assert a.send_message(paste)
    assert wb.wait(EV.Message).text == paste
    got = raw.expect(lambda ln: ln.endswith("line 099"))
    assert [ln.split(" :", 1)[1] for ln in got if "PRIVMSG #chat" in ln] == [
        ln for ln in lines if ln]  # blank lines are not sent to them
    # Three such pastes at once: flood control counts each batch once.
    for n in range(3):
        assert a.send_message(paste.replace("line", f"again{n}"))
    for n in range(3):
        assert wb.wait(EV.Message).text.startswith(f"again{n} 000")
    wa.none_of(EV.Sending, wait=0.1)  # one unit each: no pacing, no progress to show
    wa.none_of(EV.Disconnected, wait=0.3)
    assert "alice" in srv.server.reg.nicks


def test_more_than_the_server_takes_goes_as_several_batches(
        make_server: Callable[..., RunningServer], connect: Connect) -> None:  # noqa: F811
    srv = make_server(**FLOOD, multiline_max_lines=10, multiline_max_bytes=200)
    a, wa = connect(srv, "alice", **PACE)
    _b, wb = connect(srv, "bob")
    assert a.multiline == S.MultilineLimits(200, 10)
    lines = [f"row {i:02d} " + "x" * 20 for i in range(25)]  # 30 bytes each
    paste = "\n".join(lines)
    pieces = a.pieces("#chat", paste)
    assert len(pieces) > 2 and "\n".join(pieces) == paste
    assert all(len(p.encode()) <= 200 and p.count("\n") < 10 for p in pieces)
    assert a.send_message(paste)
    assert [wb.wait(EV.Message).text for _ in pieces] == pieces
    wa.none_of(EV.Disconnected, wait=0.2)


def test_batches_are_cut_within_the_limits() -> None:
    limits = S.MultilineLimits(max_bytes=20, max_lines=3)
    batches = S.multiline_batches("\n\naaaa\n\nbbbb\ncccc\ndddd\n\n", 400, limits)
    assert [S.joined(b) for b in batches] == ["aaaa\n\nbbbb", "cccc\ndddd"]
    long = "word " * 10  # 50 bytes in pieces of at most 12
    (batch, *rest) = S.multiline_batches(long, 12, S.MultilineLimits(4096, None))
    assert not rest and S.joined(batch) == long  # cut after spaces: nothing lost
    assert batch[0][1] is False and all(concat for _, concat in batch[1:])
    assert S.MultilineLimits.parse("max-bytes=4096,max-lines=100,future=1") == (
        S.MultilineLimits(4096, 100))
    assert S.MultilineLimits.parse("max-lines=5") is None  # max-bytes is required
    assert S.MultilineLimits.parse("max-bytes=x") is None


def test_window_sends_a_paste_as_one_message_with_multiline(
        root: tk.Tk, make_app: Factory,  # noqa: F811
        make_server: Callable[..., RunningServer]) -> None:
    srv = make_server(**FLOOD)
    alice = make_app(srv, session_options={**FAST, **PACE})
    bob = make_app(srv)
    join_all(root, (alice, "alice"), (bob, "bob"))
    asked: list[str] = []
    alice.confirm = lambda title, text: asked.append(text) or True
    paste = "\n".join(f"pasted {i:03d}" for i in range(100))
    say(root, alice, paste)
    assert asked and "100 lines" in asked[0] and "one message" in asked[0]
    pump(root, lambda: "pasted 099" in bob.chat.contents(), timeout=10, what="the paste")
    assert f"alice: {paste}" in bob.chat.contents()  # one message, its lines in order
    pump(root, lambda: f"alice: {paste}" in alice.chat.contents(), what="the echo")
    assert alice.phase == "chat" and "alice" in srv.server.reg.nicks
    # Shift+Enter makes a line in the same message.
    alice.chat.entry.insert("end", "first")
    alice.chat.entry.focus_force()
    root.update()
    alice.chat.entry.event_generate("<Shift-Return>")
    alice.chat.entry.insert("end", "second")
    assert alice.chat.entry.get() == "first\nsecond"
    assert int(alice.chat.entry.cget("height")) == 2  # the field grew
    say(root, alice, "")
    pump(root, lambda: "alice: first\nsecond" in bob.chat.contents(), what="two lines")
    assert int(alice.chat.entry.cget("height")) == 1
