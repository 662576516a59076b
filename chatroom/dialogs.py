"""The chat window's small windows: Join Room… (the server's rooms) and the emoji picker,
and the window manager's "needs attention" hint.  Tk thread only.

The dialogs take plain data and callbacks, like the views: the app hands the Join dialog
the server's room list when it comes (:meth:`JoinDialog.set_rooms`) and gets back the
name to join.  :func:`set_urgency` sets the X11 urgency hint (or flashes the task bar
button on Windows) through :mod:`ctypes`, because Tk has no call for it; where neither is
possible it does nothing, and the bell alone has to do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import tkinter as tk
from collections.abc import Callable, Sequence
from tkinter import font as tkfont
from tkinter import ttk

from chatroom.events import RoomInfo
from chatroom.lines import strip_formatting

log = logging.getLogger(__name__)

# The emoji people use most in chat, best first, then symbols that older fonts have: the
# picker shows the first SHOWN_EMOJI of them that the fonts here can draw.
EMOJI = ("😀 😂 🙂 😉 😍 😎 🤔 😅 😢 😮 😡 😴 🙈 🤷 👀 🤝 "
         "👍 👎 👏 🙏 💪 👋 ✌ 👌 ❤ 🔥 ✨ 🎉 ⭐ ✅ ❌ ⚠ "
         "☕ 🍕 🍺 🎂 🚀 💡 🐛 📎 "
         "😁 😃 😄 😆 😇 😊 😋 😌 😏 😐 😒 😔 😕 😘 😛 😜 😞 😠 😤 😭 😱 😳 😷 "
         "☺ ☹ ♥ ★ ☆ ✔ ✘ ☀ ☁ ☂ ☃ ♪ ♫ ☝ ✍ ⚡ ☎ ✉ ✈ ⌛ ☑ ♻ ⚽ ☠ ☮").split()
SHOWN_EMOJI = 40
PER_ROW = 8
SHOWN_ROOMS = 500  # rows the Join dialog lists at most (filtering finds the rest)


class JoinDialog:
    """Join a room by name, or pick one of the server's (name, people, topic).

    Typing in the name field filters the list; Enter or Join joins the name typed (or the
    room picked), a double click joins that room.  ``on_join(name)`` returns None when the
    join was asked for (the dialog closes) or why not, shown in the dialog.
    """

    def __init__(self, master: tk.Misc, on_join: Callable[[str], str | None],
                 on_refresh: Callable[[], None]) -> None:
        self.on_join = on_join
        self.rooms: tuple[RoomInfo, ...] = ()
        self.top = tk.Toplevel(master)
        top = self.top
        top.title("Join a room")
        top.transient(master.winfo_toplevel())
        top.minsize(420, 320)
        top.geometry("520x400")
        frame = ttk.Frame(top, padding=10)
        frame.pack(fill="both", expand=True)
        frame.columnconfigure(1, weight=1)
        frame.rowconfigure(2, weight=1)
        ttk.Label(frame, text="Room:").grid(row=0, column=0, sticky="w")
        self.name_var = tk.StringVar()
        self.name_entry = ttk.Entry(frame, textvariable=self.name_var)
        self.name_entry.grid(row=0, column=1, sticky="ew", padx=(6, 6))
        self.join_button = ttk.Button(frame, text="Join", command=self.join)
        self.join_button.grid(row=0, column=2)
        ttk.Label(frame, text="Type a room's name (a new name makes a new room), or pick "
                              "one:", style="Sub.TLabel", wraplength=440).grid(
            row=1, column=0, columnspan=3, sticky="w", pady=(6, 4))
        self.tree = ttk.Treeview(frame, columns=("users", "topic"), selectmode="browse",
                                 height=10)
        self.tree.heading("#0", text="Room", anchor="w")
        self.tree.heading("users", text="People", anchor="e")
        self.tree.heading("topic", text="Topic", anchor="w")
        self.tree.column("#0", width=130, stretch=False)
        self.tree.column("users", width=72, stretch=False, anchor="e")
        self.tree.column("topic", width=260, stretch=True)
        self.tree.grid(row=2, column=0, columnspan=3, sticky="nsew")
        bar = ttk.Scrollbar(frame, orient="vertical", command=self.tree.yview)
        bar.grid(row=2, column=3, sticky="ns")
        self.tree.configure(yscrollcommand=bar.set)
        self.status_var = tk.StringVar()
        self.status = ttk.Label(frame, textvariable=self.status_var, style="Status.TLabel",
                                wraplength=380, justify="left")
        self.status.grid(row=3, column=0, columnspan=2, sticky="w", pady=(6, 0))
        buttons = ttk.Frame(frame)
        buttons.grid(row=3, column=2, columnspan=2, sticky="e", pady=(6, 0))
        ttk.Button(buttons, text="Refresh", command=on_refresh).pack(side="left")
        ttk.Button(buttons, text="Close", command=self.close).pack(side="left", padx=(6, 0))
        self.tree.bind("<<TreeviewSelect>>", lambda e: self._picked())
        self.tree.bind("<Double-1>", lambda e: self._double())
        self.tree.bind("<Return>", lambda e: self.join())
        self.name_entry.bind("<Return>", lambda e: self.join())
        self.name_entry.bind("<KP_Enter>", lambda e: self.join())
        self.name_entry.bind("<Down>", lambda e: self._into_list())
        top.bind("<Escape>", lambda e: self.close())
        self.name_var.trace_add("write", lambda *a: self._fill())
        self._picking = False
        self.name_entry.focus_set()

    def alive(self) -> bool:
        try:
            return bool(self.top.winfo_exists())
        except tk.TclError:
            return False

    def lift(self) -> None:
        self.top.deiconify()
        self.top.lift()
        self.name_entry.focus_set()

    def close(self) -> None:
        try:
            self.top.destroy()
        except tk.TclError:
            pass

    def set_status(self, text: str, error: bool = False) -> None:
        self.status_var.set(text)
        self.status.configure(style="Error.TLabel" if error else "Status.TLabel")

    def set_rooms(self, rooms: Sequence[RoomInfo], complete: bool = True) -> None:
        """The server's rooms (most people first)."""
        self.rooms = tuple(rooms)
        self._fill()
        count = len(self.rooms)
        if not count:
            self.set_status("The server has no rooms yet: type a name to create one.")
        else:
            more = "" if complete else " (the server has more than shown)"
            self.set_status(f"{count} {'room' if count == 1 else 'rooms'} on this "
                            f"server{more}.")

    def shown(self) -> list[str]:
        """The rooms listed now, in order (for tests)."""
        return [str(self.tree.item(i, "text")) for i in self.tree.get_children()]

    def _fill(self) -> None:
        if self._picking:  # the name was set from the list: keep the list as it is
            return
        typed = self.name_var.get().strip().lstrip("#&").lower()
        self.tree.delete(*self.tree.get_children())
        shown = 0
        for room in self.rooms:
            if typed and typed not in room.name.lower() and typed not in room.topic.lower():
                continue
            self.tree.insert("", "end", text=room.name,
                             values=(room.users, strip_formatting(room.topic)))
            shown += 1
            if shown >= SHOWN_ROOMS:
                break

    def _selected(self) -> str | None:
        chosen = self.tree.selection()
        return str(self.tree.item(chosen[0], "text")) if chosen else None

    def _picked(self) -> None:
        name = self._selected()
        if name is not None:
            self._picking = True
            try:
                self.name_var.set(name)
            finally:
                self._picking = False

    def _double(self) -> None:
        if self._selected() is not None:
            self.join()

    def _into_list(self) -> str:
        children = self.tree.get_children()
        if children:
            self.tree.focus_set()
            self.tree.selection_set(children[0])
            self.tree.focus(children[0])
        return "break"

    def join(self) -> str:
        name = self.name_var.get().strip() or (self._selected() or "")
        if not name:
            self.set_status("Type the name of the room to join, e.g. #chat.", error=True)
            self.name_entry.focus_set()
            return "break"
        problem = self.on_join(name)
        if problem:
            self.set_status(problem, error=True)
            self.name_entry.focus_set()
            self.name_entry.selection_range(0, "end")
        else:
            self.close()
        return "break"


