"""The window with several rooms and private conversations, under Xvfb, against a real
server: the list, unread counts and mentions, Join Room…, Leave, links, find, the jump to
the newest line, the emoji picker, keys, and the rooms remembered for the next start."""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from pathlib import Path
from tkinter import ttk

from conftest import LineClient, RunningServer
from test_client_accounts import make_account
from test_gui_files import log_in
from test_gui import Factory, join, join_all, make_app, press_return, pump, say

from chatroom import app as A
from chatroom import dialogs
from chatroom.logview import LogView
from chatroom.settings import RoomMemory, Settings


def labels(app: A.ChatApp) -> list[str]:
    return list(app.chat.convlist.get(0, "end"))


def focus(root: tk.Tk, app: A.ChatApp) -> None:
    app.chat.entry.focus_force()
    pump(root, lambda: root.focus_get() is app.chat.entry, what="focus")


def enter_room(root: tk.Tk, app: A.ChatApp, room: str) -> None:
    say(root, app, f"/join {room}")
    pump(root, lambda: app.current is not None and app.current.name == room
         and app.current.joined, what=f"in {room}")


def test_join_switch_and_unread_per_room(root: tk.Tk, make_app: Factory,
                                         srv: RunningServer) -> None:
    alice = make_app(srv)
    join(root, alice, "alice")
    bob = srv.client("bob", "#chat")
    bob.join("#dev")
    enter_room(root, alice, "#dev")
    assert labels(alice) == ["#chat", "#dev"]
    assert alice.chat.room_var.get() == "Online in #dev"
    pump(root, lambda: alice.chat.count_var.get() == "2 online", what="#dev's members")
    focus(root, alice)
    bob.send("PRIVMSG #chat :one")
    bob.send("PRIVMSG #chat :two")
    bob.send("PRIVMSG #dev :in view")
    pump(root, lambda: "bob: in view" in alice.chat.contents(), what="the line in view")
    pump(root, lambda: labels(alice) == ["#chat  (2)", "#dev"], what="#chat's unread")
    assert "bob: one" in alice.chat.contents(alice.convs.get("#chat").pane)  # type: ignore[union-attr]
    assert "bob: one" not in alice.chat.contents()
    pump(root, lambda: str(alice.master.title()).startswith("(2) #dev — alice"),
         what="the title counts")
    # What is typed goes to the room in view.
    say(root, alice, "hello dev")
    assert bob.expect("PRIVMSG #dev :hello dev")
    # Back in #chat: its lines, marked where the unread ones start; read now.
    alice.conversation_clicked(0)
    assert alice.current is not None and alice.current.name == "#chat"
    log = alice.chat.contents()
    assert log.index("new messages") < log.index("bob: one") < log.index("bob: two")
    assert labels(alice) == ["#chat", "#dev"]
    pump(root, lambda: not str(alice.master.title()).startswith("("), what="all read")
    # The side panel follows: #chat has bob too (he joined it first).
    assert alice.chat.room_var.get() == "Online in #chat"
    pump(root, lambda: alice.chat.count_var.get() == "2 online", what="#chat's members")


def test_mention_marks_the_line_the_list_and_the_window(
        root: tk.Tk, make_app: Factory, srv: RunningServer) -> None:
    alice, bob = make_app(srv), make_app(srv)
    join_all(root, (alice, "alice"), (bob, "bob"))
    rings: list[int] = []
    alice.window.bell = lambda: rings.append(1)  # type: ignore[method-assign]
    focus(root, bob)  # alice's window is not focused
    say(root, bob, "no mention here, alicexyz")
    say(root, bob, "Alice: lunch?")
    pump(root, lambda: "bob: Alice: lunch?" in alice.chat.contents(), what="the mention")
    t = alice.chat.text
    line = t.search("Alice: lunch?", "1.0")
    assert "mention" in t.tag_names(line)
    other = t.search("no mention here", "1.0")
    assert "mention" not in t.tag_names(other)
    assert rings == [1]
    assert labels(alice) == ["#chat  (2!)"]
    assert str(alice.master.title()).startswith("(2, 1 for you) #chat")
    urgent = dialogs.get_urgency(alice.master.winfo_screen(), int(alice.master.wm_frame(), 16))
    assert urgent in (True, None)  # None: no X library to read it back with
    focus(root, alice)
    alice._on_focus()
    pump(root, lambda: labels(alice) == ["#chat"], what="read on focus")
    assert dialogs.get_urgency(alice.master.winfo_screen(),
                               int(alice.master.wm_frame(), 16)) in (False, None)


