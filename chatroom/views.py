"""The Tk widgets: the login view, the chat view, and the window they share.

The only client module that imports :mod:`tkinter`.  Views take plain data and callbacks,
never a session; :class:`Window` wraps what the app does to its toplevel (title, timers,
focus, closing), so the app needs no Tk of its own.  Everything here runs on the Tk
thread only (the thread that made the root); no other thread may call any of it.  Text
goes into the log with its tags at insert time (Tk 8.6 counts a character above U+FFFF as
two index positions, so no index is computed from a Python string offset).
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from collections.abc import Callable, Iterable
from typing import TypeAlias

from chatroom.lines import Parts, Row, help_row, strip_formatting
from chatroom.session import clean_text

try:
    import tkinter as tk
    from tkinter import font as tkfont
    from tkinter import ttk

    from chatroom.dialogs import EmojiPicker as EmojiPicker
    from chatroom.dialogs import JoinDialog as JoinDialog
    from chatroom.dialogs import set_urgency
    from chatroom.logview import LogView, MessageField, log_fonts
except ImportError:  # the session works without Tk; only the window needs it
    tk = None  # type: ignore[assignment]


AVAILABLE = tk is not None  # False: no tkinter here (the session works, the window not)
TclError: type[Exception] = tk.TclError if tk is not None else Exception
Toplevel: TypeAlias = "tk.Tk | tk.Toplevel"  # what a ChatApp lives in


class NoWindow(Exception):
    """No window can be opened (no tkinter, no display); the message says why."""


def open_root(geometry: str = "860x560") -> tk.Tk:
    """The program's Tk root (class ``Chat``), sized; :class:`NoWindow` if there is none."""
    if tk is None:
        raise NoWindow("tkinter is not installed (on Debian/Ubuntu: apt install python3-tk)")
    try:
        root = tk.Tk(className="Chat")
    except tk.TclError as exc:
        raise NoWindow(f"cannot open a window: {exc}") from None
    root.geometry(geometry)
    return root


class Window:
    """What the app does to its toplevel (a Tk or a Toplevel), with Tk's errors handled.

    Once the window is destroyed the calls that would fail do nothing.
    """

    def __init__(self, master: Toplevel) -> None:
        self.master = master

    def setup(self, title: str, minsize: tuple[int, int], on_close: Callable[[], None],
              on_focus: Callable[[], None]) -> None:
        self.master.title(title)
        self.master.minsize(*minsize)
        self.master.protocol("WM_DELETE_WINDOW", on_close)
        self.master.bind("<FocusIn>", lambda e: on_focus(), add="+")

    def set_title(self, title: str) -> None:
        self.master.title(title)

    def after(self, ms: int, callback: Callable[[], None]) -> str | None:
        """Run ``callback`` on the Tk thread in ``ms`` ms; None if the window is gone."""
        try:
            return self.master.after(ms, callback)
        except tk.TclError:
            return None

    def cancel(self, after_id: str) -> None:
        try:
            self.master.after_cancel(after_id)
        except tk.TclError:
            pass

    def focused(self) -> bool:
        """Does the keyboard focus lie in this window?"""
        try:
            w = self.master.focus_get()
        except (KeyError, tk.TclError):
            return False
        if w is None:
            return False
        # Its own dialogs (Join Room…, the emoji picker) count as the window.
        top, me = str(w.winfo_toplevel()), str(self.master)
        return top == me or me == "." or top.startswith(me + ".")

    def bind_keys(self, keys: dict[str, Callable[[], None]], active: Callable[[], bool],
                  widgets: Iterable[tk.Misc] = ()) -> None:
        """Window-wide shortcuts: each runs while ``active()`` says so.  Bound on the
        window, and on ``widgets`` too, whose own bindings (the message field's Up,
        Entry's Emacs-style Ctrl+K) would otherwise take the key first."""
        def runner(action: Callable[[], None]) -> Callable[[tk.Event[tk.Misc]], str | None]:
            def run(event: tk.Event[tk.Misc]) -> str | None:
                if not active():
                    return None
                action()
                return "break"
            return run
        for seq, action in keys.items():
            self.master.bind(seq, runner(action), add="+")
            for widget in widgets:
                widget.bind(seq, runner(action))

    def bell(self) -> None:
        try:
            self.master.bell()
        except tk.TclError:
            pass

    def set_urgent(self, on: bool) -> None:
        """Ask the window manager to mark the window as wanting attention (or not)."""
        try:
            frame = int(self.master.wm_frame(), 16)
            screen = self.master.winfo_screen()
        except (tk.TclError, ValueError):
            return
        set_urgency(screen, frame, on)

    def hide(self) -> None:
        """Take the window off the screen at once (closing may take a moment more)."""
        try:
            self.master.withdraw()
            self.master.update_idletasks()
        except tk.TclError:
            pass

    def destroy(self) -> None:
        try:
            self.master.destroy()
        except tk.TclError:
            pass

    def mainloop(self) -> None:
        self.master.mainloop()


def open_in_browser(url: str) -> None:
    """Open ``url`` in the web browser, on a thread of its own: finding the browser can
    run a program and wait for it, which the Tk thread must not."""
    import threading
    import webbrowser

    if not url.lower().startswith(("http://", "https://")):
        return  # only web addresses, never a file or a program
    threading.Thread(target=webbrowser.open, args=(url,), name="open-url",
                     daemon=True).start()


def style(root: tk.Misc) -> None:
    """Colours and fonts shared by both views (a ttk style is per Tk interpreter)."""
    style = ttk.Style(root)
    if "clam" in style.theme_names():
        style.theme_use("clam")
    base = tkfont.nametofont("TkDefaultFont")
    family, size = base.actual("family"), abs(int(base.actual("size"))) or 10
    style.configure("Heading.TLabel", font=(family, size + 6, "bold"))
    style.configure("Sub.TLabel", foreground="#555555")
    style.configure("Note.TLabel", foreground="#555555", font=(family, max(size - 1, 8)))
    style.configure("Claim.TFrame", background="#fff1c2")
    style.configure("Claim.TLabel", background="#fff1c2", foreground="#3d3300",
                    padding=(8, 4))
    style.configure("Error.TLabel", foreground="#b00020")
    style.configure("Status.TLabel", foreground="#3b5b7a")
    style.configure("Topic.TLabel", background="#fff8e1", foreground="#3d3300",
                    padding=(8, 5))
    style.configure("Banner.TFrame", background="#b3261e")
    style.configure("Banner.TLabel", background="#b3261e", foreground="#ffffff",
                    padding=(8, 4))
    style.configure("Offline.TLabel", foreground="#8a8f98", font=(family, size, "bold"))
    style.configure("Side.TLabel", font=(family, size, "bold"))
    style.configure("Jump.TButton", foreground="#ffffff", background="#1c4fa0")
    style.map("Jump.TButton", background=[("active", "#2a62c0")])
    style.configure("Emoji.TLabel", font=(family, size + 6), padding=(4, 2))
    style.configure("Count.TLabel", foreground="#1d6b2f", font=(family, size, "bold"))
    style.configure("Secure.TLabel", foreground="#1d6b2f")
    style.configure("Insecure.TLabel", foreground="#8a5a00")
    style.configure("Trust.TFrame", background="#fff8e1")
    style.configure("Trust.TLabel", background="#fff8e1", foreground="#3d3300")
    style.configure("TrustHead.TLabel", background="#fff8e1", foreground="#3d3300",
                    font=(family, size, "bold"))
    style.configure("Print.TLabel", background="#fff8e1", foreground="#1f2328",
                    font=("TkFixedFont", size))


ENTRY_WIDTH = 26  # characters: the login form's fields


def _enter_invokes(button: ttk.Button) -> None:
    """Enter on a focused button presses it (Tk's buttons answer only the space bar)."""
    button.bind("<Return>", lambda e: button.invoke())
    button.bind("<KP_Enter>", lambda e: button.invoke())


