"""The Tk client under a real display (Xvfb when there is none), against a real server.

Two ChatApp windows live on Toplevels of one Tk root and talk through a real server.  Tests
drive the widgets (insert text, invoke buttons, generate <Return>) and assert on what the
widgets show; they pump the Tk loop until a condition holds, with a deadline.
"""

from __future__ import annotations

import gc
import logging
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import (
    ROOT,
    Cert,
    FakeServer,
    RunningServer,
    blackhole,
    free_port,
    make_cert,
    server_context,
)
from test_client_accounts import make_account
from test_client_history import local_noon, seed

from chatroom import app as A
from chatroom import lines as LN
from chatroom import protocol as P
from chatroom import session as S
from chatroom import slash
from chatroom.pins import PinStore
from chatroom.secrets_store import PasswordStore
from chatroom.settings import Saved

try:
    import tkinter as tk
except ImportError:  # reported by the root fixture: a skip locally, a failure in CI
    tk = None  # type: ignore[assignment]

FAST = {"backoff": S.Backoff(initial=0.05, factor=2.0, maximum=0.3, jitter=0.5)}


def pump(root: tk.Tk, cond: Callable[[], object], timeout: float = 5.0,
         what: str = "condition") -> None:
    """Run the Tk loop until ``cond()`` is true, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    tick = tk.IntVar(root)
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        root.after(5, tick.set, 1)
        root.wait_variable(tick)  # processes events (including the app's after()) meanwhile


Factory = Callable[..., A.ChatApp]


@pytest.fixture
def make_app(root: tk.Tk, tmp_path: Path) -> Iterator[Factory]:
    apps: list[A.ChatApp] = []

    def factory(srv: RunningServer | FakeServer | None = None, name: str = "",
                **kw: object) -> A.ChatApp:
        top = tk.Toplevel(root)
        top.geometry("820x520")
        port = srv.address[1] if srv else S.DEFAULT_PORT
        kw.setdefault("session_options", FAST)
        # Never the user's own remembered passwords.
        kw.setdefault("passwords", PasswordStore(tmp_path / "config" / "passwords.json"))
        app = A.ChatApp(top, "127.0.0.1", port, name, **kw)  # type: ignore[arg-type]
        apps.append(app)
        root.update()
        return app

    yield factory
    sessions = [a.session for a in apps if a.session] + [s for a in apps for s in a.retired]
    for a in apps:
        a.exit_program()
    apps.clear()
    # Tk variables held in reference cycles must die here, on the Tk thread: left to the cyclic
    # collector they may be freed later on whichever thread allocates (a server thread in another
    # test), where Variable.__del__ raises "main thread is not in main loop".
    gc.collect()
    for s in sessions:
        assert not s.alive, "a session thread outlived Exit"


def press_return(root: tk.Tk, widget: tk.Widget) -> None:
    """Key events go to the focus window, as they do for a user: focus it, then press."""
    widget.focus_force()
    pump(root, lambda: root.focus_get() is widget, what="focus")
    widget.event_generate("<Return>")


def join(root: tk.Tk, app: A.ChatApp, name: str, timeout: float = 5.0) -> None:
    entry = app.login.name_entry
    entry.delete(0, "end")
    entry.insert(0, name)
    press_return(root, entry)
    pump(root, lambda: app.phase == "chat" and app.chat.count_var.get() != "0 online",
         timeout, f"{name} to join")


def join_all(root: tk.Tk, *pairs: tuple[A.ChatApp, str]) -> None:
    """Join each app under its name, then wait until every window counts everyone."""
    for app, name in pairs:
        join(root, app, name)
    want = f"{len(pairs)} online"
    pump(root, lambda: all(a.chat.count_var.get() == want for a, _ in pairs),
         what=f"every window to show {want}")


def say(root: tk.Tk, app: A.ChatApp, text: str) -> None:
    app.chat.entry.insert(0, text)
    press_return(root, app.chat.entry)


def listed(app: A.ChatApp) -> list[str]:
    return list(app.chat.listbox.get(0, "end"))


def test_login_view_starts_focused_on_name(root: tk.Tk, make_app: Factory) -> None:
    app = make_app(name="zoe")
    assert app.master.focus_lastfor() is app.login.name_entry
    assert app.login.name_var.get() == "zoe"
    assert app.login.host_var.get() == "127.0.0.1"
    assert app.login.join_button.cget("text") == "Join Chat"


def test_bad_name_is_explained_before_anything_is_sent(
        root: tk.Tk, make_app: Factory, srv: RunningServer,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chatroom")
    app = make_app(srv)
    for bad, words in [("", "required"), ("9lives", "digit"), ("two words", "spaces"),
                       ("x" * 40, "at most 30"), ("bé", "only letters")]:
        app.login.name_var.set(bad)
        app.login.join_button.invoke()
        root.update()
        assert words in app.login.message_var.get(), bad
        assert app.session is None and app.phase == "login"
    app.login.port_var.set("99999")
    app.login.name_var.set("fine")
    app.login.join_button.invoke()
    assert "1 to 65535" in app.login.message_var.get()
    assert app.session is None
    # Nothing went out for any of those: the first connection the server sees is this one.
    app.login.port_var.set(str(srv.address[1]))
    join(root, app, "fine")
    connects = [r for r in caplog.records if r.getMessage().startswith("connect ")]
    assert len(connects) == 1


def test_taken_name_then_retry_under_another(root: tk.Tk, make_app: Factory,
                                             srv: RunningServer) -> None:
    srv.client("alice")
    app = make_app(srv)
    app.login.name_var.set("alice")
    app.login.join_button.invoke()
    pump(root, lambda: "taken" in app.login.message_var.get(), what="taken message")
    assert app.phase == "login" and app.login.join_button.cget("text") == "Join Chat"
    join(root, app, "alice2")
    assert listed(app) == ["@alice2"]


def test_refused_connection_then_wrong_password_then_right(
        root: tk.Tk, make_app: Factory, make_server: Callable[..., RunningServer]) -> None:
    srv = make_server(password="sesame")
    app = make_app(srv)
    app.login.port_var.set(str(free_port()))
    app.login.name_var.set("alice")
    app.login.join_button.invoke()
    pump(root, lambda: "refused" in app.login.message_var.get(), what="refused message")
    assert "Is the server running?" in app.login.message_var.get()
    # The port is at fault, not the name: it is selected, the name is left alone.
    pump(root, lambda: root.focus_get() is app.login.port_entry, what="focus on the port")
    assert app.login.port_entry.selection_present()
    assert app.login.name_var.get() == "alice"
    app.login.port_var.set(str(srv.address[1]))
    app.login.join_button.invoke()
    pump(root, lambda: "password" in app.login.message_var.get(), what="password message")
    assert "Server password" in app.login.message_var.get()
    pump(root, lambda: root.focus_get() is app.login.server_password_entry, what="focus")
    app.login.server_password_var.set("wrong")
    app.login.join_button.invoke()
    pump(root, lambda: "refused the password" in app.login.message_var.get(),
         what="wrong password")
    app.login.server_password_var.set("sesame")
    # The refused connection may hold the name for a moment.
    assert srv.wait_for(lambda: "alice" not in srv.server.reg.nicks)
    join(root, app, "alice")


def test_cancel_while_connecting(root: tk.Tk, make_app: Factory) -> None:
    import socket
    with socket.socket() as silent:  # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        app = make_app(session_options={"register_timeout": 30.0})
        app.login.port_var.set(str(silent.getsockname()[1]))
        app.login.name_var.set("alice")
        app.login.join_button.invoke()
        assert app.phase == "connecting" and app.login.join_button.cget("text") == "Cancel"
        press_return(root, app.login.name_entry)  # Enter again does not cancel
        assert app.phase == "connecting"
        session = app.session
        app.login.join_button.invoke()
        assert app.phase == "login" and app.login.join_button.cget("text") == "Join Chat"
        pump(root, lambda: session is not None and not session.alive, what="session end")



def test_two_windows_talk_and_count_follows(root: tk.Tk, make_app: Factory,
                                            srv: RunningServer) -> None:
    alice, bob = make_app(srv), make_app(srv)
    join_all(root, (alice, "alice"), (bob, "bob"))
    assert listed(alice) == ["@alice", "bob"] == listed(bob)
    pump(root, lambda: bob.master.focus_lastfor() is bob.chat.entry,
         what="the message field to have focus")

    say(root, bob, "hello 😀 from bob")
    # The field clears at once; the own line is the server's echo (echo-message).
    assert bob.chat.entry.get() == ""
    pump(root, lambda: "bob: hello 😀 from bob" in bob.chat.contents(), what="the echo")
    pump(root, lambda: "bob: hello 😀 from bob" in alice.chat.contents(), what="relay")
    line = next(ln for ln in alice.chat.contents().splitlines() if "hello" in ln)
    assert line[0] == "[" and line[6:8] == "] "  # [HH:MM] name: text
    # Own and others' lines are told apart by tags.
    assert "own_nick" in bob.chat.text.tag_names("end-2l linestart +8c")
    assert "nick" in alice.chat.text.tag_names("end-2l linestart +8c")

    carol = srv.client("carol", "#chat")
    pump(root, lambda: alice.chat.count_var.get() == "3 online"
         and bob.chat.count_var.get() == "3 online", what="3 online")
    assert listed(bob) == ["@alice", "bob", "carol"]
    assert "carol joined #chat" in alice.chat.contents()
    carol.send("PRIVMSG #chat :hi all")
    carol.send("NICK caroline")
    pump(root, lambda: listed(alice) == ["@alice", "bob", "caroline"] == listed(bob),
         what="rename")
    assert "carol is now known as caroline" in bob.chat.contents()
    carol.send("QUIT :bye")
    pump(root, lambda: alice.chat.count_var.get() == "2 online"
         and bob.chat.count_var.get() == "2 online", what="back to 2")
    assert "caroline quit (Quit: bye)" in alice.chat.contents()
    # Refresh asks the server again: make the list wrong behind the client's back, and
    # only the NAMES reply can put it right.
    alice.chat.set_members(["stale"])
    assert alice.chat.count_var.get() == "1 online"
    alice.chat.refresh_button.invoke()
    pump(root, lambda: listed(alice) == ["@alice", "bob"]
         and alice.chat.count_var.get() == "2 online", what="the NAMES reply")


def test_leave_then_join_again_under_another_name(root: tk.Tk, make_app: Factory,
                                                  srv: RunningServer) -> None:
    alice, bob = make_app(srv), make_app(srv)
    join_all(root, (alice, "alice"), (bob, "bob"))
    say(root, alice, "said before bob left")
    pump(root, lambda: "alice: said before bob left" in bob.chat.contents(), what="said")
    bob.chat.leave_button.invoke()
    assert bob.phase == "login" and bob.login.frame.winfo_manager() == "pack"
    assert bob.login.name_var.get() == "bob"
    pump(root, lambda: bob.master.focus_lastfor() is bob.login.name_entry, what="name focus")
    pump(root, lambda: alice.chat.count_var.get() == "1 online", what="bob left")
    assert "bob left #chat" in alice.chat.contents()
    join(root, bob, "robert")
    pump(root, lambda: listed(alice) == ["@alice", "robert"], what="robert joined")
    # A fresh view (the room's history, bob's lines in it too, is fetched again).
    pump(root, lambda: "new messages below" in bob.chat.contents(), what="the history")
    assert "You joined #chat as bob." not in bob.chat.contents()
    # Leaving did not wipe the conversation: it comes back from the room's history.
    pump(root, lambda: "alice: said before bob left" in bob.chat.contents(), what="kept")
    say(root, bob, "I'm back")
    pump(root, lambda: "robert: I'm back" in alice.chat.contents(), what="message")


def test_exit_program_quits_and_closes(root: tk.Tk, make_app: Factory,
                                       srv: RunningServer) -> None:
    alice, bob = make_app(srv), make_app(srv)
    join_all(root, (alice, "alice"), (bob, "bob"))
    session = bob.session
    assert session is not None
    top = bob.master
    bob.chat.exit_button.invoke()
    assert not session.alive
    assert not top.winfo_exists()
    pump(root, lambda: "bob quit (Quit: Goodbye)" in alice.chat.contents(), what="quit")
    assert alice.chat.count_var.get() == "1 online"
    # Closing the window is Exit Program.
    session = alice.session
    assert session is not None
    top = alice.master
    root.tk.call(top.protocol("WM_DELETE_WINDOW"))
    assert not session.alive and not top.winfo_exists()
    assert srv.wait_for(lambda: not srv.server.reg.nicks)


def test_slash_commands(root: tk.Tk, make_app: Factory, srv: RunningServer) -> None:
    alice, bob = make_app(srv), make_app(srv)
    join_all(root, (alice, "alice"), (bob, "bob"))
    say(root, bob, "/me waves 👋")
    pump(root, lambda: "* bob waves 👋" in bob.chat.contents(), what="own action")
    pump(root, lambda: "* bob waves 👋" in alice.chat.contents(), what="action")
    assert "action" in alice.chat.text.tag_names("end-2l lineend -2c")
    say(root, bob, "/msg alice just between us")
    pump(root, lambda: "bob → alice (private): just between us" in bob.chat.contents(),
         what="own private message")
    # Alice gets it in a conversation of its own, marked in her list; her room view stays.
    pump(root, lambda: alice.convs.get("bob") is not None, what="private conversation")
    talk = alice.convs.get("bob")
    assert talk is not None and talk.private
    pump(root, lambda: "bob: just between us" in alice.chat.contents(talk.pane), what="msg")
    assert alice.current is not None and alice.current.name == "#chat"
    assert "just between us" not in alice.chat.contents()
    assert talk.mentioned == 1 and alice.chat.convlist.get(1) == "bob  (1!)"
    alice.conversation_clicked(1)
    assert alice.current is talk and talk.unread == 0
    assert alice.chat.convlist.get(1) == "bob"
    assert alice.chat.room_var.get() == "Talking with bob"
    alice.conversation_clicked(0)
    say(root, alice, "/topic Friday plans 🎉")
    pump(root, lambda: bob.chat.topic_var.get() == "Topic: Friday plans 🎉", what="topic")
    assert "alice set the topic: Friday plans 🎉" in bob.chat.contents()
    say(root, bob, "/topic")
    pump(root, lambda: "Topic: Friday plans 🎉" in bob.chat.contents(), what="topic query")
    say(root, bob, "/topic mine now")
    pump(root, lambda: "Only room operators" in bob.chat.contents(), what="not op")
    # Refused by the server: the line comes back into the field, selected.
    pump(root, lambda: bob.chat.entry.get() == "/topic mine now", what="line restored")
    assert bob.chat.entry.selection_present()
    bob.chat.entry.delete(0, "end")
    say(root, bob, "/nick bobby")
    pump(root, lambda: listed(alice) == ["@alice", "bobby"] == listed(bob), what="nick")
    assert "You are now known as bobby" in bob.chat.contents()
    assert "bobby" in str(bob.master.title())
    say(root, bob, "/nick 1x")
    assert "cannot start with a digit" in bob.chat.contents()
    assert bob.chat.entry.get() == "/nick 1x"  # a refused command stays for correction
    bob.chat.entry.delete(0, "end")
    say(root, bob, "/names")
    pump(root, lambda: "In #chat (2): @alice, bobby" in bob.chat.contents(), what="names")
    say(root, bob, "/help")
    assert "/msg <name> <text>" in bob.chat.contents()
    say(root, bob, "/frobnicate now")
    assert "Unknown command /frobnicate" in bob.chat.contents()
    bob.chat.entry.delete(0, "end")
    say(root, bob, "//not a command")
    pump(root, lambda: "bobby: /not a command" in alice.chat.contents(), what="escaped /")
    session = bob.session
    assert session is not None
    say(root, bob, "/quit see you")
    assert not session.alive and not bob.master.winfo_exists()
    pump(root, lambda: "bobby quit (Quit: see you)" in alice.chat.contents(), what="quit")


def test_unread_count_in_title(root: tk.Tk, make_app: Factory, srv: RunningServer) -> None:
    alice, bob = make_app(srv), make_app(srv)
    join_all(root, (alice, "alice"), (bob, "bob"))
    alice.chat.entry.focus_force()
    pump(root, lambda: root.focus_get() is alice.chat.entry, what="focus on alice")
    say(root, alice, "one")
    say(root, alice, "two")
    pump(root, lambda: str(bob.master.title()).startswith("(2) "), what="unread 2")
    assert not str(alice.master.title()).startswith("(")
    bob.chat.entry.focus_force()
    pump(root, lambda: not str(bob.master.title()).startswith("("), what="read")


def test_emoji_and_any_unicode_display(root: tk.Tk, make_app: Factory,
                                       srv: RunningServer) -> None:
    alice, bob = make_app(srv), make_app(srv)
    join_all(root, (alice, "alice"), (bob, "bob"))
    samples = ["😀🎉👍🏽 \U0001F1EB\U0001F1F7 👨‍👩‍👧", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟘𝟙𝟚", "עברית العربية 日本語 한국어",
               "e\u0301 \u200b zero-width", "🦄" * 100]
    raw = srv.client("raw", "#chat")
    for s in samples:
        say(root, bob, s)
        raw.send(f"PRIVMSG #chat :{s}")
    raw.send("PRIVMSG bob :\x01ACTION 🐍 private action\x01")
    for s in samples:
        pump(root, lambda s=s: f"bob: {s}" in alice.chat.contents(), what=repr(s))
        pump(root, lambda s=s: f"raw: {s}" in bob.chat.contents(), what=repr(s))
    pump(root, lambda: bob.convs.get("raw") is not None, what="private conversation")
    talk = bob.convs.get("raw")
    assert talk is not None
    pump(root, lambda: "* raw 🐍 private action" in bob.chat.contents(talk.pane),
         what="private action")
    # Tags were applied at insert time: the nick after an emoji line is still the nick.
    say(root, bob, "🦄🦄 after")
    pump(root, lambda: "bob: 🦄🦄 after" in bob.chat.contents(), what="own line")
    assert bob.chat.text.get("end-2l linestart +8c", "end-2l linestart +11c") == "bob"
    assert "own_nick" in bob.chat.text.tag_names("end-2l linestart +8c")


def test_flood_is_capped_and_ui_stays_responsive(root: tk.Tk, make_app: Factory,
                                                 srv: RunningServer) -> None:
    app = make_app(srv, scrollback=500)
    join(root, app, "alice")
    total = 3000
    flooder = srv.client("flood", "#chat")
    gaps: list[float] = []
    last = [time.monotonic()]

    def heartbeat() -> None:
        now = time.monotonic()
        gaps.append(now - last[0])
        last[0] = now
        if not done.is_set():
            root.after(10, heartbeat)

    done = threading.Event()
    rate: list[float] = []

    def flood() -> None:
        start = time.monotonic()
        for i in range(0, total, 100):  # 100 lines at a time, at about 5,000 lines/s
            flooder.send("".join(f"PRIVMSG #chat :flood line {j} 🌊\r\n"
                                 for j in range(i, i + 100)))
            time.sleep(0.02)
        rate.append(total / (time.monotonic() - start))

    sender = threading.Thread(target=flood)
    root.after(10, heartbeat)
    sender.start()
    try:
        typed = "still typing"
        app.chat.entry.focus_force()
        pump(root, lambda: root.focus_get() is app.chat.entry, what="focus")
        for ch in typed:  # keystrokes go through while the flood arrives
            app.chat.entry.event_generate("<Key>", keysym=ch if ch != " " else "space",
                                          when="tail")
        pump(root, lambda: f"flood line {total - 1} 🌊" in app.chat.contents(), timeout=15,
             what="the last flood line")
    finally:
        done.set()
        sender.join()
    assert rate and rate[0] >= 1000
    assert app.chat.line_count() == 500
    assert app.chat.text.get("end-2l linestart", "end-2c").endswith(f"flood line {total - 1} 🌊")
    print(f"rate {rate[0]:.0f}/s, max gap {max(gaps):.3f}s, ticks {len(gaps)}")
    assert max(gaps) < 0.5, f"the UI stalled for {max(gaps):.2f}s"
    assert app.chat.entry.get() == typed
    app.chat.entry.delete(0, "end")
    say(root, app, "after the flood")
    pump(root, lambda: "alice: after the flood" in app.chat.contents(), what="own line")


def test_reconnect_shows_and_recovers(root: tk.Tk, make_app: Factory,
                                      srv: RunningServer) -> None:
    alice, bob = make_app(srv), make_app(srv)
    join_all(root, (alice, "alice"), (bob, "bob"))
    with srv.server.reg.lock:
        victim = srv.server.reg.nicks["bob"]
    srv.server.kill(victim, "testing drop")
    pump(root, lambda: "Connection lost" in bob.chat.contents(), what="lost")
    pump(root, lambda: "Reconnected" in bob.chat.contents(), what="reconnected")
    pump(root, lambda: bob.chat.count_var.get() == "2 online", what="count back")
    pump(root, lambda: not bob.chat.banner.winfo_ismapped(), what="the banner to go")
    say(root, bob, "back again")
    pump(root, lambda: "bob: back again" in alice.chat.contents(), what="message")


def test_back_to_login_while_disconnected(root: tk.Tk, make_app: Factory,
                                          make_server: Callable[..., RunningServer]) -> None:
    srv = make_server()
    app = make_app(srv)
    join(root, app, "alice")
    srv.stop()
    pump(root, lambda: "Reconnecting in" in app.chat.conn_var.get(), what="reconnecting")
    pump(root, app.chat.banner.winfo_ismapped, what="the banner to show")
    session = app.session
    app.chat.back_button.invoke()
    assert app.phase == "login"
    status = app.login.status_var.get()
    assert "disconnected" in status and "You left" not in status
    pump(root, lambda: session is not None and not session.alive, what="session ended")


def test_process_ends_after_exit(display: str, root: tk.Tk, srv: RunningServer) -> None:
    """python client.py: join, Exit Program, and the process exits with no thread left."""
    script = textwrap.dedent(f"""
        import sys, threading, time
        sys.argv = ["client.py", "--port", "{srv.address[1]}", "--name", "proc"]
        import chatroom.app as client
        orig = client.ChatApp.__init__
        def init(self, *a, **k):
            orig(self, *a, **k)
            def drive():
                if self.phase == "chat":
                    self.chat.exit_button.invoke()
                else:
                    if self.phase == "login":
                        self.login.join_button.invoke()
                    self.master.after(20, drive)
            self.master.after(20, drive)
        client.ChatApp.__init__ = init
        code = client.main()
        assert threading.active_count() == 1, threading.enumerate()
        print("exited", code)
    """)
    proc = subprocess.run([sys.executable, "-c", script], check=False, cwd=ROOT, capture_output=True,
                          text=True, timeout=20, env={**os.environ, "DISPLAY": display})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "exited 0"


# --- the log panel, the banner, the topic -------------------------------------------------


def last_line_visible(app: A.ChatApp) -> bool:
    """Is the newest line of the log entirely in view?"""
    t = app.chat.text
    info = t.dlineinfo("end-2c")
    return info is not None and info[1] + info[3] <= t.winfo_height()


def test_log_keeps_the_newest_line_in_view_when_it_shrinks(
        root: tk.Tk, make_app: Factory, make_server: Callable[..., RunningServer]) -> None:
    srv = make_server()
    app = make_app(srv)
    join(root, app, "alice")
    raw = srv.client("raw", "#chat")
    for i in range(150):
        app.chat.add([(f"filler line {i}", ())])
    app.chat.flush()
    app.chat.text.yview_moveto(1.0)
    pump(root, lambda: last_line_visible(app), what="the log at the bottom")
    height = app.chat.text.winfo_height()
    # A long topic wraps to several lines and takes room from the log...
    say(root, app, "/topic " + "a topic that goes on and on " * 10)
    pump(root, lambda: app.chat.text.winfo_height() < height, what="the log to shrink")
    raw.send("PRIVMSG #chat :after the topic")
    pump(root, lambda: "raw: after the topic" in app.chat.contents(), what="message")
    pump(root, lambda: last_line_visible(app), what="the new line in view")
    # ...and so does the red banner when the connection drops.
    height = app.chat.text.winfo_height()
    srv.stop()
    pump(root, lambda: app.chat.banner.winfo_ismapped()
         and app.chat.text.winfo_height() < height
         and "Connection lost" in app.chat.contents(), what="the banner")
    pump(root, lambda: last_line_visible(app), what="the error line in view")
    # Scrolled up by the user, the view stays where it is when lines arrive.
    for _ in range(6):
        app.chat.text.event_generate("<Button-4>")
    pump(root, lambda: not app.chat.follow, what="scrolled up")
    app.error("while scrolled up")
    pump(root, lambda: "while scrolled up" in app.chat.contents(), what="line")
    assert not last_line_visible(app)
    app.chat.text.yview_moveto(1.0)
    app.chat.text.event_generate("<Button-5>")  # back at the bottom: follow again
    pump(root, lambda: app.chat.follow, what="following again")
    app.error("at the bottom again")
    pump(root, lambda: last_line_visible(app), what="the newest line in view")


def test_topic_is_cleared_after_reconnecting_to_a_restarted_server(
        root: tk.Tk, make_app: Factory, make_server: Callable[..., RunningServer]) -> None:
    first = make_server()
    port = first.address[1]
    app = make_app(first)
    join(root, app, "alice")
    say(root, app, "/topic old news")
    pump(root, lambda: app.chat.topic_var.get() == "Topic: old news", what="topic")
    first.stop()
    pump(root, app.chat.banner.winfo_ismapped, what="the banner")
    make_server(port=port)  # a new server knows no topic
    pump(root, lambda: "Reconnected" in app.chat.contents(), timeout=10, what="reconnect")
    pump(root, lambda: app.chat.topic_var.get() == "No topic is set", what="topic cleared")


def test_reconnect_banner_counts_down(root: tk.Tk, make_app: Factory,
                                      make_server: Callable[..., RunningServer]) -> None:
    srv = make_server()
    app = make_app(srv, session_options={
        "backoff": S.Backoff(initial=2.0, factor=1.0, maximum=2.0, jitter=0.0)})
    join(root, app, "alice")
    srv.stop()
    pump(root, lambda: "Reconnecting in 2 s" in app.chat.conn_var.get(), what="2 s")
    pump(root, lambda: "Reconnecting in 1 s" in app.chat.conn_var.get(), what="1 s")


def test_name_in_use_while_reconnecting_is_shown(root: tk.Tk, make_app: Factory,
                                                 fake: FakeServer) -> None:
    app = make_app(fake)
    app.login.name_var.set("alice")
    app.login.join_button.invoke()
    first = fake.peer()
    first.welcome()
    first.join()
    pump(root, lambda: app.phase == "chat", what="chat")
    first.close()
    for _ in range(S.ChatSession.NAME_TRIES):
        peer = fake.peer()
        peer.expect("USER")
        peer.send(":fake.server 433 * alice :Nickname is already in use")
    pump(root, lambda: "still in use" in app.chat.conn_var.get()
         and app.chat.back_button.winfo_ismapped(), what="giving up, with Back to Login")
    assert "Your name “alice” is in use on the server" in app.chat.contents()
    app.chat.back_button.invoke()
    assert app.phase == "login" and "disconnected" in app.login.status_var.get()


def test_join_refused_is_shown_on_the_login(root: tk.Tk, make_app: Factory,
                                            fake: FakeServer) -> None:
    app = make_app(fake)
    app.login.name_var.set("alice")
    app.login.join_button.invoke()
    peer = fake.peer()
    peer.welcome()
    peer.expect("JOIN #chat")
    peer.send(":fake.server 477 alice #chat :Cannot join channel (+r)")
    pump(root, lambda: "would not let you into #chat" in app.login.message_var.get(),
         what="the refusal")
    assert app.phase == "login" and app.login.join_button.cget("text") == "Join Chat"


# --- the message field -------------------------------------------------------------------


def type_keys(root: tk.Tk, widget: tk.Widget, text: str) -> None:
    widget.focus_force()
    pump(root, lambda: root.focus_get() is widget, what="focus")
    for ch in text:
        widget.event_generate("<Key>", keysym=ch if ch != " " else "space", when="tail")
    root.update_idletasks()


def test_refused_text_is_selected_and_typing_replaces_it(root: tk.Tk, make_app: Factory,
                                                         srv: RunningServer) -> None:
    alice, bob = make_app(srv), make_app(srv)
    join_all(root, (alice, "alice"), (bob, "bob"))
    for refused, why in [("/nick 9lives", "cannot start with a digit"),
                         ("/foo bar", "Unknown command /foo")]:
        say(root, bob, refused)
        assert why in bob.chat.contents()
        assert bob.chat.entry.get() == refused and bob.chat.entry.selection_present()
        type_keys(root, bob.chat.entry, "hi")
        pump(root, lambda: bob.chat.entry.get() == "hi", what="typing replaced it")
        bob.chat.entry.delete(0, "end")
    # Selecting text in another window must not take that selection away.
    say(root, bob, "/foo again")
    assert bob.chat.entry.selection_present()
    alice.chat.entry.insert(0, "something else")
    alice.chat.entry.selection_range(0, "end")
    root.update_idletasks()
    assert bob.chat.entry.selection_present()
    type_keys(root, bob.chat.entry, "ok")
    pump(root, lambda: bob.chat.entry.get() == "ok", what="typing still replaced it")
    bob.chat.entry.delete(0, "end")
    alice.chat.entry.delete(0, "end")
    # The server's refusal brings the line back, selected.
    say(root, bob, "/nick alice")
    pump(root, lambda: "already taken" in bob.chat.contents(), what="433")
    pump(root, lambda: bob.chat.entry.get() == "/nick alice", what="line restored")
    assert bob.chat.entry.selection_present()


def test_tab_completes_names_and_ctrl_a_selects_the_line(root: tk.Tk, make_app: Factory,
                                                        srv: RunningServer) -> None:
    alice, bob, bobby = make_app(srv), make_app(srv), make_app(srv)
    join_all(root, (alice, "alice"), (bob, "bob"), (bobby, "bobby"))
    entry = alice.chat.entry
    type_keys(root, entry, "bo")
    entry.event_generate("<Tab>", when="tail")
    pump(root, lambda: entry.get() == "bob: ", what="first completion")
    assert root.focus_get() is entry  # Tab did not move the focus to Send
    entry.event_generate("<Tab>", when="tail")
    pump(root, lambda: entry.get() == "bobby: ", what="Tab again: the next match")
    type_keys(root, entry, "hi al")
    entry.event_generate("<Tab>", when="tail")
    pump(root, lambda: entry.get() == "bobby: hi alice ", what="a name mid-line")
    entry.event_generate("<Tab>", when="tail")  # one match: it stays
    pump(root, lambda: entry.get() == "bobby: hi alice ", what="one match stays")
    entry.icursor(3)
    entry.event_generate("<Control-a>", when="tail")
    pump(root, lambda: entry.selection_present() and entry.index("sel.first") == 0
         and entry.index("sel.last") == len(entry.get()), what="Ctrl+A selects all")
    entry.delete(0, "end")


def test_a_failed_private_message_is_not_shown_as_sent(root: tk.Tk, make_app: Factory,
                                                      srv: RunningServer) -> None:
    app = make_app(srv)
    join(root, app, "alice")
    before = app.chat.contents()
    say(root, app, "/msg nosuchuser secret words")
    pump(root, lambda: "nosuchuser" in app.chat.contents()[len(before):], what="the refusal")
    shown = app.chat.contents()[len(before):]
    # With echo-message a line shows once the server has taken it; a refused one never does
    # (an echo would have come before the 401).
    assert "secret words" not in shown, shown


def test_topic_longer_than_topiclen_is_refused_with_a_warning(
        root: tk.Tk, make_app: Factory, srv: RunningServer) -> None:
    app = make_app(srv)
    join(root, app, "alice")
    assert app.session is not None and app.session.topiclen == 390  # from the server's 005
    long_topic = "/topic " + "word " * 90
    say(root, app, long_topic)
    assert "too long for this server" in app.chat.contents()
    assert app.chat.entry.get() == long_topic
    app.chat.entry.delete(0, "end")
    say(root, app, "/topic short")
    pump(root, lambda: app.chat.topic_var.get() == "Topic: short", what="topic")


def test_lone_surrogate_in_the_message_field(root: tk.Tk, make_app: Factory,
                                             srv: RunningServer) -> None:
    alice, bob = make_app(srv), make_app(srv)
    join_all(root, (alice, "alice"), (bob, "bob"))
    entry = bob.chat.entry
    entry.insert(0, "half ")
    root.tk.eval(f"{entry} insert end [format %c 0xD83D]")  # as Tk can leave half an emoji
    entry.insert("end", " end")
    press_return(root, entry)
    pump(root, lambda: "bob: half \ufffd" in alice.chat.contents(), what="the message")
    assert entry.get() == ""


def test_help_descriptions_line_up(root: tk.Tk, make_app: Factory, srv: RunningServer) -> None:
    app = make_app(srv)
    join(root, app, "alice")
    say(root, app, "/help")
    app.master.update_idletasks()
    t = app.chat.text
    xs = set()
    for _command, what in slash.HELP:
        index = t.search(what, "1.0")
        t.see(index)
        app.master.update_idletasks()
        box = t.bbox(index)
        assert box is not None, what
        xs.add(box[0])
    assert len(xs) == 1, f"descriptions start at {sorted(xs)}"


def test_login_form_stays_put_when_the_message_changes(root: tk.Tk, make_app: Factory) -> None:
    app = make_app()
    login = app.login

    def where() -> tuple[int, int]:
        app.master.update_idletasks()
        return login.name_entry.winfo_rootx(), login.name_entry.winfo_rooty()

    before = where()
    login.show_status("Connecting to 127.0.0.1:1027…")
    assert where() == before
    login.show_error("Nothing is answering at some-host.example:1027: the connection was "
                     "refused. Is the server running? Check the host and port, and that "
                     "your network can reach the server.")
    assert where() == before
    login.show_error("")
    assert where() == before


# --- leaving, kicks, formatting -----------------------------------------------------------


def test_kicked_then_join_again(root: tk.Tk, make_app: Factory, srv: RunningServer) -> None:
    boss = srv.client("boss", "#chat")
    app = make_app(srv)
    join(root, app, "alice")
    boss.send("KICK #chat alice :\x02rude\x02")
    pump(root, lambda: "You were removed from #chat by boss (rude)" in app.chat.contents(),
         what="the kick")
    # Said in the room's log (not in the banner, which is about the connection: other rooms
    # are fine), with what to do; greyed in the list.
    pump(root, lambda: "Type /join to join #chat again" in app.chat.contents(),
         what="how to rejoin")
    assert not app.chat.banner.winfo_ismapped()
    assert app.chat.convlist.itemcget(0, "foreground") == "#8a8f98"
    # Still connected, but not in the room: said so, greyed, not "0 online" in green.
    assert app.chat.count_var.get() == "not in the room"
    assert app.chat.count_label.cget("style") == "Offline.TLabel"
    say(root, app, "/join")
    pump(root, lambda: app.chat.count_var.get() == "2 online", what="back in")
    assert "You joined #chat again" in app.chat.contents()
    boss.send("PRIVMSG #chat :\x0304,01red\x03 and \x1fplain\x0f")
    pump(root, lambda: "boss: red and plain" in app.chat.contents(), what="no colour codes")


# --- robustness -------------------------------------------------------------------------


def test_an_error_in_one_handler_does_not_stop_the_window(
        root: tk.Tk, make_app: Factory, srv: RunningServer,
        caplog: pytest.LogCaptureFixture) -> None:
    alice, bob = make_app(srv), make_app(srv)
    join_all(root, (alice, "alice"), (bob, "bob"))
    broken: list[str] = []

    def set_topic(text: str) -> None:
        broken.append(text)
        raise RuntimeError("a bug in a handler")

    alice.chat.set_topic = set_topic  # type: ignore[method-assign]
    say(root, alice, "/topic boom")
    say(root, bob, "still here")
    pump(root, lambda: "bob: still here" in alice.chat.contents(), what="later events")
    assert broken == ["boom"]
    assert any("a bug in a handler" in (r.exc_text or "") or r.exc_info
               for r in caplog.records if r.name == "chatroom.app")


def test_member_churn_updates_the_list_once_per_tick(root: tk.Tk, make_app: Factory,
                                                     fake: FakeServer) -> None:
    app = make_app(fake)
    app.login.name_var.set("alice")
    app.login.join_button.invoke()
    peer = fake.peer()
    peer.welcome()
    others = [f"user{i:04d}" for i in range(3000)]
    peer.join(names=["alice", *others])
    pump(root, lambda: app.chat.count_var.get() == "3001 online", timeout=10, what="3001")
    session = app.session
    assert session is not None
    start = time.perf_counter()
    app.chat.set_members(session.members)
    one_rebuild = time.perf_counter() - start

    rebuilds = [0]
    ticks: list[float] = []
    set_members, tick = app.chat.set_members, app._tick

    def counting(members: object, *rest: object) -> None:
        rebuilds[0] += 1
        set_members(members, *rest)  # type: ignore[arg-type]

    def timed() -> bool:
        t0 = time.perf_counter()
        try:
            return tick()
        finally:
            ticks.append(time.perf_counter() - t0)

    app.chat.set_members = counting  # type: ignore[method-assign]
    app._tick = timed  # type: ignore[method-assign]
    peer.send(*(f":{nick}!u@h QUIT :bye" for nick in others[:300]))
    pump(root, lambda: app.chat.count_var.get() == "2701 online", timeout=15, what="2701")
    busy = [t for t in ticks if t > 0]
    print(f"one rebuild {one_rebuild * 1000:.1f} ms, {rebuilds[0]} rebuilds in "
          f"{len(ticks)} ticks, longest tick {max(busy) * 1000:.1f} ms")
    assert rebuilds[0] <= len(ticks) and rebuilds[0] < 300 // 3
    # Rebuilding once per event would cost about 300 rebuilds in the worst tick.
    assert max(busy) < 30 * one_rebuild + 0.25


def test_exit_and_cancel_while_connecting_are_immediate(
        root: tk.Tk, make_app: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    with blackhole() as address:
        app = make_app(session_options={"connect_timeout": 30.0})
        app.login.port_var.set(str(address[1]))
        app.login.name_var.set("alice")
        sessions = []
        for _ in range(2):
            app.login.join_button.invoke()  # Join Chat...
            assert app.session is not None
            sessions.append(app.session)
            pump(root, lambda: app.session is not None and app.session.state == "connecting",
                 what="connecting")
            app.login.join_button.invoke()  # ...Cancel
        pump(root, lambda: not any(s.alive for s in sessions), timeout=2.0,
             what="cancelled sessions to end")
        app.login.join_button.invoke()
        assert app.session is not None
        sessions.append(app.session)
        top = app.master
        seen: list[str] = []
        close_sessions = A.close_sessions

        def spy(ss: list[S.ChatSession], timeout: float = 2.0) -> None:
            seen.append(top.wm_state())
            close_sessions(ss, timeout)

        monkeypatch.setattr(A, "close_sessions", spy)
        start = time.monotonic()
        app.exit_program()
        assert time.monotonic() - start < 1.0
        assert seen == ["withdrawn"]  # the window went before the goodbyes
        assert not any(s.alive for s in sessions) and not top.winfo_exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_closes_the_program(display: str, root: tk.Tk, srv: RunningServer,
                                   signum: int) -> None:
    """SIGTERM or Ctrl-C: the client says goodbye and the process exits 0, no traceback.

    The signal arrives while Python runs inside a Tk callback (the worst case: an exception
    raised there is swallowed by Tkinter and the program would go on running).
    """
    script = textwrap.dedent(f"""
        import sys, threading, time
        sys.argv = ["client.py", "--port", "{srv.address[1]}", "--name", "sig"]
        import chatroom.app as client
        orig = client.ChatApp.__init__
        def init(self, *a, **k):
            orig(self, *a, **k)
            def busy():
                print("busy", flush=True)
                end = time.monotonic() + 1.0
                while time.monotonic() < end:
                    pass
            def drive():
                if self.phase == "chat":
                    self.master.after(0, busy)
                else:
                    if self.phase == "login":
                        self.login.join_button.invoke()
                    self.master.after(20, drive)
            self.master.after(20, drive)
        client.ChatApp.__init__ = init
        code = client.main()
        assert threading.active_count() == 1, threading.enumerate()
        print("exited", code)
    """)
    watcher = srv.client("watch", "#chat")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "DISPLAY": display})
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready and proc.stdout.readline().strip() == "busy"
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.strip() == "exited 0" and "Traceback" not in err
    assert "QUIT" in watcher.expect(lambda ln: ln.startswith(":sig!") and "QUIT" in ln)[-1]


# --- TLS: the login view's box, the certificate question, the "encrypted" line --------------


def test_tls_box_follows_the_port_until_the_user_sets_it(root: tk.Tk, make_app: Factory,
                                                         tmp_path: Path) -> None:
    store = PinStore(tmp_path / "pins.json")
    app = make_app(pins=store)  # port 1027
    box = app.login
    assert box.tls_check.cget("text") == "Use TLS (encrypted)" and not box.use_tls()
    box.port_var.set("6697")
    assert box.use_tls()
    box.port_var.set("66970")
    assert not box.use_tls()
    box.port_var.set("6697")
    box.tls_check.invoke()  # the user turns it off on 6697: now the port leaves it alone
    assert not box.use_tls()
    box.port_var.set("1027")
    box.port_var.set("6697")
    assert not box.use_tls()
    tls_default = make_app(pins=store, tls=None)
    tls_default.login.port_var.set("6697")
    assert tls_default.login.use_tls()
    on_6697 = A.ChatApp(tk.Toplevel(root), "127.0.0.1", 6697, pins=store)
    try:
        assert on_6697.login.use_tls()
    finally:
        on_6697.exit_program()
    forced = make_app(pins=store, tls=True)  # --tls
    forced.login.port_var.set("1027")
    assert forced.login.use_tls()
    def port(*argv: str) -> int:
        return A.form_values(A.parse_args(list(argv)), Saved())[1]
    assert port("--tls") == 6697 and port() == 1027
    assert port("--tls", "--port", "7000") == 7000


def test_trust_prompt_then_changed_certificate_end_to_end(
        root: tk.Tk, make_app: Factory, tls_cert: Cert, tmp_path: Path) -> None:
    store = PinStore(tmp_path / "pins.json")
    fake = FakeServer(tls=server_context(tls_cert))
    try:
        app = make_app(fake, pins=store)
        login = app.login
        login.tls_check.invoke()
        assert login.use_tls()
        login.name_var.set("alice")
        login.join_button.invoke()
        pump(root, login.trust_showing, what="the trust question")
        assert app.phase == "login" and app.session is None
        assert "could not be checked" in login.message_var.get()
        assert login.shown_fingerprint().replace("\n", ":").endswith(tls_cert.fingerprint)
        assert login.trust_button.cget("text") == "Trust and Join"
        root.update()
        assert root.focus_get() is not login.trust_button  # a typed-ahead Enter can't trust
        assert not store.path.exists()
        fake.peer()  # the connection that only looked at the certificate
        login.distrust_button.invoke()  # Cancel: nothing pinned, nothing sent
        assert not login.trust_showing() and "not trusted" in login.status_var.get()
        assert not store.path.exists()

        login.join_button.invoke()
        pump(root, login.trust_showing, what="the question again")
        fake.peer()
        press_return(root, login.trust_button)  # Tab to Trust and Join, then Enter
        assert store.get("127.0.0.1", fake.address[1]) == tls_cert.fingerprint
        assert app.phase == "connecting"
        peer = fake.peer()
        peer.welcome("alice")
        peer.join("alice")
        pump(root, lambda: app.phase == "chat", what="the chat")
        pump(root, lambda: app.chat.security_var.get().startswith("Encrypted (TLSv1."),
             what="the encrypted line")
        assert app.chat.security_label.cget("style") == "Secure.TLabel"

        # The server's certificate changes; the next join is refused with both prints.
        other = make_cert(tmp_path / "other", "other")
        fake.tls = server_context(other)
        app.leave_chat()
        login.join_button.invoke()
        pump(root, login.trust_showing, what="the changed certificate")
        text = login.message_var.get()
        assert "has changed since you last connected" in text
        shown = login.shown_fingerprint()
        assert other.fingerprint[:47] in shown and tls_cert.fingerprint[:47] in shown
        assert login.trust_button.cget("text") == "Accept the New Certificate"
        assert root.focus_get() is not login.trust_button  # not the default
        fake.peer()
        # Enter in the form means Join Chat, which is refused again: no accepting by accident.
        press_return(root, login.name_entry)
        pump(root, lambda: app.phase == "login" and login.trust_showing(),
             what="refused again")
        fake.peer()
        assert store.get("127.0.0.1", fake.address[1]) == tls_cert.fingerprint
        login.trust_button.invoke()  # the deliberate accept
        assert store.get("127.0.0.1", fake.address[1]) == other.fingerprint
        peer = fake.peer()
        peer.welcome("alice")
        peer.join("alice")
        pump(root, lambda: app.phase == "chat", what="the chat with the new certificate")
    finally:
        fake.close()


def test_plaintext_chat_says_it_is_not_encrypted(root: tk.Tk, make_app: Factory,
                                                  fake: FakeServer) -> None:
    app = make_app(fake)
    app.login.name_var.set("alice")
    app.login.join_button.invoke()
    peer = fake.peer()
    peer.welcome("alice")
    peer.send(":fake.server NOTICE alice :This connection is not encrypted. Connect with TLS "
              "to port 6697 to keep your messages private.")
    peer.join("alice")
    pump(root, lambda: app.phase == "chat", what="the chat")
    assert app.chat.security_var.get() == ("Not encrypted: the server offers TLS on port "
                                           "6697")
    assert "This connection is not encrypted" in app.chat.contents()


# --- history ------------------------------------------------------------------------------


SEPARATOR = "Earlier messages above · new messages below"


def shown(app: A.ChatApp) -> list[str]:
    return app.chat.contents().splitlines()


def stamp(ms: int) -> str:
    return time.strftime("[%H:%M] ", time.localtime(ms / 1000))


def test_history_on_join_with_its_times_a_separator_then_live_lines(
        root: tk.Tk, make_app: Factory, make_server: Callable[..., RunningServer],
        tmp_path: Path) -> None:
    midnight = local_noon(0) - 12 * 3600_000
    recent = max(int(time.time() * 1000) - 120_000, midnight + 1000)  # today, just now
    said = [(local_noon(1) + i * 60_000, "ann", f"yesterday {i}") for i in range(3)]
    said.append((recent, "raj", "earlier today"))
    seed(tmp_path, "#chat", said)
    srv = make_server(data_dir=str(tmp_path))
    app = make_app(srv)
    join(root, app, "alice")
    pump(root, lambda: SEPARATOR in app.chat.contents(), what="the history")
    bob = srv.client("bob", "#chat")
    bob.send("PRIVMSG #chat :live now")
    pump(root, lambda: "bob: live now" in app.chat.contents(), what="the live line")
    got = shown(app)
    want = ["This is the start of the conversation in #chat.", LN.day(said[0][0] / 1000)[0][0]]
    want += [f"{stamp(ms)}{nick}: {text}" for ms, nick, text in said[:3]]
    want += [LN.day(recent / 1000)[0][0], f"{stamp(recent)}raj: earlier today"]
    assert got[:len(want)] == want, got  # each line with its own time, a day line between
    rest = got[len(want):]
    assert rest[0].strip("─ ") == SEPARATOR
    assert rest[1] == "You joined #chat as alice. Type /help for commands."
    assert [x[8:] for x in rest[2:]] == ["— bob joined #chat", "bob: live now"]
    t = app.chat.text
    assert "history" in t.tag_names("3.10") and "history" not in t.tag_names("end-2l +10c")
    assert got.count(f"{stamp(recent)}raj: earlier today") == 1  # and never twice


def first_message_in_view(app: A.ChatApp) -> str:
    t = app.chat.text
    line = int(t.index("@0,0").split(".")[0])
    while not (text := t.get(f"{line}.0", f"{line}.end")).startswith("["):
        line += 1
    return text


def test_scrolling_to_the_top_loads_older_lines_without_a_jump(
        root: tk.Tk, make_app: Factory, make_server: Callable[..., RunningServer],
        tmp_path: Path) -> None:
    then = int(time.time() * 1000) - 3 * 3600_000
    seed(tmp_path, "#chat", [(then + i * 1000, "ann", f"old line {i:02d}") for i in range(70)])
    srv = make_server(data_dir=str(tmp_path))
    app = make_app(srv, session_options={**FAST, "history_page": 25})
    join(root, app, "alice")
    pump(root, lambda: "old line 69" in app.chat.contents(), what="the latest page")
    assert "old line 45" not in app.chat.contents()
    t = app.chat.text
    # The user drags the scrollbar to the top: that asks for the page before (its answer
    # comes in a later tick of the app, so what is in view can be read now).
    root.tk.call(t.vbar.cget("command"), "moveto", "0")  # type: ignore[attr-defined]
    root.update_idletasks()
    before = first_message_in_view(app)
    pump(root, lambda: "old line 21" in app.chat.contents(), what="an older page")
    root.update_idletasks()
    assert first_message_in_view(app) == before  # what was read stays in place
    assert not app.chat.follow and "old line 20" not in app.chat.contents()
    # The keyboard: Page Up in the message field, at the top, asks for more.
    app.chat.entry.focus_force()
    pump(root, lambda: root.focus_get() is app.chat.entry, what="focus")
    for _ in range(5):
        app.chat.entry.event_generate("<Prior>")
    pump(root, lambda: "old line 20" in app.chat.contents(), what="the last page")
    pump(root, lambda: "start of the conversation" in app.chat.contents(), what="the start")
    t.event_generate("<Button-4>")  # the wheel at the top: there is nothing more to ask for
    pump(root, lambda: True)
    got = [x[8:] for x in shown(app) if x.startswith("[")]
    olds = [x for x in got if x.startswith("ann: old line")]
    assert olds == [f"ann: old line {i:02d}" for i in range(70)]  # each once, in order
    assert shown(app)[0] == "This is the start of the conversation in #chat."
    assert app.chat.contents().count("start of the conversation") == 1
    assert shown(app).count(LN.day(then / 1000)[0][0]) == 1  # one day: one day line
    assert app.session is not None and not app.session.can_load_older


def test_an_old_server_shows_our_line_at_once(root: tk.Tk, make_app: Factory,
                                              fake: FakeServer) -> None:
    app = make_app(fake)
    app.login.name_var.set("alice")
    app.login.join_button.invoke()
    peer = fake.peer()
    peer.welcome()  # no CAP, so no echo-message: the window shows our lines itself
    peer.join()
    pump(root, lambda: app.phase == "chat", what="chat")
    say(root, app, "hi there")
    assert "alice: hi there" in app.chat.contents()
    assert P.parse(peer.expect("PRIVMSG")).params == ("#chat", "hi there")
    assert SEPARATOR not in app.chat.contents()


def test_what_was_said_while_disconnected_shows_once_after_reconnecting(
        root: tk.Tk, make_app: Factory, srv: RunningServer) -> None:
    app = make_app(srv, session_options={"backoff": S.Backoff(initial=0.5, jitter=0.0)})
    join(root, app, "alice")
    bob = srv.client("bob", "#chat")
    bob.send("PRIVMSG #chat :before")
    pump(root, lambda: "bob: before" in app.chat.contents(), what="a live line")
    with srv.server.reg.lock:
        victim = srv.server.reg.nicks["alice"]
    srv.server.kill(victim, "testing")
    pump(root, lambda: "Connection lost" in app.chat.contents(), what="lost")
    bob.send("PRIVMSG #chat :while you were out")
    bob.send("PING :sync")
    bob.expect("PONG")
    pump(root, lambda: "bob: while you were out" in app.chat.contents(), what="missed line")
    bob.send("PRIVMSG #chat :live again")
    pump(root, lambda: "bob: live again" in app.chat.contents(), what="live again")
    got = shown(app)
    i = got.index("While you were disconnected:")
    assert any(x.startswith("[") and "Reconnected" in x for x in got[:i])
    after = [x[8:] for x in got[i:] if x.startswith("[")]
    said = [x for x in after if x.startswith("bob:")]
    assert said == ["bob: while you were out", "bob: live again"]
    assert sum(x.endswith("bob: before") for x in got) == 1


# --- accounts: the three ways in, refusals in words, remembered passwords, the grace ----------


def focused(root: tk.Tk, widget: tk.Widget) -> None:
    """The keyboard focus is (or, once Tk has done its part, will be) in ``widget``."""
    pump(root, lambda: root.focus_get() is widget, timeout=2.0, what=f"focus in {widget}")


def shown_rows(app: A.ChatApp) -> dict[str, bool]:
    login = app.login
    return {"password": bool(login.password_entry.winfo_manager()),
            "confirm": bool(login.confirm_entry.winfo_manager()),
            "remember": bool(login.remember_check.master.winfo_manager())}


def test_the_three_ways_in_switch_the_fields(root: tk.Tk, make_app: Factory) -> None:
    app = make_app(name="alice")
    login = app.login

    def name_at() -> tuple[int, int]:
        app.master.update_idletasks()
        return login.name_entry.winfo_rootx(), login.name_entry.winfo_rooty()

    where = name_at()
    assert login.mode() == "guest" and login.join_button.cget("text") == "Join Chat"
    assert shown_rows(app) == {"password": False, "confirm": False, "remember": False}
    login.mode_buttons["login"].invoke()
    assert shown_rows(app) == {"password": True, "confirm": False, "remember": True}
    assert login.join_button.cget("text") == "Log In and Join"
    assert not login.remember()  # off unless the user ticks it
    assert login.remember_note.cget("text") == ("Stored on this computer, readable only by "
                                                "your user account.")
    login.mode_buttons["create"].invoke()
    assert shown_rows(app) == {"password": True, "confirm": True, "remember": True}
    assert login.join_button.cget("text") == "Create Account and Join"
    assert name_at() == where  # the fields above the change never move
    # Keys: the arrows on the choice, and Alt+G / Alt+L / Alt+C anywhere in the form.
    login.mode_buttons["create"].focus_force()
    pump(root, lambda: root.focus_get() is login.mode_buttons["create"], what="focus")
    login.mode_buttons["create"].event_generate("<Right>")
    assert login.mode() == "guest"
    focused(root, login.mode_buttons["guest"])
    login.name_entry.focus_force()
    pump(root, lambda: root.focus_get() is login.name_entry, what="focus")
    login.name_entry.event_generate("<Alt-l>")
    assert login.mode() == "login" and shown_rows(app)["password"]

    # Checked here, before anything is sent: a password, and the same one twice.
    login.join_button.invoke()
    assert login.message_var.get() == "Enter the password." and app.session is None
    focused(root, login.password_entry)
    login.set_mode("create")
    login.password_var.set("one")
    login.confirm_var.set("two")
    login.join_button.invoke()
    assert "not the same" in login.message_var.get() and app.session is None
    focused(root, login.confirm_entry)
    assert login.confirm_entry.selection_present()
    login.set_mode("guest")  # the confirmation goes with its field
    assert login.confirm_var.get() == ""


def test_wrong_password_selects_the_password_field_and_forgets_it(
        root: tk.Tk, make_app: Factory, srv: RunningServer, tmp_path: Path) -> None:
    make_account(srv, "alice", "right one")
    store = PasswordStore(tmp_path / "pw" / "passwords.json")
    store.set("127.0.0.1", srv.address[1], "alice", "stale one")
    app = make_app(srv, passwords=store)  # no name given: the last one remembered
    login = app.login
    assert (login.name_var.get(), login.mode(), login.password_var.get(), login.remember()) \
        == ("alice", "login", "stale one", True)
    login.join_button.invoke()
    pump(root, lambda: app.phase == "login" and login.message_var.get(), what="the refusal")
    assert login.message_var.get() == "Wrong name or password. Check both and try again."
    focused(root, login.password_entry)
    assert login.password_entry.selection_present()  # typing replaces it
    assert store.get("127.0.0.1", srv.address[1], "alice") is None  # a wrong one is deleted
    assert login.remember()  # still wanted: the right one will be kept
    # Typing the right one over it logs in, and it is remembered, readable by us only.
    login.password_entry.delete(0, "end")
    login.password_entry.insert(0, "right one")
    press_return(root, login.password_entry)
    pump(root, lambda: app.phase == "chat", what="the chat")
    assert store.get("127.0.0.1", srv.address[1], "alice") == "right one"
    assert os.stat(store.path).st_mode & 0o777 == 0o600
    assert app.chat.hint_var.get() == "Logged in as alice"
    assert app.chat.leave_button.cget("text") == "Log Out"
    assert "logged in to your account" in app.chat.contents()
    # Back to Login is not a log out; unticking the box is: the password goes.
    app.back_to_login()
    assert login.password_var.get() == "right one" and store.path.exists()
    login.remember_check.invoke()
    assert not login.remember() and not store.path.exists()
    assert "deleted" in login.status_var.get()


def test_log_out_forgets_and_a_guest_has_no_log_out(root: tk.Tk, make_app: Factory,
                                                    srv: RunningServer, tmp_path: Path) -> None:
    make_account(srv, "dora", "dora's pw")
    store = PasswordStore(tmp_path / "pw" / "passwords.json")
    app = make_app(srv, name="dora", passwords=store)
    login = app.login
    login.set_mode("login")
    login.password_var.set("dora's pw")
    login.remember_check.invoke()
    login.join_button.invoke()
    pump(root, lambda: app.phase == "chat", what="the chat")
    assert store.get("127.0.0.1", srv.address[1], "dora") == "dora's pw"
    app.chat.leave_button.invoke()  # Log Out
    assert app.phase == "login" and not store.path.exists()
    assert login.password_var.get() == "" and not login.remember()
    assert "logged out" in login.status_var.get()
    # Not remembered, the password leaves the form once the server has taken it.
    login.password_var.set("dora's pw")
    login.join_button.invoke()
    pump(root, lambda: app.phase == "chat", what="the chat again")
    assert login.password_var.get() == "" and not store.path.exists()
    guest = make_app(srv, name="guest1")
    join(root, guest, "guest1")
    assert guest.chat.leave_button.cget("text") == "Leave Chat"
    assert guest.chat.hint_var.get() == "Type /help for commands"


def test_guest_on_a_registered_name_sees_the_countdown_then_the_rename(
        root: tk.Tk, make_app: Factory, make_server: Callable[..., RunningServer]) -> None:
    srv = make_server(nick_grace=2)
    make_account(srv, "bob")
    app = make_app(srv)
    join(root, app, "bob")
    pump(root, app.chat.claim_showing, what="the banner")
    text = app.chat.claim_var.get()
    assert text.startswith("bob is registered to someone else: you'll be renamed in ")
    assert text.endswith(" s unless you log in.")
    assert app.chat.claim_button.cget("text") == "Log In"
    seconds = {app.chat.claim_var.get()}
    pump(root, lambda: seconds.add(app.chat.claim_var.get()) or "You are now Guest"
         in app.chat.contents(), timeout=6, what="the rename")
    assert len(seconds) >= 2  # it counts down, live
    assert not app.chat.claim_showing()
    assert "the name bob is registered to someone else" in app.chat.contents()
    pump(root, lambda: listed(app)[0].lstrip("@").startswith("Guest"), what="the list")
    assert "SASL" not in app.chat.contents()


def test_log_in_from_the_banner(root: tk.Tk, make_app: Factory,
                               make_server: Callable[..., RunningServer]) -> None:
    srv = make_server(nick_grace=30)
    make_account(srv, "bob", "bobs pw")
    app = make_app(srv)
    join(root, app, "bob")
    pump(root, app.chat.claim_showing, what="the banner")
    app.chat.claim_button.invoke()
    login = app.login
    assert app.phase == "login" and login.mode() == "login"
    assert login.name_var.get() == "bob"
    focused(root, login.password_entry)
    type_keys(root, login.password_entry, "bobs pw")
    pump(root, lambda: login.password_var.get() == "bobs pw", what="the typing")
    press_return(root, login.password_entry)
    pump(root, lambda: app.phase == "chat", what="the chat")
    assert not app.chat.claim_showing() and app.session is not None
    assert app.session.nick == "bob" and app.chat.hint_var.get() == "Logged in as bob"


def test_an_unknown_host_selects_the_host_field(root: tk.Tk, make_app: Factory) -> None:
    app = make_app()
    app.login.name_var.set("alice")
    app.login.host_var.set("no-such-host.invalid")  # RFC 2606: never resolves
    app.login.join_button.invoke()
    pump(root, lambda: app.phase == "login" and app.login.message_var.get() != ""
         and "Connecting" not in app.login.message_var.get(), timeout=15, what="the error")
    pump(root, lambda: root.focus_get() is app.login.host_entry, what="focus on the host")
    assert app.login.host_entry.selection_present()
    assert app.login.name_var.get() == "alice"