def test_private_conversation_both_ways(root: tk.Tk, make_app: Factory,
                                        srv: RunningServer) -> None:
    alice, bob = make_app(srv), make_app(srv)
    join_all(root, (alice, "alice"), (bob, "bob"))
    say(root, bob, "/query alice")
    assert bob.current is not None and bob.current.private and bob.current.name == "alice"
    assert labels(bob) == ["#chat", "alice"]
    assert bob.chat.part_button.cget("text") == "Close"
    assert "Private conversation with alice" in bob.chat.topic_var.get()
    say(root, bob, "psst")
    pump(root, lambda: "bob: psst" in bob.chat.contents(), what="own line in the talk")
    pump(root, lambda: labels(alice) == ["#chat", "bob  (1!)"], what="a new talk, marked")
    assert "psst" not in alice.chat.contents()  # the room stays in view
    alice.conversation_clicked(1)
    assert "bob: psst" in alice.chat.contents()
    say(root, alice, "hi back")
    pump(root, lambda: "alice: hi back" in bob.chat.contents(), what="the answer")
    # A rename takes the talk along.
    say(root, bob, "/nick bobby")
    pump(root, lambda: labels(alice) == ["#chat", "bobby"], what="the talk renamed")
    assert "bob is now known as bobby" in alice.chat.contents()
    say(root, alice, "still you?")
    pump(root, lambda: "alice: still you?" in bob.chat.contents(), what="to the new name")
    # /close takes it off the list; the room comes back into view.
    say(root, alice, "/close")
    assert labels(alice) == ["#chat"] and alice.current is not None
    assert alice.current.name == "#chat"


def test_leave_one_room_and_come_back_to_all_at_next_start(
        root: tk.Tk, make_app: Factory, srv: RunningServer, tmp_path: Path) -> None:
    memory = RoomMemory(tmp_path / "rooms.json")
    alice = make_app(srv, rooms=memory)
    join(root, alice, "alice")
    enter_room(root, alice, "#dev")
    enter_room(root, alice, "#ops")
    assert labels(alice) == ["#chat", "#dev", "#ops"]
    host, port = srv.address
    assert memory.get(host, port, "alice") == ["#chat", "#dev", "#ops"]
    alice.conversation_clicked(2)
    alice.chat.part_button.invoke()  # Leave #ops
    pump(root, lambda: labels(alice) == ["#chat", "#dev"], what="#ops left")
    assert memory.get(host, port, "alice") == ["#chat", "#dev"]
    assert "You left #ops." in alice.chat.contents()
    alice.exit_program()
    pump(root, lambda: srv.wait_for(lambda: "alice" not in srv.server.reg.nicks, 0.05),
         what="alice gone")
    again = make_app(srv, rooms=memory)
    join(root, again, "alice")
    pump(root, lambda: labels(again) == ["#chat", "#dev"], what="both rooms back")
    assert again.current is not None and again.current.name == "#chat"
    pump(root, lambda: all(c.joined for c in again.convs), what="in both")


def test_join_dialog_lists_filters_and_joins(root: tk.Tk, make_app: Factory,
                                             srv: RunningServer) -> None:
    for nick, room in (("bob", "#big"), ("cid", "#big"), ("dan", "#python")):
        srv.client(nick, room)
    alice = make_app(srv)
    join(root, alice, "alice")
    alice.open_join_dialog()
    dialog = alice.join_dialog
    assert dialog is not None and dialog.alive()
    pump(root, lambda: dialog.shown() == ["#big", "#chat", "#python"], what="the rooms")
    assert dialog.tree.item(dialog.tree.get_children()[0], "values")[0] in (2, "2")
    assert "3 rooms" in dialog.status_var.get()
    dialog.name_var.set("pyt")
    assert dialog.shown() == ["#python"]
    dialog.name_var.set("not a room!")
    dialog.join()
    assert dialog.alive() and "not a room name" in dialog.status_var.get()
    dialog.name_var.set("python")  # the # is added
    dialog.join()
    assert not dialog.alive()
    pump(root, lambda: alice.current is not None and alice.current.name == "#python",
         what="in #python")