class LoginView:
    """The way in (guest, log in, create account), name (focused, Enter joins), password
    and its confirmation, "Remember my password", host, port, Use TLS, the server's own
    password, the button; errors below, and under them the certificate panel when a
    certificate needs the user's word.

    The password fields show only for log in (one) and create account (two); the choice is
    three radio buttons (Alt+G, Alt+L, Alt+C, or the arrow keys on them).  ``on_join`` is
    the button (its text says what it does; Cancel while busy); ``on_enter`` is Enter in any
    field.  ``on_remember`` gets the box's new state when the user changes it;
    ``on_identity`` is called when the name, host or port changes (to fill in a remembered
    password).  ``on_trust`` is the panel's Trust (or Accept the New Certificate) button,
    ``on_distrust`` its Cancel (also Escape).  "Use TLS" follows the port (on for 6697)
    until the user sets it.
    """

    MESSAGE_LINES = 4  # room kept for the message, so the form does not move when it changes
    WRAP = 420
    TLS_PORT = "6697"
    MODES = (("guest", "Guest", "Join Chat"), ("login", "Log in", "Log In and Join"),
             ("create", "Create account", "Create Account and Join"))
    REMEMBER_NOTE = "Stored on this computer, readable only by your user account."
    NOTE_WRAP = 300

    def __init__(self, master: tk.Misc, room: str, host: str, port: int, name: str,
                 on_join: Callable[[], None], on_enter: Callable[[], None],
                 tls: bool | None = None, on_trust: Callable[[], None] = lambda: None,
                 on_distrust: Callable[[], None] = lambda: None,
                 on_remember: Callable[[bool], None] = lambda on: None,
                 on_identity: Callable[[], None] = lambda: None) -> None:
        self.frame = ttk.Frame(master, padding=(24, 16))
        self.frame.columnconfigure(0, weight=1)
        self.frame.columnconfigure(2, weight=1)
        self.frame.rowconfigure(0, weight=1)
        self.frame.rowconfigure(2, weight=2)
        form = ttk.Frame(self.frame)
        form.grid(row=1, column=1)
        self.name_var = tk.StringVar(value=name)
        self.host_var = tk.StringVar(value=host)
        self.port_var = tk.StringVar(value=str(port))
        self.mode_var = tk.StringVar(value="guest")
        self.password_var = tk.StringVar()  # the account's password (log in, create)
        self.confirm_var = tk.StringVar()  # it again (create)
        self.remember_var = tk.BooleanVar(value=False)
        self.server_password_var = tk.StringVar()  # the server's own password (PASS)
        self.tls_var = tk.BooleanVar(value=str(port) == self.TLS_PORT if tls is None else tls)
        self.tls_touched = tls is not None  # the user (or --tls) chose: the port won't change it
        self.message_var = tk.StringVar()  # an error (red)
        self.status_var = tk.StringVar()  # progress (blue); one of the two shows at a time
        self._busy = False

        head = ttk.Frame(form)
        head.grid(row=0, column=0, columnspan=3, sticky="w", pady=(0, 8))
        ttk.Label(head, text="Join the chat", style="Heading.TLabel").pack(side="left")
        self.room_label = ttk.Label(head, text=f"Room {room}", style="Sub.TLabel")
        self.room_label.pack(side="left", padx=(12, 0), pady=(6, 0))

        def label(r: int, text: str) -> ttk.Label:
            widget = ttk.Label(form, text=text)
            widget.grid(row=r, column=0, sticky="w", padx=(0, 10), pady=3)
            return widget

        def row(r: int, text: str, widget: tk.Widget, hint: str = "") -> list[tk.Widget]:
            shown: list[tk.Widget] = [label(r, text), widget]
            widget.grid(row=r, column=1, sticky="ew", pady=3)
            if hint:
                note = ttk.Label(form, text=hint, style="Sub.TLabel")
                note.grid(row=r, column=2, sticky="w", padx=(8, 0))
                shown.append(note)
            return shown

        label(1, "Join as")
        modes = ttk.Frame(form)
        modes.grid(row=1, column=1, columnspan=2, sticky="w", pady=(3, 6))
        self.mode_buttons: dict[str, ttk.Radiobutton] = {}
        for value, text, _button in self.MODES:
            rb = ttk.Radiobutton(modes, text=text, value=value, variable=self.mode_var,
                                 underline=0, command=self._mode_changed)
            rb.pack(side="left", padx=(0, 14))
            rb.bind("<Left>", self._stepper(value, -1))
            rb.bind("<Right>", self._stepper(value, 1))
            rb.bind("<Return>", lambda e: on_enter())
            rb.bind("<KP_Enter>", lambda e: on_enter())
            self.mode_buttons[value] = rb

        self.name_entry = ttk.Entry(form, textvariable=self.name_var, width=ENTRY_WIDTH,
                                    exportselection=False)
        self.password_entry = ttk.Entry(form, textvariable=self.password_var, width=ENTRY_WIDTH,
                                        show="•", exportselection=False)
        self.confirm_entry = ttk.Entry(form, textvariable=self.confirm_var, width=ENTRY_WIDTH,
                                       show="•", exportselection=False)
        self.host_entry = ttk.Entry(form, textvariable=self.host_var, width=ENTRY_WIDTH)
        self.server_password_entry = ttk.Entry(form, textvariable=self.server_password_var,
                                               width=ENTRY_WIDTH, show="•")
        row(2, "Name", self.name_entry)
        self.password_row = row(3, "Password", self.password_entry)
        self.confirm_row = row(4, "Confirm", self.confirm_entry, "(type it again)")
        remember = ttk.Frame(form)
        remember.grid(row=5, column=1, columnspan=2, sticky="w", pady=(0, 4))
        self.remember_check = ttk.Checkbutton(
            remember, text="Remember my password", underline=0, variable=self.remember_var,
            command=lambda: on_remember(bool(self.remember_var.get())))
        self.remember_check.pack(anchor="w")
        self.remember_note = ttk.Label(remember, text=self.REMEMBER_NOTE, style="Note.TLabel",
                                       wraplength=self.NOTE_WRAP, justify="left")
        self.remember_note.pack(anchor="w", padx=(22, 0))
        self.remember_row: list[tk.Widget] = [remember]
        row(6, "Server", self.host_entry)
        label(7, "Port")
        portrow = ttk.Frame(form)
        portrow.grid(row=7, column=1, columnspan=2, sticky="w", pady=3)
        self.port_entry = ttk.Entry(portrow, textvariable=self.port_var, width=8)
        self.port_entry.pack(side="left")
        self.tls_check = ttk.Checkbutton(portrow, text="Use TLS (encrypted)", underline=9,
                                         variable=self.tls_var, command=self._tls_touched)
        self.tls_check.pack(side="left", padx=(14, 0))
        self._last_port = self.port_var.get().strip()
        self.port_var.trace_add("write", lambda *a: self._port_changed())
        self.host_var.trace_add("write", lambda *a: self.hide_trust())
        for var in (self.name_var, self.host_var, self.port_var):
            var.trace_add("write", lambda *a: on_identity())
        row(8, "Server password", self.server_password_entry, "(if it has one)")
        self.join_button = ttk.Button(form, text="Join Chat", command=on_join)
        self.join_button.grid(row=9, column=1, sticky="w", pady=(10, 6))
        for key in ("<Return>", "<KP_Enter>"):  # joins; never cancels, as the click would
            self.join_button.bind(key, lambda e: on_enter())
        # One label for both, in a row of fixed height and a column of fixed width.
        self.message_label = ttk.Label(form, textvariable=self.status_var,
                                       style="Status.TLabel", wraplength=self.WRAP,
                                       justify="left", anchor="nw")
        self.message_label.grid(row=10, column=0, columnspan=3, sticky="nw")
        font = tkfont.nametofont("TkDefaultFont")
        form.rowconfigure(10, minsize=self.MESSAGE_LINES * font.metrics("linespace") + 4)
        for entry in (self.name_entry, self.password_entry, self.confirm_entry,
                      self.host_entry, self.port_entry, self.server_password_entry):
            entry.bind("<Return>", lambda e: on_enter())
            entry.bind("<KP_Enter>", lambda e: on_enter())
        self.remember_check.bind("<Return>", lambda e: on_enter())
        self._build_trust(form, on_trust, on_distrust)
        # The form keeps the height of its longest variant (create account), its fields at
        # the top: choosing another way in never moves the fields above the change.
        self.set_mode("create")
        form.update_idletasks()
        self.frame.rowconfigure(1, minsize=form.winfo_reqheight())
        hint = form.grid_bbox(2, 4)  # "(type it again)", the widest hint
        if hint is not None:
            form.columnconfigure(2, minsize=hint[2])
        form.grid_configure(sticky="n")
        self.mode_var.set("guest")
        # Keys for the panel's buttons (the toplevel's bindings see keys in every widget).
        toplevel = self.frame.winfo_toplevel()
        toplevel.bind("<Alt-t>", lambda e: self._panel_key(self.trust_button, False), add="+")
        toplevel.bind("<Alt-a>", lambda e: self._panel_key(self.trust_button, True), add="+")
        toplevel.bind("<Escape>", lambda e: self._panel_key(self.distrust_button), add="+")
        toplevel.bind("<Alt-e>", lambda e: self._toggle_tls(), add="+")
        for key, value in (("g", "guest"), ("l", "login"), ("c", "create")):
            toplevel.bind(f"<Alt-{key}>", self._mode_keyer(value), add="+")
        toplevel.bind("<Alt-r>", lambda e: self._remember_key(), add="+")
        self._mode_changed()


    # --- the way in -----------------------------------------------------------------------

    def mode(self) -> str:
        """guest, login or create."""
        return str(self.mode_var.get())

    def set_mode(self, mode: str) -> None:
        self.mode_var.set(mode)
        self._mode_changed()

    def _mode_changed(self) -> None:
        """Show the fields the chosen way in needs, and say on the button what it does."""
        mode = self.mode()
        for widgets, shown in ((self.password_row, mode != "guest"),
                               (self.remember_row, mode != "guest"),
                               (self.confirm_row, mode == "create")):
            for w in widgets:
                if shown:
                    w.grid()
                else:
                    w.grid_remove()
        if mode != "create":
            self.confirm_var.set("")
        if not self._busy:
            self.join_button.configure(text=self._button_text())

    def _button_text(self) -> str:
        return next(b for v, _t, b in self.MODES if v == self.mode())

    def _stepper(self, value: str, step: int) -> Callable[[tk.Event[tk.Misc]], str]:
        return lambda e: self._step_mode(value, step)

    def _mode_keyer(self, value: str) -> Callable[[tk.Event[tk.Misc]], None]:
        return lambda e: self._mode_key(value)

    def _step_mode(self, value: str, step: int) -> str:
        """Left/Right on a way-in button: select (and focus) the next one, as radios do."""
        order = [v for v, _t, _b in self.MODES]
        new = order[(order.index(value) + step) % len(order)]
        self.set_mode(new)
        self.mode_buttons[new].focus_set()
        return "break"

    def _mode_key(self, value: str) -> None:
        if self.frame.winfo_ismapped() and not self._busy:
            self.set_mode(value)
            self.mode_buttons[value].focus_set()

    def _remember_key(self) -> None:
        if self.frame.winfo_ismapped() and self.mode() != "guest":
            self.remember_check.invoke()

    def account_values(self) -> tuple[str, str, str, bool]:
        """The way in, the password, its confirmation and "Remember my password"."""
        return (self.mode(), clean_text(self.password_var.get()),
                clean_text(self.confirm_var.get()), bool(self.remember_var.get()))

    def set_password(self, password: str, remembered: bool | None = None) -> None:
        """Fill in (or with "" clear) the password; ``remembered`` sets the box too."""
        self.password_var.set(password)
        self.confirm_var.set("")
        if remembered is not None:
            self.remember_var.set(remembered)

    def remember(self) -> bool:
        return bool(self.remember_var.get())

    def set_remember(self, on: bool) -> None:
        self.remember_var.set(on)

    def focus_field(self, name: str, select: bool = True) -> None:
        """Put the cursor in the field at fault (``name``: name, password, confirm, host,
        port, tls, server_password, or a way in: guest, login, create), its text
        selected, so typing replaces it."""
        widget: tk.Widget
        if name in self.mode_buttons:
            widget = self.mode_buttons[name]
        elif name == "tls":
            widget = self.tls_check
        else:
            widget = {"name": self.name_entry, "password": self.password_entry,
                      "confirm": self.confirm_entry, "host": self.host_entry,
                      "port": self.port_entry,
                      "server_password": self.server_password_entry}.get(name, self.name_entry)
        widget.focus_set()
        if isinstance(widget, ttk.Entry):
            widget.icursor("end")
            if select:
                widget.selection_range(0, "end")

    def _build_trust(self, form: ttk.Frame, on_trust: Callable[[], None],
                     on_distrust: Callable[[], None]) -> None:
        """The certificate panel (hidden until :meth:`show_trust`)."""
        panel = self.trust_panel = ttk.Frame(form, style="Trust.TFrame", padding=(10, 6))
        panel.grid(row=11, column=0, columnspan=3, sticky="ew", pady=(2, 0))
        self.trust_title = ttk.Label(panel, style="TrustHead.TLabel")
        self.trust_title.grid(row=0, column=0, columnspan=2, sticky="w", pady=(0, 4))
        # The fingerprints, to compare with what the operator says: "Saved" and "Now" for a
        # changed certificate, only "SHA-256" for a new one.
        self.print_vars = (tk.StringVar(), tk.StringVar())
        self.print_names = (tk.StringVar(), tk.StringVar())
        self.print_rows: list[tuple[ttk.Label, ttk.Label]] = []
        for i, (name_var, print_var) in enumerate(zip(self.print_names, self.print_vars)):
            name = ttk.Label(panel, textvariable=name_var, style="Trust.TLabel")
            name.grid(row=1 + i, column=0, sticky="nw", padx=(0, 10), pady=(0, 2))
            value = ttk.Label(panel, textvariable=print_var, style="Print.TLabel",
                              justify="left")
            value.grid(row=1 + i, column=1, sticky="w", pady=(0, 2))
            self.print_rows.append((name, value))
        self.trust_hint = ttk.Label(panel, style="Trust.TLabel", wraplength=self.WRAP + 60,
                                    justify="left")
        self.trust_hint.grid(row=3, column=0, columnspan=2, sticky="w", pady=(4, 6))
        buttons = ttk.Frame(panel, style="Trust.TFrame")
        buttons.grid(row=4, column=0, columnspan=2, sticky="w")
        self.trust_button = ttk.Button(buttons, command=on_trust, underline=0)
        self.trust_button.pack(side="left")
        self.distrust_button = ttk.Button(buttons, text="Cancel", command=on_distrust)
        self.distrust_button.pack(side="left", padx=(8, 0))
        for button in (self.trust_button, self.distrust_button):
            _enter_invokes(button)
        self.trust_panel.grid_remove()
        self._trust_up = False
        self._trust_changed = False

    def _panel_key(self, button: ttk.Button, changed: bool | None = None) -> None:
        if self.trust_showing() and changed in (None, self._trust_changed):
            button.invoke()

    def _tls_touched(self) -> None:
        self.tls_touched = True

    def _toggle_tls(self) -> None:
        if self.frame.winfo_ismapped():
            self.tls_check.invoke()  # counts as the user's choice, like a click

    def _port_changed(self) -> None:
        """The port field changed: follow it with "Use TLS" (6697 on, others off), unless
        the user has set the box; and a certificate question about the old port is moot."""
        port = self.port_var.get().strip()
        was, self._last_port = self._last_port, port
        self.hide_trust()
        if self.tls_touched or (port == self.TLS_PORT) == (was == self.TLS_PORT):
            return
        self.tls_var.set(port == self.TLS_PORT)

    # --- the certificate question -------------------------------------------------------

    @staticmethod
    def _grouped(fingerprint: str) -> str:
        """The 32 bytes of a fingerprint on two lines of 16, easier to compare by eye."""
        parts = fingerprint.split(":")
        return "\n".join(":".join(parts[i:i + 16]) for i in range(0, len(parts), 16))

    def show_trust(self, fingerprint: str, pinned: str = "") -> None:
        """Ask about a certificate: untrusted (no ``pinned``) or changed from ``pinned``.

        The trust button never takes the focus, for a first use as for a changed
        certificate: an Enter typed ahead while connecting must not trust a certificate
        nobody has looked at.  Enter in the form still means Join Chat (which asks again).
        """
        if pinned:
            self.trust_title.configure(text="The certificate has changed (SHA-256 fingerprints)")
            rows = [("Saved", pinned), ("Now", fingerprint)]
            self.trust_hint.configure(text="Ask the server's operator. Accept the new "
                                           "certificate only if they confirm the change and "
                                           "the new fingerprint.")
            self.trust_button.configure(text="Accept the New Certificate")
        else:
            self.trust_title.configure(text="Trust this certificate?")
            rows = [("SHA-256", fingerprint)]
            self.trust_hint.configure(text="If you know this server (one on your own network "
                                           "with its own certificate, say), trust it only if "
                                           "this fingerprint matches the one its operator "
                                           "gave you. You will not be asked again for it.")
            self.trust_button.configure(text="Trust and Join")
        for i, (name, value) in enumerate(self.print_rows):
            if i < len(rows):
                self.print_names[i].set(rows[i][0])
                self.print_vars[i].set(self._grouped(rows[i][1]))
                name.grid()
                value.grid()
            else:
                self.print_names[i].set("")
                self.print_vars[i].set("")
                name.grid_remove()
                value.grid_remove()
        self.trust_panel.grid()
        self._trust_up = True
        self._trust_changed = bool(pinned)
        self._fit()

    def _fit(self) -> None:
        """Make the window tall enough for the whole form (the certificate panel under a
        login form does not fit the usual size), never taller than the screen."""
        top = self.frame.winfo_toplevel()
        top.update_idletasks()
        need = self.frame.winfo_reqheight()
        have = top.winfo_height()
        if have > 1 and need > have:
            height = min(need, top.winfo_screenheight() - 80)
            top.geometry(f"{max(top.winfo_width(), self.frame.winfo_reqwidth())}x{height}")

    def hide_trust(self) -> None:
        if getattr(self, "_trust_up", False):  # (the traces fire before the panel exists)
            self.trust_panel.grid_remove()
            self._trust_up = False

    def trust_showing(self) -> bool:
        return self._trust_up

    def shown_fingerprint(self) -> str:
        """The fingerprints shown, one ``name: AB:CD:...`` per line."""
        return "\n".join(f"{n.get()}: {v.get().replace(chr(10), ':')}"
                         for n, v in zip(self.print_names, self.print_vars) if v.get())

    def show(self) -> None:
        self.frame.pack(fill="both", expand=True)

    def hide(self) -> None:
        self.frame.pack_forget()

    def set_name(self, name: str) -> None:
        self.name_var.set(name)

    def focus_host(self) -> None:
        self.host_entry.focus_set()

    def focus_port(self) -> None:
        self.port_entry.focus_set()

    def use_tls(self) -> bool:
        return bool(self.tls_var.get())

    def set_port(self, port: int) -> None:
        self.port_var.set(str(port))

    def values(self) -> tuple[str, str, str, str]:
        """Name, host, port and the server's password as typed (text made safe, spaces
        trimmed but in the password)."""
        return (clean_text(self.name_var.get()).strip(), clean_text(self.host_var.get()).strip(),
                self.port_var.get().strip(), clean_text(self.server_password_var.get()))

    def show_error(self, text: str) -> None:
        self.status_var.set("")
        self.message_var.set(text)
        self.message_label.configure(textvariable=self.message_var, style="Error.TLabel")

    def show_status(self, text: str) -> None:
        self.message_var.set("")
        self.status_var.set(text)
        self.message_label.configure(textvariable=self.status_var, style="Status.TLabel")

    def set_busy(self, busy: bool) -> None:
        self._busy = busy
        self.join_button.configure(text="Cancel" if busy else self._button_text())

    def focus_name(self, select: bool = False) -> None:
        self.name_entry.focus_set()
        self.name_entry.icursor("end")
        if select:
            self.name_entry.selection_range(0, "end")


