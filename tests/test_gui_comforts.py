"""Two comforts of the message window: a long topic folds to two lines (hover or click
shows all of it), and Up / Down bring back lines sent before, as in a shell.

Same setup as test_gui.py (its display, app factory and helpers), against a real server.
"""

from __future__ import annotations

from conftest import RunningServer
from test_gui import Factory, join, make_app, press_return, pump, say

from chatroom import app as A

try:
    import tkinter as tk
    from tkinter import font as tkfont
except ImportError:
    tk = None  # type: ignore[assignment]

__all__ = ["make_app"]  # a fixture, used by name

TOPIC = ("Welcome to the planning room: Friday's release is frozen, so please keep the "
         "discussion about the new login screen in the design thread, post build failures "
         "with a link to the log, and remember that the office is closed on Monday for the "
         "holiday; the on-call rota and the agenda for Tuesday's review are pinned in the "
         "wiki under Team / Weekly; questions go to Dana or Leona.")
assert len(TOPIC) == 374


def small(root: tk.Tk, app: A.ChatApp) -> None:
    """The window at its minimum size (what the app allows)."""
    w, h = A.MIN_SIZE
    app.master.geometry(f"{w}x{h}")
    root.update()
    pump(root, lambda: app.master.winfo_width() == w, what="the small window")


def banner_lines(app: A.ChatApp) -> float:
    label = app.chat.topic_label
    label.update_idletasks()
    font = tkfont.nametofont("TkDefaultFont")
    return (label.winfo_height() - 10) / font.metrics("linespace")  # 10: the padding


def test_long_topic_folds_to_two_lines_and_shows_all_on_hover_and_click(
        root: tk.Tk, make_app: Factory, srv: RunningServer) -> None:
    app = make_app(srv)
    join(root, app, "alice")
    small(root, app)
    say(root, app, f"/topic {TOPIC}")
    pump(root, lambda: app.chat.topic_var.get() == f"Topic: {TOPIC}", what="topic")
    root.update()
    chat = app.chat
    shown = chat.topic_shown.get()
    assert chat.topic_clamped and shown.endswith("…") and len(shown) < len(TOPIC)
    assert f"Topic: {TOPIC}".startswith(shown[:-1])
    assert banner_lines(app) < 2.5, banner_lines(app)

    chat.topic_label.event_generate("<Enter>")
    root.update()
    assert chat.topic_tip is not None
    tip_texts = [w.cget("text") for w in chat.topic_tip.winfo_children()]
    assert tip_texts == [f"Topic: {TOPIC}"]
    chat.topic_label.event_generate("<Leave>")
    root.update()
    assert chat.topic_tip is None

    chat.topic_label.event_generate("<Button-1>", x=5, y=5)
    root.update()
    assert chat.topic_shown.get() == f"Topic: {TOPIC}"
    assert banner_lines(app) > 2.5
    chat.topic_label.event_generate("<Button-1>", x=5, y=5)
    root.update()
    assert chat.topic_shown.get() == shown
    assert banner_lines(app) < 2.5

    say(root, app, "/topic short")
    pump(root, lambda: chat.topic_shown.get() == "Topic: short", what="short topic")
    assert not chat.topic_clamped
    chat.topic_label.event_generate("<Enter>")
    root.update()
    assert chat.topic_tip is None  # nothing hidden, nothing to show


def test_a_wider_window_shows_more_of_the_topic(
        root: tk.Tk, make_app: Factory, srv: RunningServer) -> None:
    app = make_app(srv)
    join(root, app, "alice")
    small(root, app)
    app.chat.set_topic(TOPIC)
    root.update()
    assert app.chat.topic_clamped
    narrow = app.chat.topic_shown.get()
    app.master.geometry("1260x520")
    pump(root, lambda: len(app.chat.topic_shown.get()) > len(narrow), what="more topic")
    assert banner_lines(app) < 2.5
    app.chat.set_topic(TOPIC[:150])
    root.update()
    assert not app.chat.topic_clamped
    assert app.chat.topic_shown.get() == f"Topic: {TOPIC[:150]}"


def press(root: tk.Tk, widget: tk.Widget, key: str) -> None:
    widget.focus_force()
    pump(root, lambda: root.focus_get() is widget, what="focus")
    widget.event_generate(key)
    root.update()


def test_up_and_down_recall_sent_lines_and_the_draft(
        root: tk.Tk, make_app: Factory, srv: RunningServer) -> None:
    app = make_app(srv)
    join(root, app, "alice")
    entry = app.chat.entry
    for line in ("first", "second", "second", "third"):
        say(root, app, line)
        pump(root, lambda: entry.get() == "", what=f"{line} sent")
    entry.insert(0, "half-typed")
    press(root, entry, "<Up>")
    assert entry.get() == "third"
    press(root, entry, "<Up>")
    assert entry.get() == "second"  # sent twice in a row, kept once
    press(root, entry, "<Up>")
    assert entry.get() == "first"
    press(root, entry, "<Up>")
    assert entry.get() == "first"  # the oldest stays
    press(root, entry, "<Down>")
    assert entry.get() == "second"
    press(root, entry, "<Down>")
    assert entry.get() == "third"
    press(root, entry, "<Down>")
    assert entry.get() == "half-typed"
    press(root, entry, "<Down>")
    assert entry.get() == "half-typed"
    assert entry.index("insert") == len("half-typed")

    # A recalled line sends again and becomes the newest.
    entry.delete(0, "end")
    press(root, entry, "<Up>")
    press(root, entry, "<Up>")
    assert entry.get() == "second"
    press_return(root, entry)
    pump(root, lambda: entry.get() == "", what="resent")
    press(root, entry, "<Up>")
    assert entry.get() == "second"


def test_refused_and_empty_lines_are_not_recalled(
        root: tk.Tk, make_app: Factory, srv: RunningServer) -> None:
    app = make_app(srv)
    join(root, app, "alice")
    entry = app.chat.entry
    say(root, app, "kept")
    pump(root, lambda: entry.get() == "", what="sent")
    say(root, app, "/nosuchcommand")  # refused: stays in the field
    root.update()
    assert entry.get() == "/nosuchcommand"
    entry.delete(0, "end")
    press(root, entry, "<Up>")
    assert entry.get() == "kept"
    press(root, entry, "<Up>")
    assert entry.get() == "kept"


def test_history_is_bounded_and_tab_and_ctrl_a_still_work(
        root: tk.Tk, make_app: Factory, srv: RunningServer) -> None:
    app = make_app(srv)
    join(root, app, "alice")
    chat = app.chat
    for i in range(chat.HISTORY + 20):
        chat._remember_sent(f"line {i}")
    assert len(chat.sent) == chat.HISTORY
    assert chat.sent[0] == "line 20"
    entry = chat.entry
    entry.insert(0, "ali")
    press(root, entry, "<Tab>")
    assert entry.get() == "alice: "
    press(root, entry, "<Control-a>")
    assert entry.selection_present()
    press(root, entry, "<Up>")
    assert entry.get() == f"line {chat.HISTORY + 19}"
    press(root, entry, "<Down>")
    assert entry.get() == "alice: "