def test_links_open_in_the_browser(root: tk.Tk, make_app: Factory, srv: RunningServer) -> None:
    alice = make_app(srv)
    opened: list[str] = []
    alice.open_url = opened.append
    join(root, alice, "alice")
    bob = srv.client("bob", "#chat")
    bob.send("PRIVMSG #chat :see https://example.com/a_(b)?q=1, then (https://e.org/x).")
    pump(root, lambda: "https://e.org/x" in alice.chat.contents(), what="the line")
    alice.master.update_idletasks()
    t = alice.chat.text
    for url in ("https://example.com/a_(b)?q=1", "https://e.org/x"):
        at = t.search(url, "1.0")
        assert "link" in t.tag_names(at)
        t.see(at)
        alice.master.update_idletasks()
        box = t.bbox(f"{at}+3c")
        assert box is not None
        x, y = box[0] + 1, box[1] + 1
        t.event_generate("<Motion>", x=x, y=y)  # the pointer goes there, then clicks
        t.event_generate("<ButtonPress-1>", x=x, y=y)
        t.event_generate("<ButtonRelease-1>", x=x, y=y)
    assert opened == ["https://example.com/a_(b)?q=1", "https://e.org/x"]
    after = t.search("then", "1.0")
    assert "link" not in t.tag_names(after)


def test_find_in_the_room(root: tk.Tk, make_app: Factory, srv: RunningServer) -> None:
    alice = make_app(srv)
    join(root, alice, "alice")
    bob = srv.client("bob", "#chat")
    for text in ("the Pizza is here", "no match", "more pizza?"):
        bob.send(f"PRIVMSG #chat :{text}")
    pump(root, lambda: "more pizza?" in alice.chat.contents(), what="the lines")
    focus(root, alice)
    alice.chat.entry.event_generate("<Control-f>")
    root.update()
    assert alice.chat.find_showing()
    alice.chat.find_var.set("pizza")
    assert alice.chat.find_status.get() == "2 of 2"  # the newest first
    t = alice.chat.text
    assert len(t.tag_ranges("found")) == 4
    current = t.tag_ranges("found_current")
    assert t.get(current[0], current[1]) == "pizza"
    press_return(root, alice.chat.find_entry)  # Enter: the one before
    assert alice.chat.find_status.get() == "1 of 2"
    current = t.tag_ranges("found_current")
    assert t.get(current[0], current[1]) == "Pizza"
    alice.chat.find_var.set("nothing like it")
    assert alice.chat.find_status.get() == "Not found"
    alice.chat.close_find()
    assert not alice.chat.find_showing() and not t.tag_ranges("found")


def scrolled_up(root: tk.Tk, make_app: Factory, srv: RunningServer
                ) -> tuple[A.ChatApp, LineClient, LogView]:
    """alice in #chat with 60 lines from bob, scrolled up to the top as a user would."""
    alice = make_app(srv)
    join(root, alice, "alice")
    bob = srv.client("bob", "#chat")
    for i in range(60):
        bob.send(f"PRIVMSG #chat :line {i}")
    pump(root, lambda: "line 59" in alice.chat.contents(), what="60 lines")
    pane = alice.chat.pane()
    pane.text.yview_moveto(0.0)
    pane.text.event_generate("<Button-4>")  # the user scrolled up
    root.update()
    pump(root, lambda: not pane.follow, what="not following")
    return alice, bob, pane


def test_scrolled_up_new_lines_offer_a_jump(root: tk.Tk, make_app: Factory,
                                            srv: RunningServer) -> None:
    alice, bob, pane = scrolled_up(root, make_app, srv)
    bob.send("PRIVMSG #chat :while you read")
    bob.send("PRIVMSG #chat :and another")
    pump(root, lambda: pane.jump_button.winfo_ismapped(), what="the jump button")
    assert pane.jump_button.cget("text") == "↓ 2 new messages"
    assert not pane.at_bottom()
    pane.jump_button.invoke()
    root.update()
    assert pane.follow and pane.at_bottom() and not pane.jump_button.winfo_ismapped()