class EmojiPicker:
    """A small grid of emoji over the ☺ button; a click puts one in the message field."""

    def __init__(self, master: tk.Misc, anchor: tk.Widget,
                 on_pick: Callable[[str], None]) -> None:
        self.on_pick = on_pick
        self.top = tk.Toplevel(master)
        top = self.top
        top.wm_overrideredirect(True)
        top.transient(master.winfo_toplevel())
        frame = ttk.Frame(top, padding=4, relief="solid", borderwidth=1)
        frame.pack()
        self.cells: list[ttk.Label] = []
        self.shown = drawable(EMOJI, str(ttk.Style(top).lookup("Emoji.TLabel", "font")),
                              top)[:SHOWN_EMOJI]
        for i, emoji in enumerate(self.shown):
            cell = ttk.Label(frame, text=emoji, style="Emoji.TLabel", cursor="hand2")
            cell.grid(row=i // PER_ROW, column=i % PER_ROW)
            cell.bind("<Button-1>", self._picker(emoji))
            self.cells.append(cell)
        top.bind("<Escape>", lambda e: self.close())
        top.update_idletasks()
        x = anchor.winfo_rootx() + anchor.winfo_width() - top.winfo_reqwidth()
        y = anchor.winfo_rooty() - top.winfo_reqheight() - 4
        top.wm_geometry(f"+{max(0, x)}+{max(0, y)}")
        top.focus_set()

    def _picker(self, emoji: str) -> Callable[[tk.Event[tk.Misc]], None]:
        return lambda event: self.pick(emoji)

    def alive(self) -> bool:
        try:
            return bool(self.top.winfo_exists())
        except tk.TclError:
            return False

    def pick(self, emoji: str) -> None:
        self.close()
        self.on_pick(emoji)

    def close(self) -> None:
        try:
            self.top.destroy()
        except tk.TclError:
            pass


def drawable(chars: Sequence[str], font: str, widget: tk.Misc) -> list[str]:
    """Those of ``chars`` the fonts here can draw (Tk draws the others as boxes).

    Tk cannot say whether a font has a glyph, but a character no font has is as wide as
    any other such character (its box); one that measures differently is drawn.  If none
    does (no way to tell), all are kept.
    """
    try:
        f = tkfont.Font(root=widget, font=font) if font else tkfont.nametofont(
            "TkDefaultFont")
        box = f.measure("\U000E01EF")  # a variation selector no font draws
        kept = [c for c in chars if f.measure(c) != box]
    except tk.TclError:
        return list(chars)
    return kept or list(chars)


# --- the urgency hint ------------------------------------------------------------------

class _XWMHints(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_long), ("input", ctypes.c_int),
                ("initial_state", ctypes.c_int), ("icon_pixmap", ctypes.c_ulong),
                ("icon_window", ctypes.c_ulong), ("icon_x", ctypes.c_int),
                ("icon_y", ctypes.c_int), ("icon_mask", ctypes.c_ulong),
                ("window_group", ctypes.c_ulong)]


