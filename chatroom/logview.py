"""The chat view's two Text widgets: a conversation's scrollback (:class:`LogView`, with
its tags, links, find and "new messages"), and the message field (:class:`MessageField`).

The chat view keeps one :class:`LogView` per conversation and shows one at a time, so each
keeps its own lines, scroll position and whether it follows new lines.  Tk thread only.

The log follows new lines while the user has not scrolled up.  Whether it follows is
decided when the *user* scrolls (wheel, scrollbar, keys, dragging), never from the view
after a size change: when the topic wraps to more lines or a banner appears, the log gets
shorter and the newest line must stay in view.  Scrolled up, new lines leave the view
where it is and a "↓ new messages" button floats over the bottom of the log; it jumps
back down.  When the user scrolls to the top (or presses Page Up there), ``on_top`` is
called: older lines may then come with :meth:`LogView.prepend`.

Text goes in with its tags at insert time (Tk 8.6 counts a character above U+FFFF as two
index positions, so no index is computed from a Python string offset): a web address
carries the ``link`` tag, and a click on it calls ``on_link`` with the address.
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from tkinter import font as tkfont
from tkinter import ttk
from tkinter.scrolledtext import ScrolledText

from chatroom.lines import Parts, Row, strip_formatting
from chatroom.slash import HELP, KEYS

FIND_LIMIT = 2000  # matches highlighted at most (a one-letter search in a full log)


def log_fonts() -> dict[str, tkfont.Font]:
    """The fonts of the log (one set per window: made after the root exists)."""
    base = tkfont.nametofont("TkTextFont")
    family, size = base.actual("family"), abs(int(base.actual("size"))) or 10
    return {
        "text": tkfont.Font(family=family, size=size + 1),
        "bold": tkfont.Font(family=family, size=size + 1, weight="bold"),
        "italic": tkfont.Font(family=family, size=size + 1, slant="italic"),
        "small": tkfont.Font(family=family, size=size, slant="italic"),
    }


def _configure_tags(t: tk.Text, fonts: dict[str, tkfont.Font]) -> None:
    t.tag_configure("time", foreground="#8a8f98")
    t.tag_configure("nick", foreground="#1d6b2f", font=fonts["bold"])
    t.tag_configure("own_nick", foreground="#1c4fa0", font=fonts["bold"])
    t.tag_configure("own", background="#eef3fb")
    t.tag_configure("event", foreground="#7a7f87", font=fonts["small"])
    t.tag_configure("action", foreground="#6a3d9a", font=fonts["italic"])
    t.tag_configure("private", background="#fff4d6", foreground="#6b4200")
    t.tag_configure("private_label", foreground="#a35200", font=fonts["bold"])
    t.tag_configure("mention", background="#ffe3e0")
    # Wrapped lines of a message, and the lines after its first, start under its text.
    indent = fonts["text"].measure("[00:00] ")
    t.tag_configure("msg", lmargin2=indent)
    t.tag_configure("cont", lmargin1=indent, lmargin2=indent)
    t.tag_configure("notice", foreground="#8a5a00")
    t.tag_configure("error", foreground="#b00020")
    t.tag_configure("info", foreground="#3b5b7a")
    # /help: the descriptions start at one tab stop past the longest command.
    indent = 16
    column = indent + max(fonts["text"].measure(c) for c, _ in HELP + KEYS) + 24
    t.tag_configure("help", foreground="#3b5b7a", lmargin1=indent, lmargin2=column,
                    tabs=(column,))
    t.tag_configure("day", foreground="#4a5058", font=fonts["bold"], justify="center",
                    spacing1=8, spacing3=4)
    t.tag_configure("separator", foreground="#1c4fa0", justify="center", spacing1=6,
                    spacing3=6)
    t.tag_configure("unread_rule", foreground="#c0362c", font=fonts["bold"],
                    justify="center", spacing1=4, spacing3=4)
    t.tag_configure("start", foreground="#7a7f87", font=fonts["small"], justify="center",
                    spacing1=4, spacing3=4)
    # Made after the colours above, so their colour loses to these: history is grey, a
    # link is blue and underlined wherever it is.
    t.tag_configure("history", foreground="#80858d")
    t.tag_configure("link", foreground="#0b57d0", underline=True)
    t.tag_configure("save", foreground="#ffffff", background="#1c4fa0", font=fonts["bold"],
                    underline=False)
    t.tag_configure("found", background="#fff59d")
    t.tag_configure("found_current", background="#ffb74d")
    t.tag_raise("sel")


class LogView:
    """The scrollback of one conversation, in ``self.frame`` (the caller places it)."""

    def __init__(self, master: tk.Misc, fonts: dict[str, tkfont.Font], scrollback: int,
                 on_top: Callable[[], None] = lambda: None,
                 on_link: Callable[[str], None] = lambda url: None,
                 on_save: Callable[[str], None] = lambda url: None) -> None:
        self.scrollback = scrollback
        self.on_top = on_top
        self.on_link = on_link
        self.on_save = on_save
        self._pending: list[str | tuple[str, ...]] = []
        self.follow = True  # keep the newest line in view
        self.trimmed = False  # lines went off the top (the scrollback is full)
        self.unseen = 0  # lines added while scrolled up (the jump button counts them)
        self.images: list[tk.PhotoImage] = []
        self.frame = ttk.Frame(master)
        self.text = ScrolledText(self.frame, wrap="word", width=60, height=20,
                                 state="disabled", font=fonts["text"], background="#ffffff",
                                 foreground="#1f2328", padx=8, pady=6, relief="flat",
                                 borderwidth=1, highlightthickness=1,
                                 highlightbackground="#c8ccd2", highlightcolor="#c8ccd2",
                                 spacing1=1, spacing3=1, cursor="arrow")
        self.text.pack(fill="both", expand=True)
        t = self.text
        _configure_tags(t, fonts)
        t.tag_bind("link", "<Enter>", lambda e: t.configure(cursor="hand2"))
        t.tag_bind("link", "<Leave>", lambda e: t.configure(cursor="arrow"))
        t.tag_bind("link", "<ButtonRelease-1>", self._clicked_link)
        t.tag_bind("save", "<Enter>", lambda e: t.configure(cursor="hand2"))
        t.tag_bind("save", "<Leave>", lambda e: t.configure(cursor="arrow"))
        t.tag_bind("save", "<ButtonRelease-1>", self._clicked_save)
        # The user's own scrolling decides whether the view follows new lines.
        vbar = getattr(t, "vbar", None)
        if vbar is not None:
            vbar.configure(command=self._scrollbar)
        for seq in ("<Button-4>", "<Button-5>", "<MouseWheel>", "<KeyRelease>",
                    "<B1-Motion>", "<ButtonRelease-1>"):
            t.bind(seq, lambda e: self._user_scrolled(), add="+")
        t.bind("<Configure>", lambda e: self._resized(), add="+")
        self.jump_button = ttk.Button(self.frame, text="↓ New messages",
                                      style="Jump.TButton", command=self.jump_to_bottom)

    # --- scrolling ----------------------------------------------------------------------

    def at_bottom(self) -> bool:
        """Is the newest line in view?"""
        t = self.text
        if t.yview()[1] >= 0.999:
            return True
        info = t.dlineinfo("end-1c")
        return info is not None and info[1] + info[3] <= t.winfo_height()

    def at_top(self) -> bool:
        """Is the first line in view?"""
        return bool(self.text.yview()[0] <= 0.0)

    def _scrollbar(self, *args: str) -> None:
        self.text.yview(*args)
        self._recheck()

    def page(self, pages: int) -> str:
        self.text.yview_scroll(pages, "pages")
        self._recheck()
        return "break"

    def _user_scrolled(self) -> None:
        # Widget bindings run before the class binding that scrolls: look afterwards.
        self.text.after_idle(self._recheck)

    def _recheck(self) -> None:
        try:
            self.follow = self.at_bottom()
            top = self.at_top()
        except tk.TclError:
            return
        if self.follow:
            self._hide_jump()
        if top:
            self.on_top()

    def _resized(self) -> None:
        if self.follow:
            self.text.see("end")

    def jump_to_bottom(self) -> None:
        """The floating button (and End): back to the newest line, following again."""
        self.text.see("end")
        self.follow = True
        self._hide_jump()

    def _hide_jump(self) -> None:
        self.unseen = 0
        if self.jump_button.winfo_manager():
            self.jump_button.place_forget()

    def _show_jump(self, added: int) -> None:
        self.unseen += added
        self.jump_button.configure(text=f"↓ {self.unseen} new "
                                        f"{'message' if self.unseen == 1 else 'messages'}")
        if not self.jump_button.winfo_manager():
            self.jump_button.place(relx=1.0, rely=1.0, anchor="se", x=-24, y=-10)

    # --- content ----------------------------------------------------------------------

    def clear(self) -> None:
        self._pending.clear()
        self.text.configure(state="normal")
        self.text.delete("1.0", "end")
        self.text.configure(state="disabled")
        self.follow = True
        self.trimmed = False
        self._hide_jump()

    def add(self, parts: Parts, line_tags: tuple[str, ...] = ()) -> None:
        """Queue one line; :meth:`flush` inserts all queued lines with their tags."""
        for text, tags in parts:
            self._pending.append(strip_formatting(text))
            self._pending.append(tags + line_tags)
        self._pending.append("\n")
        self._pending.append(line_tags)

    def flush(self) -> None:
        """Insert the queued lines (one ``Text.insert``), trim the scrollback, follow."""
        if not self._pending:
            return
        args, self._pending = self._pending, []
        added = args.count("\n")
        t = self.text
        t.configure(state="normal")
        t.insert("end", *args)  # type: ignore[arg-type]  # (text, tags) pairs
        lines = self.line_count()
        if lines > self.scrollback:
            t.delete("1.0", f"{lines - self.scrollback + 1}.0")
            self.trimmed = True
        t.configure(state="disabled")
        if self.follow:
            t.see("end")
        else:
            self._show_jump(added)

    def prepend(self, rows: list[Row], drop_first: bool = False) -> None:
        """Insert ``rows`` above every line, the lines in view staying where they are: the
        user reading at the top sees older lines arrive above, not a jump.  With
        ``drop_first`` the present first line goes (a day line the new rows continue)."""
        self.flush()
        args: list[str | tuple[str, ...]] = []
        for parts, line_tags in rows:
            for text, tags in parts:
                args += [strip_formatting(text), tags + line_tags]
            args += ["\n", line_tags]
        t = self.text
        anchor = t.index("@0,0")  # the first line in view
        before = t.dlineinfo(anchor)
        # Text inserted at a mark of right gravity goes before it: the mark stays on the
        # line that was first in view, however many lines come above it.
        t.mark_set("reading", anchor)
        t.mark_gravity("reading", "right")
        t.configure(state="normal")
        if drop_first:
            t.delete("1.0", "2.0")
        if args:
            t.insert("1.0", *args)  # type: ignore[arg-type]  # (text, tags) pairs
        t.configure(state="disabled")
        if self.follow:
            t.see("end")
        else:
            self._keep_in_view("reading", before)
        t.mark_unset("reading")

    def _keep_in_view(self, mark: str, before: tuple[int, int, int, int, int] | None) -> None:
        """Scroll so the line at ``mark`` is where it was (``before``: its dlineinfo)."""
        t = self.text
        t.yview(mark)  # that line at the top
        now = t.dlineinfo(mark)
        if before is not None and now is not None and now[1] != before[1]:
            t.yview_scroll(now[1] - before[1], "pixels")

    def line_count(self) -> int:
        return int(self.text.index("end-1c").split(".")[0]) - 1

    def contents(self) -> str:
        return self.text.get("1.0", "end-1c")

    # --- the "new messages" rule ------------------------------------------------------

    def has_unread_rule(self) -> bool:
        return bool(self.text.tag_ranges("unread_rule")) or "unread_rule" in self._pending

    def add_unread_rule(self, parts: Parts) -> None:
        """Mark where unseen lines start (once: until :meth:`drop_unread_rule`)."""
        if not self.has_unread_rule():
            self.add(parts, ("unread_rule",))

    def drop_unread_rule(self) -> None:
        self.flush()
        ranges = self.text.tag_ranges("unread_rule")
        if ranges:
            t = self.text
            t.configure(state="normal")
            # The rule's own newline carries the tag too: its range is the whole line.
            t.delete(f"{ranges[0]} linestart", ranges[-1])
            t.configure(state="disabled")

    # --- links and find ---------------------------------------------------------------

    def _clicked_link(self, event: tk.Event) -> None:
        t = self.text
        if t.tag_ranges("sel"):  # the user was selecting text, not clicking
            return
        at = t.index(f"@{event.x},{event.y}")
        span = t.tag_prevrange("link", f"{at}+1c")
        if span:
            self.on_link(t.get(span[0], span[1]))

    def mark_last_line(self, name: str) -> None:
        """Mark the end of the newest line (where a preview may go later)."""
        self.flush()
        self.text.mark_set(name, "end-2c")
        self.text.mark_gravity(name, "left")

    def show_image(self, mark: str, image: tk.PhotoImage) -> bool:
        """Put ``image`` on a line of its own after the line marked ``mark``; False if
        that line is gone (trimmed off the top)."""
        t = self.text
        if mark not in t.mark_names():
            return False
        keep_bottom = self.follow
        t.configure(state="normal")
        t.insert(mark, "\n")
        t.image_create(f"{mark}+1c", image=image, padx=24, pady=4)
        t.configure(state="disabled")
        t.mark_unset(mark)
        self.images.append(image)  # Tk shows it only while Python holds it
        if len(self.images) > self.IMAGES:
            self.images.pop(0)
        if keep_bottom:
            t.see("end")
        return True

    IMAGES = 50  # previews a log keeps (older ones stay as their lines)

    def _clicked_save(self, event: tk.Event) -> None:
        """Save… after a file's link: the link before it, on that line."""
        t = self.text
        at = t.index(f"@{event.x},{event.y}")
        span = t.tag_prevrange("file", at, f"{at} linestart")
        if span:
            self.on_save(t.get(span[0], span[1]))

    def find(self, pattern: str, forward: bool = True) -> tuple[int, int]:
        """Highlight every match of ``pattern`` (any case) and step to the next one (or
        the previous), scrolling it into view.  Returns (which, how many), 1-based; (0, 0)
        when nothing matches."""
        t = self.text
        self.flush()
        current = t.tag_ranges("found_current")
        t.tag_remove("found", "1.0", "end")
        t.tag_remove("found_current", "1.0", "end")
        if not pattern:
            return 0, 0
        count = tk.IntVar(t)
        starts: list[str] = []
        at = "1.0"
        while len(starts) < FIND_LIMIT:
            hit = t.search(pattern, at, stopindex="end", nocase=True, count=count)
            if not hit or (starts and t.compare(hit, "<=", starts[-1])):
                break
            starts.append(hit)
            length = max(1, count.get())
            t.tag_add("found", hit, f"{hit}+{length}c")
            at = f"{hit}+{length}c"
        if not starts:
            return 0, 0
        if current:
            here = str(current[0])
            if forward:
                after = [i for i, s in enumerate(starts) if t.compare(s, ">", here)]
                which = after[0] if after else 0
            else:
                before = [i for i, s in enumerate(starts) if t.compare(s, "<", here)]
                which = before[-1] if before else len(starts) - 1
        else:  # a new search starts from the newest line, as a reader looks back
            which = len(starts) - 1
        hit = starts[which]
        end = t.index(f"{hit}+{max(1, len(pattern))}c")
        ranges = t.tag_nextrange("found", hit)
        if ranges:
            end = str(ranges[1])
        t.tag_add("found_current", hit, end)
        t.see(hit)
        self.follow = False
        self._recheck()
        return which + 1, len(starts)

    def end_find(self) -> None:
        self.text.tag_remove("found", "1.0", "end")
        self.text.tag_remove("found_current", "1.0", "end")