def test_banner_does_not_move_refresh(root: tk.Tk, make_app: Factory,
                                      srv: RunningServer) -> None:
    alice = make_app(srv)
    join(root, alice, "alice")
    root.update()
    button = alice.chat.refresh_button
    before = (button.winfo_rootx(), button.winfo_rooty())
    alice.chat.set_connection("Connection lost. Reconnecting in 3 s (attempt 1)…")
    root.update()
    assert alice.chat.banner.winfo_ismapped()
    assert (button.winfo_rootx(), button.winfo_rooty()) == before
    back = alice.chat.back_button
    assert abs(back.winfo_rooty() - before[1]) > 100  # nowhere near where Refresh is


def test_emoji_picker_and_keys(root: tk.Tk, make_app: Factory, srv: RunningServer) -> None:
    alice = make_app(srv)
    join(root, alice, "alice")
    enter_room(root, alice, "#dev")
    alice.chat.entry.insert("end", "hi ")
    alice.chat.emoji_button.invoke()
    picker = alice.emoji_picker
    assert picker is not None and picker.alive() and len(picker.shown) >= 8
    chosen = picker.shown[0]
    picker.cells[0].event_generate("<Button-1>")
    assert not picker.alive()
    assert alice.chat.entry.get() == f"hi {chosen}"
    alice.chat.entry.delete(0, "end")
    # Alt+Up / Alt+Down walk the list; Ctrl+W leaves the room in view.
    focus(root, alice)
    alice.chat.entry.event_generate("<Alt-Up>")
    assert alice.current is not None and alice.current.name == "#chat"
    alice.chat.entry.event_generate("<Alt-Down>")
    assert alice.current is not None and alice.current.name == "#dev"
    alice.chat.entry.event_generate("<Control-w>")
    pump(root, lambda: labels(alice) == ["#chat"], what="#dev left")
    assert alice.current is not None and alice.current.name == "#chat"


def test_what_worked_is_remembered_for_the_next_start(
        root: tk.Tk, make_app: Factory, srv: RunningServer, tmp_path: Path) -> None:
    settings = Settings(tmp_path / "settings.json")
    alice = make_app(srv, settings=settings)
    join(root, alice, "alice")
    saved = settings.load()
    assert (saved.host, saved.port, saved.name, saved.tls, saved.mode) == (
        "127.0.0.1", srv.address[1], "alice", False, "guest")
    alice.master.geometry("830x530")
    root.update()
    alice.exit_program()
    assert settings.load().geometry == "830x530"


def test_member_menu_for_a_room_operator(root: tk.Tk, make_app: Factory,
                                         srv: RunningServer) -> None:
    alice, bob = make_app(srv), make_app(srv)
    join_all(root, (alice, "alice"), (bob, "bob"))  # alice made #chat: its operator
    alice.confirm = lambda title, text: True
    labels_of = [item[0] for item in alice.member_menu("bob") if item is not None]
    assert labels_of == ["Talk privately with bob", "Who is bob?",
                         "Tell me when bob comes and goes", "Make bob an operator",
                         "Give bob a voice", "Bans of #chat…", "Remove bob from #chat",
                         "Ban bob from #chat"]
    # Bob is no operator: he can talk, ask and watch, nothing more.
    assert [i[0] for i in bob.member_menu("alice") if i is not None] == [
        "Talk privately with alice", "Who is alice?", "Tell me when alice comes and goes"]
    assert [i[0] for i in alice.member_menu("alice") if i is not None] == [
        "Talk privately with alice", "Who is alice?"]
    # The real menu, from a right click on bob's row.
    row = [m.lstrip("@+") for m in alice.chat.listbox.get(0, "end")].index("bob")
    menu = alice.chat.popup_member(row, 10, 10)
    assert menu is not None and menu.entrycget(4, "label") == "Make bob an operator"
    menu.unpost()
    menu.invoke(4)
    pump(root, lambda: "@bob" in alice.chat.listbox.get(0, "end"), what="bob made op")
    assert "made bob a room operator" in alice.chat.contents()
    take = dict(i for i in alice.member_menu("bob") if i is not None)
    assert "Take operator from bob" in take
    dict(i for i in alice.member_menu("bob") if i is not None)["Ban bob from #chat"]()
    pump(root, lambda: "bob" not in " ".join(alice.chat.listbox.get(0, "end")),
         what="bob removed")
    pump(root, lambda: bob.current is not None and not bob.current.joined, what="bob out")
    say(root, bob, "/join")
    pump(root, lambda: "banned" in bob.chat.contents(), what="the ban holds")