_X_URGENCY = 1 << 8  # XUrgencyHint
_x11: tuple[ctypes.CDLL, int] | None = None  # libX11 and our own display connection
_x11_failed = False


def _x11_display(screen: str) -> tuple[ctypes.CDLL, int] | None:
    global _x11, _x11_failed
    if _x11 is not None or _x11_failed:
        return _x11
    try:
        name = ctypes.util.find_library("X11")
        if name is None:
            raise OSError("libX11 not found")
        lib = ctypes.CDLL(name)
        lib.XOpenDisplay.restype = ctypes.c_void_p
        lib.XOpenDisplay.argtypes = [ctypes.c_char_p]
        lib.XGetWMHints.restype = ctypes.POINTER(_XWMHints)
        lib.XGetWMHints.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
        lib.XSetWMHints.argtypes = [ctypes.c_void_p, ctypes.c_ulong,
                                    ctypes.POINTER(_XWMHints)]
        lib.XFree.argtypes = [ctypes.c_void_p]
        lib.XFlush.argtypes = [ctypes.c_void_p]
        display = lib.XOpenDisplay(screen.encode())
        if not display:
            raise OSError(f"cannot open display {screen}")
        _x11 = (lib, display)
    except (OSError, AttributeError) as exc:
        _x11_failed = True
        log.info("no urgency hint for the window (%s); the bell alone will do", exc)
    return _x11


def get_urgency(screen: str, window: int) -> bool | None:
    """Is the X11 urgency hint set on ``window``?  None where it cannot be read."""
    x = _x11_display(screen) if sys.platform.startswith("linux") else None
    if x is None:
        return None
    lib, display = x
    hints = lib.XGetWMHints(display, window)
    if not hints:
        return False
    try:
        return bool(hints.contents.flags & _X_URGENCY)
    finally:
        lib.XFree(hints)


def set_urgency(screen: str, window: int, on: bool) -> None:
    """Mark ``window`` (the toplevel's frame, from ``wm frame``) as wanting attention, or
    not: the X11 urgency hint, or a flash of its task bar button on Windows."""
    if sys.platform == "win32":
        try:
            ctypes.windll.user32.FlashWindow(window, bool(on))  # type: ignore[attr-defined]
        except (OSError, AttributeError):
            pass
        return
    x = _x11_display(screen)
    if x is None:
        return
    lib, display = x
    got = lib.XGetWMHints(display, window)
    hints = _XWMHints()
    if got:
        ctypes.memmove(ctypes.byref(hints), got, ctypes.sizeof(_XWMHints))
        lib.XFree(got)
    hints.flags = hints.flags | _X_URGENCY if on else hints.flags & ~_X_URGENCY
    lib.XSetWMHints(display, window, ctypes.byref(hints))
    lib.XFlush(display)