class MessageField(tk.Text):
    """The message field: a Text that behaves like an Entry (``get``, ``insert`` and
    ``delete`` at character offsets, ``icursor``, ``selection_*``) and holds several
    lines, growing from one line to ``max_lines`` as they come, then scrolling."""

    def __init__(self, master: tk.Misc, font: tkfont.Font, max_lines: int) -> None:
        # exportselection=False: the "type over it" selection of refused text must not be
        # the shared X selection, which any other window selecting text would take away.
        super().__init__(master, height=1, width=40, wrap="word", font=font, undo=True,
                         exportselection=False, background="#ffffff", foreground="#1f2328",
                         insertbackground="#1f2328", relief="flat", borderwidth=0,
                         highlightthickness=1, highlightbackground="#9aa3ad",
                         highlightcolor="#1c4fa0", padx=6, pady=4)
        self.max_lines = max_lines
        self.bind("<<Modified>>", lambda e: self._changed(), add="+")
        self.bind("<Configure>", lambda e: self._fit(), add="+")

    def _index(self, where: int | str) -> str:
        if isinstance(where, int):
            return f"1.0+{where}c"
        return "end-1c" if where == "end" else where

    def get(self, first: str | None = None, last: str | None = None) -> str:  # type: ignore[override]
        """The whole text (as Entry.get): the message as typed; or a range, as Text's."""
        if first is not None:
            return str(super().get(first, last))
        return str(super().get("1.0", "end-1c"))

    def set(self, text: str) -> None:
        super().delete("1.0", "end")
        if text:
            super().insert("1.0", text)
        self.mark_set("insert", "end-1c")
        self._fit()

    def insert(self, index: int | str, chars: str, *args: str) -> None:  # type: ignore[override]
        super().insert(self._index(index), chars, *args)
        self._fit()

    def delete(self, first: int | str, last: int | str | None = None) -> None:  # type: ignore[override]
        super().delete(self._index(first), None if last is None else self._index(last))
        self._fit()

    def index(self, where: str) -> int:  # type: ignore[override]
        """A character offset (as Entry.index), for the cursor or a selection end."""
        counted = self.count("1.0", where, "chars")
        return int(counted[0]) if counted else 0

    def icursor(self, where: int | str) -> None:
        self.mark_set("insert", self._index(where))
        self.see("insert")

    def selection_range(self, first: int | str, last: int | str) -> None:
        self.tag_remove("sel", "1.0", "end")
        self.tag_add("sel", self._index(first), self._index(last))

    def selection_present(self) -> bool:
        return bool(self.tag_ranges("sel"))

    def selection_clear(self) -> None:  # type: ignore[override]
        self.tag_remove("sel", "1.0", "end")

    def new_line(self) -> str:
        """Shift+Enter: a new line in the message (Enter alone sends)."""
        if self.selection_present():
            super().delete("sel.first", "sel.last")
        super().insert("insert", "\n")
        self.see("insert")
        self._fit()
        return "break"

    def on_edge(self, step: int) -> bool:
        """Is the cursor on the first display line (step -1) or the last (+1)?  Up and
        Down then recall sent lines; elsewhere they move between the message's lines."""
        line = self.count("1.0", "insert", "displaylines")
        here = int(line[0]) if line else 0
        total = self.count("1.0", "end-1c", "displaylines")
        last = int(total[0]) if total else 0
        return here == 0 if step < 0 else here >= last

    def _changed(self) -> None:
        self.edit_modified(False)
        self._fit()

    def _fit(self) -> None:
        """As many lines high as the message has, up to ``max_lines``."""
        try:
            counted = self.count("1.0", "end", "displaylines")
        except tk.TclError:
            return
        lines = max(1, min(self.max_lines, int(counted[0]) if counted else 1))
        if int(self.cget("height")) != lines:
            self.configure(height=lines)