def test_help_lists_commands_and_keys(root: tk.Tk, make_app: Factory,
                                      srv: RunningServer) -> None:
    alice = make_app(srv)
    assert alice.menu.chat.entrycget(0, "state") == "disabled"  # no Join Room… at login
    join(root, alice, "alice")
    assert alice.menu.chat.entrycget(0, "state") == "normal"
    say(root, alice, "/help")
    log = alice.chat.contents()
    assert "/query <name> [text]" in log and "Ctrl+K" in log and "Alt+Up / Alt+Down" in log
    alice.menu.help.invoke(0)
    tops = [w for w in alice.master.winfo_children() if isinstance(w, tk.Toplevel)
            and w.title() == "Keyboard shortcuts"]
    assert tops
    tops[0].destroy()


def test_the_new_messages_rule_goes_and_every_line_stays(
        root: tk.Tk, make_app: Factory, srv: RunningServer) -> None:
    alice = make_app(srv)
    join(root, alice, "alice")
    bob = srv.client("bob", "#chat")
    enter_room(root, alice, "#dev")
    focus(root, alice)
    for text in ("FIRST unread", "SECOND unread", "THIRD unread"):
        bob.send(f"PRIVMSG #chat :{text}")
    pump(root, lambda: labels(alice)[0] == "#chat  (3)", what="three unread")
    alice.conversation_clicked(0)
    log = alice.chat.contents()
    assert log.index("new messages") < log.index("FIRST unread")
    alice.conversation_clicked(1)  # away: the rule goes, the lines stay
    alice.conversation_clicked(0)
    log = alice.chat.contents()
    assert "new messages" not in log
    assert all(t in log for t in ("FIRST unread", "SECOND unread", "THIRD unread"))


def test_a_click_in_the_list_leaves_the_keyboard_in_the_message_field(
        root: tk.Tk, make_app: Factory, srv: RunningServer) -> None:
    alice = make_app(srv)
    join(root, alice, "alice")
    enter_room(root, alice, "#dev")
    lb = alice.chat.convlist
    box = lb.bbox(0)
    assert box is not None
    lb.focus_force()
    lb.event_generate("<Button-1>", x=box[0] + 2, y=box[1] + 2)
    lb.event_generate("<ButtonRelease-1>", x=box[0] + 2, y=box[1] + 2)
    pump(root, lambda: alice.current is not None and alice.current.name == "#chat",
         what="#chat chosen")
    pump(root, lambda: root.focus_get() is alice.chat.entry, what="the field has the keys")


def test_what_you_send_brings_the_view_down(root: tk.Tk, make_app: Factory,
                                            srv: RunningServer) -> None:
    alice, _bob, pane = scrolled_up(root, make_app, srv)
    say(root, alice, "my own words")
    pump(root, lambda: "alice: my own words" in alice.chat.contents(), what="the echo")
    root.update()
    assert pane.follow and pane.at_bottom() and not pane.jump_button.winfo_ismapped()