MemberMenu: TypeAlias = "Callable[[str], list[tuple[str, Callable[[], None]] | None]]"


class TransferRow:
    """One file going up or down: what, how far (a bar and words), and Cancel."""

    def __init__(self, master: tk.Misc, text: str, on_cancel: Callable[[], None]) -> None:
        self.frame = ttk.Frame(master)
        self.label_var = tk.StringVar(value=text)
        self.cancel_button = ttk.Button(self.frame, text="Cancel", command=on_cancel, width=8)
        self.cancel_button.pack(side="right")
        self.bar = ttk.Progressbar(self.frame, mode="determinate", maximum=1000, length=180)
        self.bar.pack(side="right", padx=(6, 6))
        ttk.Label(self.frame, textvariable=self.label_var, anchor="w").pack(
            side="left", fill="x", expand=True)

    def show(self, done: int, total: int | None, text: str) -> None:
        if total:
            self.bar.configure(mode="determinate")
            self.bar["value"] = min(1000, 1000 * done // max(total, 1))
        self.label_var.set(text)


def small_image(master: tk.Misc, data: bytes, box: tuple[int, int]) -> tk.PhotoImage | None:
    """A PNG or GIF in ``data`` made to fit ``box`` (width, height); None if Tk can't read
    it (a damaged file, or a format this Tk lacks)."""
    import base64
    import math

    try:
        image = tk.PhotoImage(master=master, data=base64.b64encode(data).decode("ascii"))
    except tk.TclError:
        return None
    factor = max(1, math.ceil(max(image.width() / box[0], image.height() / box[1])))
    return image.subsample(factor) if factor > 1 else image


def show_bans(master: tk.Misc, room: str, bans: Iterable[tuple[str, str]],
              on_remove: Callable[[str], bool]) -> tk.Toplevel:
    """A room's bans, each with who set it and Remove (for a room operator)."""
    top = tk.Toplevel(master)
    top.title(f"Bans of {room}")
    top.transient(master.winfo_toplevel())
    frame = ttk.Frame(top, padding=12)
    frame.pack(fill="both", expand=True)
    entries = list(bans)
    if not entries:
        ttk.Label(frame, text=f"Nobody is banned from {room}.").grid(row=0, column=0)
    for i, (mask, by) in enumerate(entries):
        ttk.Label(frame, text=mask, style="Side.TLabel").grid(row=i, column=0, sticky="w",
                                                              padx=(0, 12), pady=2)
        ttk.Label(frame, text=f"set by {by.split('!', 1)[0]}" if by else "",
                  style="Sub.TLabel").grid(row=i, column=1, sticky="w", padx=(0, 12))
        button = ttk.Button(frame, text="Remove")

        def remove(mask: str = mask, button: ttk.Button = button) -> None:
            if on_remove(mask):
                button.configure(text="Removed", state="disabled")

        button.configure(command=remove)
        button.grid(row=i, column=2, pady=2)
    ttk.Button(frame, text="Close", command=top.destroy).grid(
        row=max(1, len(entries)), column=2, sticky="e", pady=(10, 0))
    top.bind("<Escape>", lambda e: top.destroy())
    return top


def ask_string(master: tk.Misc, title: str, text: str, secret: bool = False) -> str | None:
    """A small modal question with a text field (dots for a ``secret``); None: cancelled."""
    from tkinter import simpledialog

    answer = simpledialog.askstring(title, text, parent=master, show="•" if secret else "")
    return None if answer is None else str(answer)


def ask_open_file(master: tk.Misc, title: str) -> str:
    """The system's file chooser; the path picked, or "" for none."""
    from tkinter import filedialog

    return str(filedialog.askopenfilename(parent=master, title=title,
                                          initialdir=str(Path.home())) or "")


def ask_save_file(master: tk.Misc, title: str, name: str) -> str:
    from tkinter import filedialog

    downloads = Path.home() / "Downloads"
    where = downloads if downloads.is_dir() else Path.home()
    return str(filedialog.asksaveasfilename(parent=master, title=title, initialfile=name,
                                            initialdir=str(where)) or "")


class MenuBar:
    """The window's menus: Chat (join, leave, find, log out, exit) and Help (keys, commands).

    ``actions`` maps join, part, find, leave, exit, keys and commands to what they do.
    """

    def __init__(self, master: Toplevel, actions: dict[str, Callable[[], None]]) -> None:
        self.bar = tk.Menu(master, tearoff=False)
        chat = tk.Menu(self.bar, tearoff=False)
        chat.add_command(label="Join Room…", accelerator="Ctrl+K", command=actions["join"])
        chat.add_command(label="Leave Room", accelerator="Ctrl+W", command=actions["part"])
        chat.add_command(label="Find…", accelerator="Ctrl+F", command=actions["find"])
        chat.add_separator()
        chat.add_command(label="Leave Chat", command=actions["leave"])
        chat.add_command(label="Exit Program", command=actions["exit"])
        self.chat = chat
        help_menu = tk.Menu(self.bar, tearoff=False)
        help_menu.add_command(label="Keyboard Shortcuts", command=actions["keys"])
        help_menu.add_command(label="Commands", command=actions["commands"])
        self.help = help_menu
        self.bar.add_cascade(label="Chat", menu=chat, underline=0)
        self.bar.add_cascade(label="Help", menu=help_menu, underline=0)
        master.configure(menu=self.bar)
        self.set_chat(False)

    def set_chat(self, on: bool) -> None:
        """The Chat menu's entries work only in the chat view."""
        for i in (0, 1, 2, 4):
            self.chat.entryconfigure(i, state="normal" if on else "disabled")


def show_help(master: tk.Misc, title: str, rows: Iterable[tuple[str, str]]) -> tk.Toplevel:
    """A small window listing ``rows`` (what to press or type, what it does)."""
    top = tk.Toplevel(master)
    top.title(title)
    top.transient(master.winfo_toplevel())
    frame = ttk.Frame(top, padding=12)
    frame.pack(fill="both", expand=True)
    for i, (key, what) in enumerate(rows):
        ttk.Label(frame, text=key, style="Side.TLabel").grid(row=i, column=0, sticky="nw",
                                                             padx=(0, 16), pady=2)
        ttk.Label(frame, text=what, wraplength=420, justify="left").grid(
            row=i, column=1, sticky="w", pady=2)
    close = ttk.Button(frame, text="Close", command=top.destroy)
    close.grid(row=frame.grid_size()[1], column=1, sticky="e", pady=(10, 0))
    top.bind("<Escape>", lambda e: top.destroy())
    close.focus_set()
    return top


class ChatView:
    """The list of conversations, the topic, one scrollback per conversation, who is here
    with the count, the message field and the buttons.

    Each conversation (a room or a private talk) has its own :class:`~chatroom.logview.
    LogView`, made by :meth:`add_pane` under a key the app chooses and shown by
    :meth:`show_pane`; :meth:`add`, :meth:`flush` and the rest act on the one in view
    unless given a key.  The banners (connection, registered name) sit above the topic,
    so the side panel's buttons never move when one appears.
    """

    def __init__(self, master: tk.Misc, scrollback: int, on_send: Callable[[str], bool],
                 on_leave: Callable[[], None], on_exit: Callable[[], None],
                 on_refresh: Callable[[], None],
                 on_top: Callable[[], None] = lambda: None,
                 on_log_in: Callable[[], None] = lambda: None,
                 on_back: Callable[[], None] | None = None,
                 on_select: Callable[[int], None] = lambda i: None,
                 on_join_room: Callable[[], None] = lambda: None,
                 on_part: Callable[[], None] = lambda: None,
                 on_link: Callable[[str], None] = lambda url: None,
                 on_emoji: Callable[[], None] = lambda: None,
                 member_menu: MemberMenu = lambda nick: [],
                 on_send_file: Callable[[], None] = lambda: None,
                 on_save: Callable[[str], None] = lambda url: None) -> None:
        self.scrollback = scrollback
        self.on_top = on_top
        self.on_link = on_link
        self.on_save = on_save
        self.on_select = on_select
        self.frame = ttk.Frame(master, padding=8)
        f = self.frame
        f.columnconfigure(1, weight=1)
        f.rowconfigure(3, weight=1)
        self.fonts = log_fonts()

        # Row 0: the connection banner; row 1: the registered-name banner.  Above the
        # panels, so that when one appears the panels shrink from the top and the buttons
        # at their bottom (Refresh) stay where the pointer is.
        self.banner = ttk.Frame(f, style="Banner.TFrame")
        self.conn_var = tk.StringVar()
        self.back_button = ttk.Button(self.banner, text="Back to Login",
                                      command=on_back or on_leave)
        self.back_button.pack(side="right", padx=4, pady=3)
        self.conn_label = ttk.Label(self.banner, textvariable=self.conn_var,
                                    style="Banner.TLabel", anchor="w", justify="left")
        self.conn_label.pack(side="left", fill="x", expand=True)
        self.conn_label.bind("<Configure>", lambda e: self.conn_label.configure(
            wraplength=max(100, e.width - 16)))
        self.banner.grid(row=0, column=0, columnspan=3, sticky="ew", pady=(0, 6))
        self.banner.grid_remove()

        # "bob is registered to someone else: you'll be renamed in 27 s" and Log In (Alt+L).
        self.claim = ttk.Frame(f, style="Claim.TFrame")
        self.claim_var = tk.StringVar()
        self.claim_button = ttk.Button(self.claim, text="Log In", underline=0,
                                       command=on_log_in)
        self.claim_button.pack(side="right", padx=4, pady=3)
        _enter_invokes(self.claim_button)
        self.claim_label = ttk.Label(self.claim, textvariable=self.claim_var,
                                     style="Claim.TLabel", anchor="w", justify="left")
        self.claim_label.pack(side="left", fill="x", expand=True)
        self.claim_label.bind("<Configure>", lambda e: self.claim_label.configure(
            wraplength=max(100, e.width - 16)))
        self.claim.grid(row=1, column=0, columnspan=3, sticky="ew", pady=(0, 6))
        self.claim.grid_remove()
        self.frame.winfo_toplevel().bind("<Alt-l>", lambda e: self._claim_key(), add="+")

        # topic_var holds the whole topic; the banner shows at most TOPIC_LINES of it, so a
        # long topic cannot push the log off a small window.  Hover shows the rest in a tip,
        # a click unfolds it in place (and folds it again).
        self.topic_var = tk.StringVar(value="No topic is set")
        self.topic_shown = tk.StringVar(value="No topic is set")
        self.topic_expanded = False
        self.topic_clamped = False
        self.topic_tip: tk.Toplevel | None = None
        self.topic_label = ttk.Label(f, textvariable=self.topic_shown, style="Topic.TLabel",
                                     anchor="w", justify="left")
        self.topic_label.grid(row=2, column=1, columnspan=2, sticky="ew", pady=(0, 6))
        self.topic_label.bind("<Configure>", lambda e: self._fit_topic(e.width))
        self.topic_label.bind("<Enter>", lambda e: self._show_topic_tip())
        self.topic_label.bind("<Leave>", lambda e: self._hide_topic_tip())
        self.topic_label.bind("<Button-1>", lambda e: self.toggle_topic())

        # The conversations: rooms and private talks, with what is unread in each.
        convs = ttk.Frame(f, padding=(0, 0, 8, 0))
        convs.grid(row=2, column=0, rowspan=2, sticky="ns")
        convs.rowconfigure(1, weight=1)
        ttk.Label(convs, text="Conversations", style="Side.TLabel").grid(
            row=0, column=0, columnspan=2, sticky="w", pady=(0, 4))
        self.convlist = tk.Listbox(convs, width=16, activestyle="none",
                                   exportselection=False, background="#f6f8fa",
                                   foreground="#1f2328", selectbackground="#1c4fa0",
                                   selectforeground="#ffffff", relief="flat", borderwidth=1,
                                   highlightthickness=1, highlightbackground="#c8ccd2",
                                   highlightcolor="#1c4fa0", font=self.fonts["text"])
        self.convlist.grid(row=1, column=0, columnspan=2, sticky="ns")
        self.convlist.bind("<<ListboxSelect>>", lambda e: self._conv_selected())
        self.join_room_button = ttk.Button(convs, text="Join Room…", command=on_join_room)
        self.join_room_button.grid(row=2, column=0, sticky="ew", pady=(6, 0))
        self.part_button = ttk.Button(convs, text="Leave", command=on_part, width=7)
        self.part_button.grid(row=2, column=1, sticky="ew", padx=(4, 0), pady=(6, 0))

        # One LogView per conversation, in one cell; the one in view is gridded.
        self.logs = ttk.Frame(f)
        self.logs.grid(row=3, column=1, sticky="nsew")
        self.logs.rowconfigure(0, weight=1)
        self.logs.columnconfigure(0, weight=1)
        self.panes: dict[str, LogView] = {}
        self.current_key = ""
        self.add_pane("")  # shown while no conversation is (before the first join)

        side = ttk.Frame(f, padding=(8, 0, 0, 0))
        side.grid(row=3, column=2, sticky="ns")
        side.rowconfigure(1, weight=1)
        self.room_var = tk.StringVar(value="In the room")
        ttk.Label(side, textvariable=self.room_var, style="Side.TLabel").grid(
            row=0, column=0, columnspan=2, sticky="w", pady=(0, 4))
        self.listbox = tk.Listbox(side, width=18, activestyle="none", exportselection=False,
                                  background="#ffffff", foreground="#1f2328",
                                  selectbackground="#dbe6f6", selectforeground="#1f2328",
                                  relief="flat", borderwidth=1, highlightthickness=1,
                                  highlightbackground="#c8ccd2", highlightcolor="#c8ccd2",
                                  font=self.fonts["text"])
        self.listbox.grid(row=1, column=0, sticky="ns")
        # Right click (or the menu key) on a member: what can be done with them.
        self.member_menu = member_menu
        self.listbox.bind("<Button-3>", self._member_clicked)
        for seq in ("<KeyPress-Menu>", "<KeyPress-App>", "<Shift-F10>"):  # X11, Windows
            try:
                self.listbox.bind(seq, lambda e: self._member_key())
            except tk.TclError:
                pass  # no such key on this system
        bar = ttk.Scrollbar(side, orient="vertical", command=self.listbox.yview)
        bar.grid(row=1, column=1, sticky="ns")
        self.listbox.configure(yscrollcommand=bar.set)
        countrow = ttk.Frame(side)
        countrow.grid(row=2, column=0, columnspan=2, sticky="ew", pady=(6, 0))
        self.count_var = tk.StringVar(value="0 online")
        self.count_label = ttk.Label(countrow, textvariable=self.count_var, style="Count.TLabel")
        self.count_label.pack(side="left", padx=(0, 8))
        self.refresh_button = ttk.Button(countrow, text="Refresh", command=on_refresh, width=8)
        self.refresh_button.pack(side="right")

        # Files going up or down: a row each, with progress and Cancel.
        self.transfers = ttk.Frame(f)
        self.transfers.grid(row=4, column=0, columnspan=3, sticky="ew")
        self.transfer_rows: dict[str, TransferRow] = {}

        # Ctrl+F: find in the conversation in view.
        self.findbar = ttk.Frame(f)
        self.findbar.grid(row=5, column=0, columnspan=3, sticky="ew", pady=(6, 0))
        ttk.Label(self.findbar, text="Find:").pack(side="left")
        self.find_var = tk.StringVar()
        self.find_entry = ttk.Entry(self.findbar, textvariable=self.find_var, width=28)
        self.find_entry.pack(side="left", padx=(6, 6))
        self.find_status = tk.StringVar()
        ttk.Button(self.findbar, text="Older", width=7,
                   command=lambda: self._find(False)).pack(side="left")
        ttk.Button(self.findbar, text="Newer", width=7,
                   command=lambda: self._find(True)).pack(side="left", padx=(4, 0))
        ttk.Label(self.findbar, textvariable=self.find_status, style="Sub.TLabel").pack(
            side="left", padx=(8, 0))
        ttk.Button(self.findbar, text="Close", width=7,
                   command=self.close_find).pack(side="right")
        self.find_entry.bind("<Return>", lambda e: self._find(False))
        self.find_entry.bind("<KP_Enter>", lambda e: self._find(False))
        self.find_entry.bind("<Shift-Return>", lambda e: self._find(True))
        self.find_entry.bind("<Escape>", lambda e: self.close_find())
        self.find_var.trace_add("write", lambda *a: self._find_changed())
        self.findbar.grid_remove()
        top = self.frame.winfo_toplevel()
        top.bind("<Control-f>", lambda e: self._find_key(), add="+")
        top.bind("<Control-F>", lambda e: self._find_key(), add="+")
        self._on_emoji = on_emoji

        inrow = ttk.Frame(f)
        inrow.grid(row=6, column=0, columnspan=3, sticky="ew", pady=(8, 0))
        inrow.columnconfigure(0, weight=1)
        # The message field: one line that grows (to MESSAGE_LINES) as lines are added
        # with Shift+Enter or pasted, so what is sent is what is seen.
        self.entry = MessageField(inrow, self.fonts["text"], self.MESSAGE_LINES)
        self.entry.grid(row=0, column=0, sticky="ew")

        def send(_: object = None) -> str:
            # Accepted text leaves the field; refused text stays, selected, so the user can
            # correct it or just type over it.
            text = self.entry.get()
            if on_send(text):
                self._remember_sent(text)
                try:
                    self.entry.set("")
                except tk.TclError:  # /quit closed the window
                    pass
            else:
                self.select_entry()
            return "break"

        self.entry.bind("<Return>", send)
        self.entry.bind("<KP_Enter>", send)
        self.entry.bind("<Shift-Return>", lambda e: self.entry.new_line())
        self.entry.bind("<Shift-KP_Enter>", lambda e: self.entry.new_line())
        # Page Up / Page Down in the message field scroll the log (at the top: older lines).
        self.entry.bind("<Prior>", lambda e: self.pane().page(-1))
        self.entry.bind("<Next>", lambda e: self.pane().page(1))
        # Ctrl+A selects the whole line (as in other apps, not Emacs' start of line); Tab
        # completes a member's name instead of moving the focus to Send.
        self.entry.bind("<Control-a>", lambda e: self._select_all())
        self.entry.bind("<Control-A>", lambda e: self._select_all())
        self.entry.bind("<Tab>", lambda e: self._complete())
        self.entry.bind("<Key>", self._forget_completion, add="+")
        self._completion: tuple[int, list[str], int] | None = None
        # Up / Down step through the lines sent before, as in a shell; stepping down past
        # the newest gives back what was being typed (the draft).
        # In a message of several lines they move between its lines first.
        for key, step in (("<Up>", -1), ("<Down>", 1), ("<KP_Up>", -1), ("<KP_Down>", 1)):
            self.entry.bind(key, self._arrow(step))
        self.sent: deque[str] = deque(maxlen=self.HISTORY)
        self._recalling: int | None = None  # index into sent while stepping, else None
        self._draft = ""
        # A small emoji picker: typing them is hard on most keyboards.
        self.emoji_button = ttk.Button(inrow, text="☺", width=3, command=on_emoji)
        self.emoji_button.grid(row=0, column=1, padx=(6, 0), sticky="n")
        self.file_button = ttk.Button(inrow, text="Send File…", command=on_send_file)
        self.file_button.grid(row=0, column=2, padx=(6, 0), sticky="n")
        self.send_button = ttk.Button(inrow, text="Send", command=send)
        self.send_button.grid(row=0, column=3, padx=(6, 0), sticky="n")

        buttons = ttk.Frame(f)
        buttons.grid(row=7, column=0, columnspan=3, sticky="ew", pady=(8, 0))
        # The buttons are packed first: when the window is narrow the labels are cut, never
        # the buttons.
        self.exit_button = ttk.Button(buttons, text="Exit Program", command=on_exit)
        self.exit_button.pack(side="right")
        self.leave_button = ttk.Button(buttons, text="Leave Chat", command=on_leave)
        self.leave_button.pack(side="right", padx=(0, 6))
        self.hint_var = tk.StringVar(value=self.HINT)
        self.hint_label = ttk.Label(buttons, textvariable=self.hint_var, style="Sub.TLabel")
        self.hint_label.pack(side="left")
        self.security_var = tk.StringVar()  # "Not encrypted" or "Encrypted (TLSv1.3)"
        self.security_label = ttk.Label(buttons, textvariable=self.security_var,
                                        style="Insecure.TLabel")
        self.security_label.pack(side="left", padx=(16, 0))

    def _arrow(self, step: int) -> Callable[[tk.Event[tk.Misc]], str | None]:
        def arrow(event: tk.Event[tk.Misc]) -> str | None:
            if self.entry.on_edge(step):
                return self._recall(step)
            return None  # Text's own binding moves the cursor a line
        return arrow

    HINT = "Type /help for commands"
    MESSAGE_LINES = 5  # the most lines the message field grows to (then it scrolls)
    HISTORY = 100  # sent lines Up can bring back
    TOPIC_LINES = 2  # the most lines the topic banner takes while folded

    def show(self) -> None:
        self.frame.pack(fill="both", expand=True)

    def hide(self) -> None:
        self.frame.pack_forget()

    def set_account(self, account: str | None) -> None:
        """Who we are logged in as (None: a guest), in the bar under the message field;
        logged in, the leave button logs out."""
        self.hint_var.set(f"Logged in as {account}" if account else self.HINT)
        self.leave_button.configure(text="Log Out" if account else "Leave Chat")

    # --- the registered-name banner -------------------------------------------------------

    def set_claim(self, text: str | None) -> None:
        """Show ``text`` in the amber banner with Log In; None takes it down."""
        if text is None:
            self.claim.grid_remove()
            return
        if self.claim_var.get() != text:
            self.claim_var.set(text)
        if not self.claim.winfo_ismapped():
            self.claim.grid()

    def claim_showing(self) -> bool:
        return bool(self.claim.winfo_manager())

    def _claim_key(self) -> None:
        if self.frame.winfo_ismapped() and self.claim.winfo_manager():
            self.claim_button.invoke()

    # --- the message field ------------------------------------------------------------

    def focus_entry(self) -> None:
        self.entry.focus_set()

    def select_entry(self) -> None:
        """Select all of the message field: typing replaces it, arrows keep it."""
        try:
            self.entry.selection_range(0, "end")
            self.entry.icursor("end")
        except tk.TclError:
            pass

    def insert_text(self, text: str) -> None:
        """Put ``text`` into the message field at the cursor (the emoji picker)."""
        try:
            if self.entry.selection_present():
                self.entry.delete("sel.first", "sel.last")
        except tk.TclError:
            pass
        self.entry.insert("insert", text)
        self.entry.focus_set()

    def restore_entry(self, text: str) -> None:
        """Put refused ``text`` back in the message field (if the user has not typed since)."""
        if not self.entry.get():
            self.entry.set(text)
            self.select_entry()

    # --- conversations and their logs ---------------------------------------------------

    def add_pane(self, key: str) -> LogView:
        """The log of conversation ``key``, made if new (not shown: :meth:`show_pane`)."""
        pane = self.panes.get(key)
        if pane is None:
            pane = LogView(self.logs, self.fonts, self.scrollback, self._pane_top,
                           self.on_link, self.on_save)
            self.panes[key] = pane
        return pane

    def remove_pane(self, key: str) -> None:
        pane = self.panes.pop(key, None) if key else None
        if pane is not None:
            if key == self.current_key:
                self.show_pane("")
            pane.frame.destroy()

    def show_pane(self, key: str) -> LogView:
        """Show conversation ``key``'s log in place of the one in view."""
        pane = self.add_pane(key)
        old = self.panes.get(self.current_key)
        if old is not None and old is not pane:
            old.frame.grid_remove()
        self.current_key = key
        pane.frame.grid(row=0, column=0, sticky="nsew")
        if self.find_showing():
            self._find_changed()
        return pane

    def pane(self, key: str | None = None) -> LogView:
        """Conversation ``key``'s log (the one in view by default)."""
        return self.panes[self.current_key if key is None else key]

    def _pane_top(self) -> None:
        self.on_top()

    def set_conversations(self, entries: list[tuple[str, str]], current: int | None) -> None:
        """The list of conversations: (label, kind) each, kind "" (nothing new),
        "unread", "mention" or "off" (a room we are not in); ``current`` is selected."""
        lb = self.convlist
        if [lb.get(i) for i in range(lb.size())] != [label for label, _ in entries]:
            lb.delete(0, "end")
            if entries:
                lb.insert("end", *(label for label, _ in entries))
        colours = {"": ("#1f2328", "#f6f8fa"), "unread": ("#0b3d91", "#f6f8fa"),
                   "mention": ("#ffffff", "#c0362c"), "off": ("#8a8f98", "#f6f8fa")}
        for i, (_, kind) in enumerate(entries):
            fg, bg = colours.get(kind, colours[""])
            lb.itemconfigure(i, foreground=fg, background=bg)
        lb.selection_clear(0, "end")
        if current is not None and 0 <= current < len(entries):
            lb.selection_set(current)
            lb.see(current)

    def _conv_selected(self) -> None:
        chosen = self.convlist.curselection()  # type: ignore[no-untyped-call]
        if chosen:
            self.on_select(int(chosen[0]))

    def _member_clicked(self, event: tk.Event[tk.Misc]) -> str:
        index = self.listbox.nearest(event.y)  # type: ignore[no-untyped-call]
        if index < 0 or index >= self.listbox.size():
            return "break"
        self.listbox.selection_clear(0, "end")
        self.listbox.selection_set(index)
        self.popup_member(index, event.x_root, event.y_root)
        return "break"

    def _member_key(self) -> str:
        chosen = self.listbox.curselection()  # type: ignore[no-untyped-call]
        if chosen:
            index = int(chosen[0])
            box = self.listbox.bbox(index)
            x = self.listbox.winfo_rootx() + (box[0] if box else 0)
            y = self.listbox.winfo_rooty() + (box[1] + box[3] if box else 0)
            self.popup_member(index, x, y)
        return "break"

    def popup_member(self, index: int, x: int, y: int) -> tk.Menu | None:
        """The menu of member ``index`` at screen point (x, y); None if it offers nothing."""
        nick = str(self.listbox.get(index)).lstrip("~&@%+")
        items = self.member_menu(nick)
        if not items:
            return None
        menu = tk.Menu(self.listbox, tearoff=False)
        for item in items:
            if item is None:
                menu.add_separator()
            else:
                menu.add_command(label=item[0], command=item[1])
        self.last_menu = menu
        try:
            menu.tk_popup(x, y)
        finally:
            menu.grab_release()
        return menu

    def set_part_label(self, text: str, enabled: bool = True) -> None:
        """The button under the list: "Leave" for a room, "Close" for a private talk."""
        self.part_button.configure(text=text, state="normal" if enabled else "disabled")

    def set_side(self, heading: str, refresh: bool) -> None:
        """The side panel's heading ("Online in #chat"), and whether Refresh applies."""
        self.room_var.set(heading)
        self.refresh_button.configure(state="normal" if refresh else "disabled")

    # --- transfers --------------------------------------------------------------------

    def add_transfer(self, key: str, text: str, on_cancel: Callable[[], None]
                     ) -> TransferRow:
        row = TransferRow(self.transfers, text, on_cancel)
        row.frame.pack(fill="x", pady=(6, 0))
        self.transfer_rows[key] = row
        return row

    def remove_transfer(self, key: str) -> None:
        row = self.transfer_rows.pop(key, None)
        if row is not None:
            row.frame.destroy()
        if not self.transfer_rows:  # give the space back
            self.transfers.configure(height=1)

    # --- the log in view (delegates) ----------------------------------------------------

    @property
    def text(self) -> tk.Text:
        return self.pane().text

    @property
    def follow(self) -> bool:
        return self.pane().follow

    @property
    def trimmed(self) -> bool:
        return self.pane().trimmed

    def at_bottom(self) -> bool:
        return self.pane().at_bottom()

    def at_top(self) -> bool:
        return self.pane().at_top()

    def reset(self, room: str) -> None:
        """Back to one empty log (the app adds its conversations again)."""
        for key in [k for k in self.panes if k]:
            self.remove_pane(key)
        self.pane("").clear()
        self.show_pane("")
        self.set_conversations([], None)
        self.room_var.set(f"Online in {room}")
        self.set_topic("")
        self.set_members(())
        self.set_connection(None)
        self.set_claim(None)
        self.close_find()
        self.entry.set("")

    def add(self, parts: Parts, line_tags: tuple[str, ...] = (), key: str | None = None
            ) -> None:
        """Queue one line for conversation ``key`` (the one in view by default)."""
        self.pane(key).add(parts, line_tags)

    def add_help(self, rows: Iterable[tuple[str, str]]) -> None:
        for command, what in rows:
            self.add(help_row(command, what))

    def flush(self) -> None:
        """Insert every conversation's queued lines."""
        for pane in self.panes.values():
            pane.flush()

    def prepend(self, rows: list[Row], drop_first: bool = False, key: str | None = None
                ) -> None:
        self.pane(key).prepend(rows, drop_first)

    def line_count(self, key: str | None = None) -> int:
        return self.pane(key).line_count()

    def contents(self, key: str | None = None) -> str:
        return self.pane(key).contents()

    # --- find -----------------------------------------------------------------------

    def find_showing(self) -> bool:
        return bool(self.findbar.winfo_manager())

    def _find_key(self) -> str:
        if self.frame.winfo_ismapped():
            self.open_find()
        return "break"

    def open_find(self) -> None:
        if not self.find_showing():
            self.findbar.grid()
        self.find_entry.focus_set()
        self.find_entry.selection_range(0, "end")

    def close_find(self) -> None:
        for pane in self.panes.values():
            pane.end_find()
        self.find_status.set("")
        if self.find_showing():
            self.findbar.grid_remove()
            self.entry.focus_set()

    def _find_changed(self) -> None:
        self.pane().end_find()
        self._find(False)

    def _find(self, newer: bool) -> str:
        """Enter: the next older match; Shift+Enter: the next newer one."""
        pattern = self.find_var.get()
        which, total = self.pane().find(pattern, forward=newer)
        if not pattern:
            self.find_status.set("")
        elif total:
            self.find_status.set(f"{which} of {total}")
        else:
            self.find_status.set("Not found")
        return "break"

    def _select_all(self) -> str:
        self.entry.selection_range(0, "end")
        self.entry.icursor("end")
        return "break"

    def _remember_sent(self, text: str) -> None:
        # Like a shell's ignoredups: sending one line again does not fill the history.
        if text.strip() and (not self.sent or self.sent[-1] != text):
            self.sent.append(text)
        self._recalling = None
        self._draft = ""

    def _recall(self, step: int) -> str:
        """Up (``step`` -1): an older sent line; Down (+1): a newer one, then the draft."""
        if not self.sent:
            return "break"
        if self._recalling is None:
            if step > 0:
                return "break"  # not stepping: nothing newer than the draft
            self._draft = self.entry.get()
            i = len(self.sent) - 1
        else:
            i = self._recalling + step
        if i >= len(self.sent):
            self._recalling = None
            self.entry.set(self._draft)
        else:
            self._recalling = max(0, i)
            self.entry.set(self.sent[self._recalling])
        self.entry.selection_clear()
        self.entry.icursor("end")
        return "break"

    def _forget_completion(self, event: tk.Event) -> None:
        if event.keysym != "Tab":
            self._completion = None

    def _complete(self) -> str:
        """Tab: complete the word before the cursor with a member's name; Tab again cycles
        through the other matches.  A name at the start of the line gets ": "."""
        text = self.entry.get()
        cursor = self.entry.index("insert")
        if self._completion is None:
            start = text.rfind(" ", 0, cursor) + 1
            word = text[start:cursor].lower()
            names = [n.lstrip("@+~&%") for n in self.listbox.get(0, "end")]
            matches = sorted({n for n in names if word and n.lower().startswith(word)},
                             key=str.lower)
            if not matches:
                return "break"
            self._completion = (start, matches, 0)
        else:
            start, matches, i = self._completion
            self._completion = (start, matches, (i + 1) % len(matches))
        start, matches, i = self._completion
        suffix = ": " if start == 0 else " "
        rest = text[cursor:]
        new = text[:start] + matches[i] + suffix
        self.entry.set(new + rest)
        self.entry.icursor(len(new))
        return "break"

    def set_members(self, members: Iterable[str],
                    away: Callable[[str], bool] = lambda name: False) -> None:
        """The room's members; those ``away`` says are away are greyed."""
        names = list(members)
        self.listbox.delete(0, "end")
        if names:
            self.listbox.insert("end", *names)
        for i, name in enumerate(names):
            if away(name):
                self.listbox.itemconfigure(i, foreground="#9aa0a6")
        self.count_var.set(f"{len(names)} online")
        self.count_label.configure(style="Count.TLabel")

    def set_security(self, text: str, secure: bool) -> None:
        """The quiet line under the log that says whether the connection is encrypted."""
        self.security_var.set(text)
        self.security_label.configure(style="Secure.TLabel" if secure else "Insecure.TLabel")

    def set_offline(self, text: str = "offline") -> None:
        """An empty member list, greyed, with ``text`` where the count was."""
        self.set_members(())
        self.count_var.set(text)
        self.count_label.configure(style="Offline.TLabel")

    def set_topic(self, text: str) -> None:
        """Show the topic (formatting stripped); a long one folds to :attr:`TOPIC_LINES`."""
        text = strip_formatting(text)
        self.set_heading(f"Topic: {text}" if text else "No topic is set")

    def set_heading(self, text: str) -> None:
        """What the topic bar says (a room's topic, or what a private conversation is)."""
        self.topic_var.set(text)
        self.topic_expanded = False  # a new topic starts folded, whatever the old one did
        self._hide_topic_tip()
        self._fit_topic()

    def toggle_topic(self) -> None:
        """Unfold a folded topic to its full text, or fold it again."""
        if not self.topic_clamped and not self.topic_expanded:
            return
        self.topic_expanded = not self.topic_expanded
        self._hide_topic_tip()
        self._fit_topic()

    def _topic_font(self) -> tkfont.Font:
        name = ttk.Style(self.topic_label).lookup("Topic.TLabel", "font") or "TkDefaultFont"
        try:
            return tkfont.nametofont(str(name))
        except tk.TclError:  # a font description, not a named font
            return tkfont.Font(root=self.topic_label, font=name)

    def _fit_topic(self, width: int | None = None) -> None:
        if width is None:
            width = self.topic_label.winfo_width()
        wrap = max(100, width - 20)
        full = self.topic_var.get()
        shown = full
        if not self.topic_expanded:
            shown = clamp_lines(full, self._topic_font(), wrap, self.TOPIC_LINES)
        self.topic_clamped = shown != full
        # Set only on change: each change re-lays the label out and comes back here.
        if str(self.topic_label.cget("wraplength")) != str(wrap):
            self.topic_label.configure(wraplength=wrap)
        if self.topic_shown.get() != shown:
            self.topic_shown.set(shown)
        self.topic_label.configure(cursor="hand2" if self.topic_clamped or
                                   self.topic_expanded else "")

    def _show_topic_tip(self) -> None:
        if not self.topic_clamped or self.topic_tip is not None:
            return
        label = self.topic_label
        tip = tk.Toplevel(label)
        tip.wm_overrideredirect(True)
        tk.Label(tip, text=self.topic_var.get(), justify="left", anchor="w",
                 wraplength=max(100, label.winfo_width() - 20), background="#fffbe8",
                 foreground="#3d3300", relief="solid", borderwidth=1, padx=8,
                 pady=5).pack()
        tip.wm_geometry(f"+{label.winfo_rootx()}+{label.winfo_rooty() + label.winfo_height()}")
        self.topic_tip = tip

    def _hide_topic_tip(self) -> None:
        if self.topic_tip is not None:
            try:
                self.topic_tip.destroy()
            except tk.TclError:
                pass
            self.topic_tip = None

    def showing_connection(self, text: str) -> bool:
        """Is the banner up, saying ``text``?"""
        return self.conn_var.get() == text and bool(self.banner.winfo_ismapped())

    def set_connection(self, text: str | None) -> None:
        """Show ``text`` in the red banner (with Back to Login); None takes it down."""
        if text is None:
            self.banner.grid_remove()
        else:
            self.conn_var.set(text)
            self.banner.grid()



def clamp_lines(text: str, font: tkfont.Font, width: int, lines: int) -> str:
    """``text`` cut to what fits in ``lines`` lines of ``width`` pixels, with "…" at the cut.

    Wraps as a Tk label with that wraplength does (at spaces, a longer word at any
    character), so the label shows the result in at most ``lines`` lines.
    """
    if font.measure(text) <= width:
        return text

    def count(candidate: str) -> int:
        n, line = 1, ""
        for word in candidate.split(" "):
            trial = f"{line} {word}" if line else word
            if font.measure(trial) <= width:
                line = trial
                continue
            if line:
                n, line = n + 1, ""
            while font.measure(word) > width:  # a word wider than the line: broken anywhere
                k = len(word)
                while k > 1 and font.measure(word[:k]) > width:
                    k -= 1
                n, word = n + 1, word[k:]
            line = word
        return n

    if count(text) <= lines:
        return text
    # The longest prefix (ending with "…") that still fits: binary search on its length.
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(text[:mid].rstrip() + "…") <= lines:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + "…"


def ask_yes_no(master: tk.Misc, title: str, text: str) -> bool:
    """A modal question over ``master``: True for Yes (the default button), False for No."""
    from tkinter import messagebox  # only when asked: most sessions never need it

    return bool(messagebox.askyesno(title, text, parent=master, icon="question"))