def test_three_rooms_and_a_private_talk_as_a_user_lives_them(
        root: tk.Tk, make_app: Factory, srv: RunningServer) -> None:
    """The issue's own scenario: three rooms and one private conversation, switching,
    unread counts, a mention, a 100-line paste that everyone gets whole, and leaving and
    joining a room again with its history back."""
    zoe, ann = make_app(srv), make_app(srv)
    join_all(root, (zoe, "zoe"), (ann, "ann"))
    for room in ("#dev", "#random"):
        enter_room(root, zoe, room)
        enter_room(root, ann, room)
    raw = srv.client("raw", "#dev")  # an IRC client without multiline: lines
    assert labels(zoe) == ["#chat", "#dev", "#random"]
    focus(root, zoe)  # zoe looks at #random
    say(root, ann, "/join #chat")
    pump(root, lambda: ann.current is not None and ann.current.name == "#chat",
         what="ann in #chat")
    say(root, ann, "anyone here?")
    say(root, ann, "zoe, lunch at noon?")
    pump(root, lambda: labels(zoe)[0] == "#chat  (2!)", what="unread with a mention")
    assert str(zoe.master.title()).startswith("(2, 1 for you) #random")
    say(root, ann, "/msg zoe just us")
    pump(root, lambda: labels(zoe)[-1] == "ann  (1!)", what="the private talk")
    assert labels(zoe) == ["#chat  (2!)", "#dev", "#random", "ann  (1!)"]
    zoe.conversation_clicked(0)
    t = zoe.chat.text
    assert "mention" in t.tag_names(t.search("zoe, lunch at noon?", "1.0"))
    zoe.conversation_clicked(3)
    assert "ann: just us" in zoe.chat.contents()
    assert labels(zoe) == ["#chat", "#dev", "#random", "ann"]
    # A 100-line paste in #dev: confirmed, one message for ann, 100 lines for raw.
    zoe.conversation_clicked(1)
    zoe.confirm = lambda title, text: True
    paste = "\n".join(f"paste {i:03d}" for i in range(100))
    say(root, zoe, paste)
    got = raw.expect(lambda ln: ln.endswith("paste 099"), timeout=10)
    assert [ln.split(" :", 1)[1] for ln in got if "PRIVMSG #dev :paste" in ln] == [
        f"paste {i:03d}" for i in range(100)]
    pump(root, lambda: ann.convs.get("#dev") is not None and f"zoe: {paste}" in
         ann.chat.contents(ann.convs.get("#dev").pane), what="ann's copy")  # type: ignore[union-attr]
    assert zoe.phase == "chat" and "zoe" in srv.server.reg.nicks  # nobody was cut off
    # Leave #random and join it again: what was said there comes back from history.
    zoe.conversation_clicked(2)
    say(root, zoe, "bye for now")
    pump(root, lambda: "zoe: bye for now" in zoe.chat.contents(), what="said")
    zoe.part_clicked()
    pump(root, lambda: labels(zoe) == ["#chat", "#dev", "ann"], what="left #random")
    enter_room(root, zoe, "#random")
    pump(root, lambda: "zoe: bye for now" in zoe.chat.contents(), what="history back")
    assert labels(zoe) == ["#chat", "#dev", "ann", "#random"]


def test_away_members_are_greyed(root: tk.Tk, make_app: Factory, srv: RunningServer) -> None:
    alice = make_app(srv)
    join(root, alice, "alice")
    bob = srv.client("bob", "#chat")
    pump(root, lambda: "bob" in alice.chat.listbox.get(0, "end"), what="bob listed")
    row = list(alice.chat.listbox.get(0, "end")).index("bob")
    assert alice.chat.listbox.itemcget(row, "foreground") in ("", "#1f2328")
    bob.send("AWAY :lunch")
    pump(root, lambda: alice.chat.listbox.itemcget(
        list(alice.chat.listbox.get(0, "end")).index("bob"), "foreground") == "#9aa0a6",
        what="bob greyed")
    bob.send("AWAY")
    pump(root, lambda: alice.chat.listbox.itemcget(
        list(alice.chat.listbox.get(0, "end")).index("bob"), "foreground") != "#9aa0a6",
        what="bob back")


def test_a_server_operator_disconnects_and_bans_from_the_member_menu(
        root: tk.Tk, make_app: Factory, make_server: Callable[..., RunningServer]) -> None:
    srv = make_server(opers=("dora",))
    make_account(srv, "dora", "dora's pw")
    dora = make_app(srv)
    log_in(root, dora, "dora", "dora's pw")
    bob = srv.client("bob", "#chat")
    eve = LineClient(srv.address, source="127.0.0.2")  # another address than dora's
    srv.clients.append(eve)
    eve.register("eve")
    eve.join("#chat")
    pump(root, lambda: "eve" in " ".join(dora.chat.listbox.get(0, "end")), what="eve listed")
    items = [i[0] for i in dora.member_menu("bob") if i is not None]
    assert not any("server" in label for label in items)  # not an operator yet
    asked: list[str] = []
    dora.ask_secret = lambda title, text: asked.append(text) or "wrong"
    say(root, dora, "/oper")
    pump(root, lambda: dora.chat.entry.get() == "/oper", what="the refusal")
    assert asked == ["Password of dora:"] and not dora.session.is_oper  # type: ignore[union-attr]
    assert "wrong" not in dora.chat.contents() and "wrong" not in list(dora.chat.sent)
    assert dora.chat.entry.get() == "/oper"  # refused: the line came back, selected
    dora.chat.entry.delete(0, "end")
    dora.ask_secret = lambda title, text: "dora's pw"
    say(root, dora, "/oper")
    pump(root, lambda: "You are a server operator now" in dora.chat.contents(),
         what="oper")
    menu = dict(i for i in dora.member_menu("bob") if i is not None)
    assert "Disconnect bob from the server…" in menu
    dora.ask_text = lambda title, text: "spamming"
    menu["Disconnect bob from the server…"]()
    assert bob.closed()
    pump(root, lambda: "bob" not in " ".join(dora.chat.listbox.get(0, "end")), what="bob gone")
    assert "spamming" in dora.chat.contents()
    # A ban of eve's address: everyone from it is out, and can't come back.
    answers = iter(["30m", "go away"])
    dora.ask_text = lambda title, text: next(answers)
    dict(i for i in dora.member_menu("eve") if i is not None)[
        "Ban eve's address from the server…"]()
    assert eve.closed()
    again = LineClient(srv.address, source="127.0.0.2")
    srv.clients.append(again)
    again.send("NICK eve2")
    again.send("USER e 0 * :e")
    assert again.closed()  # that address is banned now
    assert dora.phase == "chat" and "dora" in srv.server.reg.nicks


def test_a_room_operator_sees_and_lifts_bans(root: tk.Tk, make_app: Factory,
                                             srv: RunningServer) -> None:
    alice = make_app(srv)
    join(root, alice, "alice")  # made #chat: its operator
    bob = srv.client("bob", "#chat")
    pump(root, lambda: "bob" in alice.chat.listbox.get(0, "end"), what="bob listed")
    alice.confirm = lambda title, text: True
    menu = dict(i for i in alice.member_menu("bob") if i is not None)
    menu["Ban bob from #chat"]()
    assert bob.expect("KICK #chat bob")
    menu["Bans of #chat…"]()
    pump(root, lambda: any(isinstance(w, tk.Toplevel) and w.title() == "Bans of #chat"
                           for w in alice.master.winfo_children()), what="the ban list")
    (top,) = [w for w in alice.master.winfo_children()
              if isinstance(w, tk.Toplevel) and w.title() == "Bans of #chat"]
    texts = [w.cget("text") for w in top.winfo_children()[0].winfo_children()
             if isinstance(w, ttk.Label)]
    assert "bob!*@*" in texts and "set by alice" in texts
    (remove,) = [w for w in top.winfo_children()[0].winfo_children()
                 if isinstance(w, ttk.Button) and w.cget("text") == "Remove"]
    remove.invoke()
    assert remove.cget("text") == "Removed"
    # The MODE -b is on its way from alice's connection: join once the server has it.
    assert srv.wait_for(lambda: not srv.server.reg.channels["#chat"].bans)
    bob.send("JOIN #chat")
    assert bob.expect(lambda ln: " JOIN " in ln and "bob" in ln)  # back in: lifted
    top.destroy()


def test_reading_on_one_device_clears_the_count_on_another(
        root: tk.Tk, make_app: Factory, srv: RunningServer) -> None:
    make_account(srv, "dora", "dora's pw")
    devices = [make_app(srv), make_app(srv)]
    for app in devices:
        log_in(root, app, "dora", "dora's pw")
    for app in devices:
        assert app.session is not None and "draft/read-marker" in app.session.caps
        enter_room(root, app, "#dev")
    bob = srv.client("bob", "#chat")
    bob.send("PRIVMSG #chat :news for you")  # no mention: a plain unread line
    for app in devices:
        pump(root, lambda app=app: labels(app)[0] == "#chat  (1)", what="unread on both")
    phone, laptop = devices
    focus(root, laptop)
    laptop.conversation_clicked(0)  # read on the laptop...
    pump(root, lambda: labels(phone)[0] == "#chat", what="...so read on the phone")
    assert phone.current is not None and phone.current.name == "#dev"
