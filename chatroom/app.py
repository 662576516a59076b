"""ChatApp, the controller of one chat window, and the client's command line (``main``).

The app is a phase machine (login, connecting, chat, closed) over a
:class:`~chatroom.views.LoginView` and a :class:`~chatroom.views.ChatView`, switched in
one window.  Everything here runs on the Tk thread, the only thread that touches widgets:
it polls the session's queue with ``after()`` every 50 ms and handles at most a batch of
events per tick, inserting the resulting lines with one ``Text.insert`` call, applying
only the newest member snapshot, and trimming the scrollback, so a flood neither freezes
the window nor grows memory without bound.  Text read from Tk is normalised (a lone
surrogate becomes U+FFFD) before it reaches the session.  The same tick runs the
reconnect countdown and picks up a SIGINT/SIGTERM (the signal handler only sets a flag).

The session (:mod:`chatroom.session`) never blocks this thread: its ``send_*`` methods
only queue.  A server with echo-message sends your own lines back (Echo events) with its
time, and the app shows them then; an older server does not, so the app shows your line at
once, locally.  Slash commands come from the table in :mod:`chatroom.slash`; how lines
look, from :mod:`chatroom.lines`.

History: the room's recent lines (History LATEST) go at the top of the log, greyed, each
with its own time, then a rule between them and what is said now; scrolling to the top
(or Page Up there) asks the session for the page before them (OLDER), inserted above
without moving what is in view, until the start of the conversation; after a reconnect
what was said meanwhile (MISSED) comes before the live lines.  A day line goes wherever
the local date changes from one line to the next.

Encryption: the login view's "Use TLS" box (on by default for port 6697, ``--tls``) makes
the session connect with TLS.  When a certificate cannot be checked, or differs from the one
pinned for that server, the session ends the attempt with a LoginFailed that carries the
fingerprint; the app shows the question in the login view and, when the user says yes,
pins that fingerprint (:class:`~chatroom.pins.PinStore`, the user's config directory) and
connects again with a new session.  The chat view says quietly whether the connection is
encrypted.

Accounts: the login view offers three ways in, as a guest, logging in to an account and
creating one (its password twice, compared here before anything is sent).  The session logs
in (or creates the account) while registering and says how it went; a refusal comes back to
the login view in words, with the field at fault selected (the password for a wrong
password, the name for a taken one).  "Remember my password" (off unless the user ticks it)
keeps the password, once the server has accepted it, in the user's config directory
(:class:`~chatroom.secrets_store.PasswordStore`) and fills it in at the next start; unticking
the box, logging out (the chat view's Log Out) or a wrong password deletes it.  Not
remembered, the password lives only in the session (for its reconnects) and leaves the
login form once accepted.  A guest on a registered name sees a banner counting down the
server's grace, with Log In (back to the login view, Log in chosen, the password field
focused), then the rename in words.

``python client.py --help`` lists the options.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import queue
import signal
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from chatroom import lines, slash, transfer, views
from chatroom import protocol as P
from chatroom.convs import Conversation, Conversations
from chatroom.events import (
    Away,
    AwayChanged,
    AwayStates,
    BanList,
    Closed,
    Disconnected,
    Echo,
    Event,
    History,
    HistoryKind,
    Joined,
    Left,
    LoggedIn,
    LoginFailed,
    LoginKind,
    Message,
    Names,
    Notice,
    OperChanged,
    Presence,
    ReadMarker,
    Reconnecting,
    Registered,
    RenameWarning,
    RoomList,
    Sending,
    ServerError,
    Topic,
    UserJoined,
    UserLeft,
    UserQuit,
    UserRenamed,
    Whois,
)
from chatroom.pins import PinStore, set_profile
from chatroom.secrets_store import PasswordStore
from chatroom.serverinfo import ServerInfo
from chatroom.settings import NotifyMemory, RoomMemory, Saved, Settings
from chatroom.session import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_ROOM,
    NICK_ERRORS,
    QUIT_REASON,
    TLS_PORT,
    AccountMode,
    ChatSession,
    Credentials,
    clean_text,
    close_sessions,
    password_problem,
)

log = logging.getLogger(__name__)

CERT_KINDS = (LoginKind.UNTRUSTED_CERT, LoginKind.CERT_CHANGED)
# The login view's field to select when the session says why it could not get in (the
# name for the rest, as before there were accounts).
FIELD_AT_FAULT = {
    LoginKind.WRONG_PASSWORD: "password", LoginKind.BAD_ACCOUNT_PASSWORD: "password",
    LoginKind.THROTTLED: "password", LoginKind.NAME_REGISTERED: "name",
    LoginKind.INSECURE: "tls", LoginKind.BAD_PASSWORD: "server_password",
    LoginKind.NO_ACCOUNTS: "guest", LoginKind.REGISTRATION_CLOSED: "guest",
    LoginKind.ACCOUNT_REQUIRED: "login", LoginKind.TLS_FAILED: "tls",
}
PASTE_ASK = 5  # more messages than this at once: the user confirms first
MIN_SIZE = (720, 480)  # the chat's three columns keep a readable log; the login fits
DEFAULT_SIZE = "960x600"


def paste_seconds(count: int, burst: int, rate: float) -> int:
    """How long ``count`` messages take at ``burst`` at once, then ``rate`` a second."""
    return max(0, round((count - burst) / rate)) if rate > 0 else 0


@dataclass
class _Job:
    """A file going up (``upload``) or down, on a thread of its own.  The thread reports
    on the app's queue; only the Tk thread touches the row that shows it."""

    key: str
    upload: bool
    name: str
    target: str  # upload: the conversation to post the link in
    cancel: threading.Event = field(default_factory=threading.Event)
    shown: int = -1  # the last per-mille reported (so the queue gets ~1000 reports at most)


@dataclass
class _Attempt:
    """The account a connection attempt logs in to, and the password to remember once the
    server accepts it (None: not to be remembered).  Tk thread."""

    host: str
    port: int
    name: str
    secret: str | None = field(default=None, repr=False)


class ChatApp:
    """The client window: a login view and a chat view on ``master`` (a Tk or Toplevel).

    Tk thread only, like every method here.  ``request_exit`` is the one meant for a
    signal handler (it only sets a flag).  The ``slash_*`` methods are the handlers the
    slash-command table names.
    """

    REPLY_WINDOW = 15.0  # seconds in which a server error is taken as the answer to a send
    ALERT_EVERY = 5.0  # seconds between two bells for mentions

    def __init__(self, master: views.Toplevel, host: str = DEFAULT_HOST,
                 port: int = DEFAULT_PORT, name: str = "", room: str = DEFAULT_ROOM, *,
                 poll_ms: int = 50, batch: int = 300, scrollback: int = 5000,
                 session_options: dict[str, object] | None = None, tls: bool | None = None,
                 cafile: str | None = None, pins: PinStore | None = None,
                 passwords: PasswordStore | None = None,
                 rooms: RoomMemory | None = None, settings: Settings | None = None,
                 notify: NotifyMemory | None = None) -> None:
        if not views.AVAILABLE:
            raise RuntimeError("the chat window needs tkinter (python3-tk)")
        self.master = master
        self.window = views.Window(master)
        self.room = room
        self.poll_ms = poll_ms
        self.batch = batch
        self.session_options = dict(session_options or {})
        self.cafile = cafile
        self.pins = pins if pins is not None else PinStore()  # reads nothing until used
        self.passwords = passwords if passwords is not None else PasswordStore()
        self.memory = rooms if rooms is not None else RoomMemory()  # rooms for next time
        self.settings = settings  # None: remember nothing of the form (tests)
        self.notify = notify if notify is not None else NotifyMemory()
        self._away: set[str] = set()  # folded nicks the server says are away
        self._read_at = 0.0  # monotonic time the last read marker was sent
        # Asks for a secret (title, question) -> the text, or None; tests answer it.
        self.ask_secret: Callable[[str, str], str | None] = (
            lambda title, text: views.ask_string(master, title, text, secret=True))
        self.ask_text: Callable[[str, str], str | None] = (
            lambda title, text: views.ask_string(master, title, text))
        self.convs = Conversations()  # the rooms and private talks of this chat
        self._switch_to: str | None = None  # folded room to show once its Joined comes
        self._list_stale = False  # the conversation list needs redrawing this tick
        self._alerted = 0.0  # monotonic time of the last bell
        self.join_dialog: views.JoinDialog | None = None
        self._jobs: dict[str, _Job] = {}  # files going up or down, by key
        self._job_events: queue.Queue[tuple[str, str, object]] = queue.Queue()
        self._job_count = 0
        # The file choosers (tests answer them themselves).
        self.choose_file: Callable[[], str] = (
            lambda: views.ask_open_file(master, "Send a file"))
        self.choose_destination: Callable[[str], str] = (
            lambda name: views.ask_save_file(master, "Save the file as", name))
        self.emoji_picker: views.EmojiPicker | None = None
        # Opens a web address (a clicked link); tests replace it.
        self.open_url: Callable[[str], None] = views.open_in_browser
        self._attempt: _Attempt | None = None  # the account of the session, if any
        self._account: str | None = None  # what the session is logged in as
        self._prefilled: str | None = None  # the remembered password we filled in
        self._claim: tuple[str, float] | None = None  # registered name, rename deadline
        self._save_error: str | None = None  # remembering the password failed: say so
        self._question: LoginFailed | None = None  # a certificate the user is asked about
        self._tls: str | None = None  # this connection's TLS version; None in clear
        self._tls_offer: int | None = None  # the server says it has TLS on this port
        self.session: ChatSession | None = None
        self.retired: list[ChatSession] = []
        self.phase = "login"  # login, connecting, chat, closed
        self.exit_requested = False  # set by the signal handler; the next tick exits
        self._title = ""
        self._show_names = False
        self._show_topic = False
        self._has_focus = False
        self._early: deque[str] = deque(maxlen=50)  # server notices (MOTD) before the chat
        self._members: tuple[str, ...] | None = None  # newest snapshot not yet shown
        self._retry: tuple[float, int, bool] | None = None  # (when, attempt, name in use)
        self._final = False  # the session told us it gave up (LoginFailed in the chat)
        self._expect: tuple[str, frozenset[str], float] | None = None  # sent, refusals, when
        self._sending: tuple[int, int] | None = None  # a paste going out: (sent, total)
        # Asks the user (title, question) -> yes; tests answer it themselves.
        self.confirm: Callable[[str, str], bool] = (
            lambda title, text: views.ask_yes_no(master, title, text))
        views.style(master)
        self.window.setup("Chat", MIN_SIZE, self.exit_program, self._on_focus)
        self.login = views.LoginView(master, room, host, port, name, self.join_clicked,
                                     self._enter_pressed, tls, self.trust_clicked,
                                     self.distrust_clicked, self.remember_toggled,
                                     self._identity_changed)
        self.chat = views.ChatView(master, scrollback, self.send_text, self.leave_chat,
                                   self.exit_program, self.refresh_names, self.older_wanted,
                                   self.log_in_instead, self.back_to_login,
                                   on_select=self.conversation_clicked,
                                   on_join_room=self.open_join_dialog,
                                   on_part=self.part_clicked,
                                   on_link=lambda url: self.open_url(url),
                                   on_emoji=self.open_emoji,
                                   member_menu=self.member_menu,
                                   on_send_file=self.send_file_clicked,
                                   on_save=self.save_file)
        self.menu = views.MenuBar(master, {
            "join": self.open_join_dialog, "part": self.part_clicked,
            "find": self.chat.open_find, "leave": self.leave_chat,
            "exit": self.exit_program, "keys": self.show_keys,
            "commands": self.show_commands,
        })
        self.window.bind_keys({
            "<Alt-Up>": lambda: self.step_conversation(-1),
            "<Alt-Down>": lambda: self.step_conversation(1),
            "<Control-Prior>": lambda: self.step_conversation(-1),
            "<Control-Next>": lambda: self.step_conversation(1),
            "<Control-k>": self.open_join_dialog,
            "<Control-w>": self.part_clicked,
        }, lambda: self.phase == "chat", (self.chat.entry, self.chat.convlist))
        self._fill_remembered()
        self.login.show()
        self.login.focus_name()
        self._after_id: str | None = self.window.after(self.poll_ms, self._poll)

    # --- login ------------------------------------------------------------------------

    def _enter_pressed(self) -> None:
        if self.phase == "login":  # a second Enter while connecting must not cancel
            self.join_clicked()

    def join_clicked(self) -> None:
        """Join Chat (or, while connecting, Cancel)."""
        if self.phase == "connecting":
            self._retire()
            self.phase = "login"
            self._retry = None
            self.login.set_busy(False)
            self.login.show_status("Cancelled.")
            return
        if self.phase != "login":
            return
        name, host, port_text, password = self.login.values()
        problem = P.nick_problem(name)
        if problem:
            self.login.show_error(f"That name won't work: {problem}.")
            self.login.focus_name(select=True)
            return
        if not host:
            self.login.show_error("Enter the server's host name or address (127.0.0.1 for "
                                  "this computer).")
            self.login.focus_host()
            return
        try:
            port = int(port_text)
            if not 1 <= port <= 65535:
                raise ValueError
        except ValueError:
            self.login.show_error("The port is a number from 1 to 65535 (the server's "
                                  "default is 1027).")
            self.login.focus_port()
            return
        mode, secret, confirm, remember = self.login.account_values()
        account: Credentials | None = None
        if mode != AccountMode.GUEST:
            bad = password_problem(secret, confirm if mode == AccountMode.CREATE else None)
            if bad:
                where, words = bad
                self.login.show_error(words)
                self.login.focus_field(where)
                return
            account = Credentials(name, secret, create=mode == AccountMode.CREATE)
            self._attempt = _Attempt(host, port, name, secret if remember else None)
        else:
            self._attempt = None
        self._early.clear()
        self._retry = None
        self._question = None
        self._claim = None
        self._account = None
        self._tls = self._tls_offer = None
        self.login.hide_trust()
        tls = self.login.use_tls()
        options: dict[str, object] = {"pins": self.pins, "cafile": self.cafile}
        options.update(self.session_options)
        options.setdefault("rooms", self.memory.get(host, port, name))
        self.session = ChatSession(host, port, name, self.room, password or None, tls=tls,
                                   account=account, **options)  # type: ignore[arg-type]
        self._away.clear()
        for nick in self.notify.get(host, port, name):
            self.session.watch(nick)
        self.session.start()
        self.phase = "connecting"
        self.login.set_busy(True)
        how = " (encrypted)" if tls else ""
        doing = {"login": ", logging in", "create": ", creating the account"}.get(mode, "")
        self.login.show_status(f"Connecting to {host}:{port}{how}{doing}…")

    # --- remembered passwords -----------------------------------------------------------

    def _server_of_form(self) -> tuple[str, str, int] | None:
        """(name, host, port) as the login form has them, if the port is a port."""
        name, host, port_text, _ = self.login.values()
        try:
            port = int(port_text)
        except ValueError:
            return None
        return (name, host, port) if name and host and 0 < port < 65536 else None

    def _fill_remembered(self) -> None:
        """At start: the password remembered for the name given (or, with none, for whoever
        last logged in to this server), with Log in chosen and the box ticked."""
        form = self._server_of_form()
        if form is None:
            _name, host, port_text, _ = self.login.values()
            if not port_text.isdigit() or not host:
                return
            latest = self.passwords.latest(host, int(port_text))
            if latest is None:
                return
            self.login.set_name(latest[0])  # fills the password (_identity_changed)
        else:
            self._identity_changed()
        if self._prefilled is not None:
            self.login.set_mode(AccountMode.LOGIN.value)

    def _identity_changed(self) -> None:
        """The name, host or port changed: fill in what is remembered for the new one, or
        take away what we filled in for the old one.  A password the user typed stays."""
        if not hasattr(self, "login"):  # (a trace firing while the view is being built)
            return
        current = self.login.password_var.get()
        if current and current != self._prefilled:
            return
        form = self._server_of_form()
        stored = self.passwords.get(form[1], form[2], form[0]) if form is not None else None
        if stored is not None:
            self.login.set_password(stored, remembered=True)
        elif self._prefilled is not None:
            self.login.set_password("", remembered=False)
        self._prefilled = stored

    def remember_toggled(self, on: bool) -> None:
        """The user unticked "Remember my password": forget it now (ticked, it is kept
        once the server has accepted it)."""
        if on:
            return
        form = self._server_of_form()
        self._prefilled = None
        if self._attempt is not None:
            self._attempt.secret = None
        if form is None:
            return
        try:
            removed = self.passwords.remove(form[1], form[2], form[0])
        except OSError as exc:
            self.login.show_error(f"Could not delete the remembered password in "
                                  f"{self.passwords.path}: {exc.strerror or exc}.")
            return
        if removed:
            self.login.show_status("The remembered password was deleted from this computer.")

    def _forget(self, host: str, port: int, name: str) -> bool:
        """Delete the password remembered for ``name`` (wrong, or logged out)."""
        try:
            return self.passwords.remove(host, port, name)
        except OSError as exc:
            log.warning("could not delete the remembered password for %s on %s:%d: %s",
                        name, host, port, exc.strerror or exc)
            return False

    def _logged_in(self, ev: LoggedIn) -> None:
        """The server took the password: remember it if asked to; else the form lets go."""
        self._account = ev.account
        attempt = self._attempt
        if attempt is None:
            return
        if attempt.secret is not None:
            try:
                self.passwords.set(attempt.host, attempt.port, attempt.name, attempt.secret)
                self._prefilled = attempt.secret
            except OSError as exc:
                self._save_error = (f"Your password could not be remembered: "
                                    f"{exc.strerror or exc} ({self.passwords.path}).")
            attempt.secret = None
        else:  # kept by the session for its reconnects, and nowhere else
            self.login.set_password("")
            self._prefilled = None

    # --- the certificate question -------------------------------------------------------

    def _ask_about_certificate(self, ev: LoginFailed) -> None:
        """Show ``ev``'s certificate in the login view; the answer comes as a click."""
        self._question = ev
        self.login.show_error(ev.message)
        self.login.show_trust(ev.fingerprint, ev.pinned)

    def trust_clicked(self) -> None:
        """Trust and Join / Accept the New Certificate: pin what was shown, connect again.

        Only the fingerprint the user saw is pinned, for the host and port it came from; if
        the server shows another one on the new connection, that is asked about afresh.
        """
        q = self._question
        if q is None or self.phase != "login":
            self.login.hide_trust()
            return
        self._question = None
        self.login.hide_trust()
        try:
            self.pins.set(q.host, q.port, q.fingerprint)
        except OSError as exc:
            self.login.show_error(f"Could not save the trusted certificate in "
                                  f"{self.pins.path}: {exc.strerror or exc}.")
            return
        log.info("pinned certificate %s for %s:%d", q.fingerprint, q.host, q.port)
        self.join_clicked()

    def distrust_clicked(self) -> None:
        """Cancel in the certificate panel: nothing is pinned, nothing is sent."""
        if self._question is None:
            self.login.hide_trust()
            return
        self._question = None
        self.login.hide_trust()
        self.login.show_status("Not connected: the certificate was not trusted, and nothing "
                               "was sent to the server.")
        self.login.focus_name()

    def _retire(self, leave: bool = False) -> None:
        s = self.session
        self.session = None
        if s is not None:
            if leave:
                s.leave()
            else:
                s.quit()
            self.retired.append(s)

    def _show_login(self, error: str = "", status: str = "", focus: str = "name") -> None:
        self.chat.hide()
        self.login.show()
        self.login.set_busy(False)
        if error:
            self.login.show_error(error)
        else:
            self.login.show_status(status)
        self.phase = "login"
        self.menu.set_chat(False)
        self._retry = None
        self._claim = None
        self.login.focus_field(focus, select=bool(error))

    def _show_chat(self, nick: str, room: str) -> None:
        self.login.hide()
        self.chat.reset(room)
        self.convs = Conversations(self._fold)
        self.chat.show()
        self.phase = "chat"
        self.menu.set_chat(True)
        self._members = None
        self._retry = None
        self._final = False
        self._expect = None
        self.chat.focus_entry()
        self._show_security()
        self.chat.set_account(self._account)
        conv = self._open(room)
        self._select(conv)
        for text in self._early:
            self.chat.add(lines.plain(text, "notice"))
        self._early.clear()
        account = self._account
        if account is None:
            who = ""
        elif P.casefold(account) == P.casefold(nick):
            who = ", logged in to your account"
        else:
            who = f", logged in as {account}"
        self.info(f"You joined {room} as {nick}{who}. Type /help for commands.")
        self._save_settings()
        self._remember_rooms()
        if self._save_error:
            self.error(self._save_error)
            self._save_error = None

    def _save_settings(self) -> None:
        """The form's values worked: keep them for the next start (never the password)."""
        s = self.session
        if self.settings is None or s is None:
            return
        mode = "login" if self._attempt is not None else "guest"
        name = self._attempt.name if self._attempt is not None else s.nick
        try:
            self.settings.save(host=s.host, port=s.port, name=name, tls=s.tls, mode=mode)
        except OSError as exc:
            log.warning("could not save the settings: %s", exc)

    def _save_geometry(self) -> None:
        if self.settings is None:
            return
        try:
            size = self.master.winfo_geometry().split("+", 1)[0]  # "WxH": not where
            if "x" in size and size != "1x1":
                self.settings.save(geometry=size)
        except (OSError, views.TclError) as exc:
            log.warning("could not save the window size: %s", exc)

    # --- conversations ----------------------------------------------------------------

    def _fold(self, name: str) -> str:
        s = self.session
        return (s.server_info if s is not None else ServerInfo()).fold(name)

    @property
    def current(self) -> Conversation | None:
        """The conversation in view (None before the chat view has one)."""
        return self.convs.current

    @property
    def target(self) -> str:
        """Where what is typed goes: the room or person in view (the login room before)."""
        conv = self.convs.current
        return conv.name if conv is not None else self.room

    def _open(self, name: str, private: bool = False) -> Conversation:
        """The conversation ``name``, added to the list (with its own log) if new."""
        conv = self.convs.open(name, private)
        self.chat.add_pane(conv.pane)
        self._list_stale = True
        return conv

    def _select(self, conv: Conversation) -> None:
        """Show ``conv``: its log, its topic and members; what was unread in it is read."""
        old = self.convs.current
        if old is not None and old is not conv and old.pane in self.chat.panes:
            # Looked at until now: read, and its "new messages" mark starts afresh.
            self.chat.pane(old.pane).drop_unread_rule()
            old.unread = old.mentioned = 0
        self.convs.current = conv
        self.chat.show_pane(conv.pane)
        conv.unread = conv.mentioned = 0
        self._show_side(conv)
        self._refresh_list()
        self._update_title()
        self._expect = None
        self._mark_read(conv)
        self._show_names = self._show_topic = False

    def _show_side(self, conv: Conversation) -> None:
        """The topic bar and the side panel for ``conv``, the one in view."""
        chat = self.chat
        self._members = None
        if conv.private:
            chat.set_side(f"Talking with {conv.name}", refresh=False)
            chat.set_heading(f"Private conversation with {conv.name}: only the two of you "
                             f"see it.")
            chat.set_members((conv.name,))
            chat.count_var.set("private")
            chat.set_part_label("Close")
            return
        chat.set_side(f"Online in {conv.name}", refresh=conv.joined)
        chat.set_topic(conv.topic)
        chat.set_part_label("Leave")
        if conv.joined:
            chat.set_members(conv.members, self._is_away)
        else:
            s = self.session
            connected = s is not None and s.state in ("joining", "joined")
            chat.set_offline("not in the room" if connected else "offline")

    READ_EVERY = 2.0  # seconds between two read markers sent for the conversation in view

    def _mark_read(self, conv: Conversation) -> None:
        """Tell the server (and so the user's other devices) that ``conv`` is read up to its
        newest line: when it is shown, and as lines come while the window has the focus."""
        s = self.session
        if s is None or conv.last_time <= conv.read_sent:
            return
        if s.mark_read(conv.name, conv.last_time):
            conv.read_sent = conv.last_time
            self._read_at = time.monotonic()

    def _read_elsewhere(self, ev: ReadMarker) -> None:
        """Another device (or this one) read ``ev.target`` up to ``ev.time``: what came
        before is no longer unread here."""
        conv = self.convs.get(ev.target)
        if conv is None or ev.time is None:
            return
        conv.read_sent = max(conv.read_sent, ev.time)
        if (conv.unread or conv.mentioned) and ev.time >= conv.last_time:
            conv.unread = conv.mentioned = 0
            if conv is not self.convs.current and conv.pane in self.chat.panes:
                self.chat.pane(conv.pane).drop_unread_rule()
            self._list_stale = True

    def _is_away(self, member: str) -> bool:
        return self._fold(member.lstrip("~&@%+")) in self._away

    def _close(self, conv: Conversation) -> None:
        """Take ``conv`` off the list, with its log; the neighbour comes into view."""
        was_current = conv is self.convs.current
        if conv.pane in self.chat.panes:
            self.chat.remove_pane(conv.pane)
        self.convs.close(conv.name)
        if was_current:
            nxt = self.convs.current
            if nxt is not None:
                self.convs.current = None
                self._select(nxt)
            else:
                self.chat.show_pane("")
                self.chat.set_side("Online", refresh=False)
                self.chat.set_heading("You are in no room. Press Join Room… (Ctrl+K) to "
                                      "join one.")
                self.chat.set_offline("no room")
        self._refresh_list()
        self._update_title()

    def _room_conv(self, room: str | None) -> Conversation | None:
        conv = self.convs.get(room) if room else None
        return conv if conv is not None and not conv.private else None

    def _refresh_list(self) -> None:
        """Redraw the conversation list (once per tick at most)."""
        self._list_stale = False
        entries = []
        current = None
        for i, c in enumerate(self.convs):
            if c is self.convs.current:
                current = i
            if c.mentioned:
                kind = "mention"
            elif c.unread:
                kind = "unread"
            elif not c.private and not c.joined:
                kind = "off"
            else:
                kind = ""
            entries.append((c.label, kind))
        self.chat.set_conversations(entries, current)

    def conversation_clicked(self, index: int) -> None:
        convs = list(self.convs)
        if 0 <= index < len(convs):
            self._select(convs[index])
            self._refresh_list()
            self._update_title()
            # The list's own click binding takes the focus after telling us: give it
            # back to the message field once that is done, so typing goes there.
            self.window.after(0, self.chat.focus_entry)

    def step_conversation(self, step: int) -> None:
        """Alt+Up / Alt+Down: the conversation above or below in the list."""
        convs = list(self.convs)
        if not convs or self.convs.current is None:
            return
        i = (convs.index(self.convs.current) + step) % len(convs)
        self.conversation_clicked(i)

    def part_clicked(self) -> None:
        """The Leave button (Ctrl+W): leave the room in view, or close the private talk."""
        conv = self.convs.current
        if conv is None:
            return
        s = self.session
        if conv.private or not conv.joined or s is None:
            if not conv.private and s is not None:
                s.part(conv.name)  # a room we were removed from: stop trying to rejoin
            self._close(conv)
            self._remember_rooms()
            return
        if not s.part(conv.name):
            self.error(f"Could not leave {conv.name} right now: not connected.")

    def _remember_rooms(self) -> None:
        """Keep the rooms we are in, for the next start."""
        if self.session is not None:
            self._keep(self.memory, list(self.session.rooms))

    def _keep(self, memory: RoomMemory, names: list[str]) -> None:
        """Keep ``names`` in ``memory`` under this server and login name (a failure only
        costs them at the next start)."""
        s = self.session
        if s is None:
            return
        name = self._attempt.name if self._attempt is not None else s.nick
        try:
            memory.set(s.host, s.port, name, names)
        except OSError as exc:
            log.warning("could not save %s: %s", memory.path, exc)

    def open_join_dialog(self) -> None:
        """Join Room… (Ctrl+K): the server's rooms, with a field for any name."""
        if self.phase != "chat":
            return
        if self.join_dialog is not None and self.join_dialog.alive():
            self.join_dialog.lift()
        else:
            self.join_dialog = views.JoinDialog(self.master, self._join_from_dialog,
                                                self._list_rooms)
        self._list_rooms()

    def _list_rooms(self) -> None:
        s = self.session
        if self.join_dialog is None:
            return
        if s is None or not s.list_rooms():
            self.join_dialog.set_status("Not connected: the list of rooms comes once the "
                                        "connection is back.")
        else:
            self.join_dialog.set_status("Asking the server for its rooms…")

    def _join_from_dialog(self, name: str) -> str | None:
        """The dialog's Join: None when asked (the dialog closes), else why not."""
        name = name.strip()
        if name and not name.startswith(tuple("#&")):
            name = "#" + name
        return self.join_room(name)

    def join_room(self, name: str) -> str | None:
        """Join room ``name`` (or show it, if we are in it): None, or why not, in words."""
        s = self.session
        if s is None or s.state not in ("joining", "joined"):
            return "Not connected: try again when the connection is back."
        problem = s.room_problem(name)
        if problem:
            return f"“{name}” is not a room name: {problem}."
        conv = self._room_conv(name)
        if conv is not None and conv.joined:
            self._select(conv)
            return None
        if not s.join(name):
            return "Not connected: try again when the connection is back."
        self._switch_to = self._fold(name)
        self.info(f"Joining {name}…")
        return None

    def open_private(self, nick: str) -> Conversation:
        new = self.convs.get(nick) is None
        conv = self._open(nick, private=True)
        if new and self.session is not None:
            self.session.ask_read_marker(nick)  # rooms' come with their join; people's not
        return conv

    def open_emoji(self) -> None:
        if self.emoji_picker is not None and self.emoji_picker.alive():
            self.emoji_picker.close()
            return
        self.emoji_picker = views.EmojiPicker(self.master, self.chat.emoji_button,
                                              self.chat.insert_text)

    # --- chat actions -----------------------------------------------------------------

    def send_text(self, text: str) -> bool:
        """The message field's Enter: a slash command, or a line to the room.

        True when the text was taken (the field clears); False when it was refused, with
        the reason shown in the log (the field keeps the text, selected).
        """
        text = clean_text(text)
        if not text.strip():
            return False
        if slash.parse(text) is not None:
            return self.command(text)
        body = slash.message_text(text)
        s = self.session
        conv = self.convs.current
        if conv is None:
            self.error("You are in no room: join one first (Join Room…, or /join #name).")
            return False
        pieces = s.pieces(conv.name, body) if s is not None else []
        count = max(len(pieces), s.line_count(body)) if s is not None else 0
        if s is not None and count > PASTE_ASK and not self._paste_ok(s, count, len(pieces)):
            return False  # the text stays in the field
        if conv.private:
            sent = s is not None and s.send_private(conv.name, body)
            refusals = {P.ERR_NOSUCHNICK, P.ERR_CANNOTSENDTOCHAN}
        else:
            sent = s is not None and s.send_message(body, room=conv.name)
            refusals = {P.ERR_CANNOTSENDTOCHAN}
        if s is None or not sent:
            self.error("Not connected to the room: the message was not sent." if not
                       conv.private else "Not connected: the message was not sent.")
            return False
        self._expect_reply(text, refusals)
        if not s.echoes:  # else the server's echo shows it, with the server's time
            for piece in pieces:  # each as others get it: IRC has no multi-line message
                self.own_line(piece, conv=conv)
        return True

    def _paste_ok(self, s: ChatSession, count: int, messages: int) -> bool:
        """Ask before many lines go at once: they can't be undone (and, one by one, take a
        while)."""
        if s.multiline is not None and messages < count:
            many = "one message" if messages == 1 else f"{messages} messages"
            return self.confirm("Send these lines?",
                                f"This sends {count} lines to {self.target} as {many}, "
                                f"as you see them here.")
        seconds = paste_seconds(count, s.send_burst, s.send_rate)
        pace = (f" They go out {s.send_rate:g} a second after the first {s.send_burst}, so "
                f"the server takes them all: about {seconds} s." if seconds else "")
        return self.confirm("Send these lines?",
                            f"This sends {count} messages to {self.target}, one for each line "
                            f"(a long line goes in pieces).{pace}")

    def command(self, line: str) -> bool:
        """Run the slash command ``line``: the one place that checks before a handler."""
        inv = slash.parse(line)
        if inv is None:
            return False
        if inv.command is None:
            self.error(f"Unknown command /{inv.word}. Type /help to see the commands.")
            return False
        if inv.command.needs_room and not self._in_room():
            self._not_in_room()
            return False
        handler: Callable[[str, str], bool] = getattr(self, inv.command.handler)
        return handler(inv.rest, inv.line)

    def _in_room(self) -> bool:
        """Can the conversation in view be written to: a room we are in, or a person
        while connected?"""
        s, conv = self.session, self.convs.current
        if s is None or conv is None:
            return False
        if conv.private:
            return s.state in ("joining", "joined")
        return s.is_in(conv.name)

    def _not_in_room(self) -> None:
        conv = self.convs.current
        s = self.session
        if (conv is not None and not conv.private and s is not None
                and s.state in ("joining", "joined")):
            self.error(f"You are not in {conv.name}: type /join to join it again.")
        elif conv is None and s is not None and s.state in ("joining", "joined"):
            self.error("You are in no room: join one first (Join Room…, or /join #name).")
        else:
            self.error("Not connected to the room: try again when the connection is back.")

    def _room_session(self) -> ChatSession:
        """The session, for a handler that ``needs_room`` (checked before it runs)."""
        assert self.session is not None
        return self.session

    def slash_help(self, rest: str, line: str) -> bool:
        self.info("Commands:")
        self.chat.add_help(slash.HELP)
        self.info("Keys:")
        self.chat.add_help(slash.KEYS)
        self.chat.flush()
        return True

    def show_keys(self) -> None:
        """Help ▸ Keyboard shortcuts."""
        views.show_help(self.master, "Keyboard shortcuts", slash.KEYS)

    def show_commands(self) -> None:
        """Help ▸ Commands."""
        views.show_help(self.master, "Commands", slash.HELP)

    # --- files (soju.im/FILEHOST) -----------------------------------------------------

    def _filehost(self) -> str | None:
        s = self.session
        return s.server_info.filehost if s is not None else None

    def _file_tls(self) -> tuple[ssl.SSLContext | None, str | None]:
        """How to trust the file host: as the chat connection is trusted (the pinned
        certificate, or the system's authorities and --cafile)."""
        s = self.session
        if s is None or not s.tls:
            return None, None
        try:
            pin = self.pins.get(s.host, s.port)
        except OSError:
            pin = None
        if pin:
            return None, pin
        context = ssl.create_default_context(cafile=self.cafile)
        return context, None

    def send_file_clicked(self) -> None:
        """Send File…: pick a file; it goes up in the background, then its link is posted
        in the conversation in view, as a message every IRC client can open."""
        s, conv = self.session, self.convs.current
        if s is None or conv is None or not self._in_room():
            self._not_in_room()
            return
        url = self._filehost()
        if url is None:
            self.error("This server does not offer file sharing.")
            return
        login = s.file_login()
        if login is None:
            self.error("Only an account can send files (the server keeps them under its "
                       "name): press Leave Chat, choose “Log in” or “Create account” and "
                       "join again. You can still save files others send.")
            return
        try:
            transfer.check_upload_url(url, s.tls)
        except transfer.TransferError as exc:
            self.error(f"Files can't be sent here: {exc}.")
            return
        path = self.choose_file()
        if not path:
            return
        name = path.replace("\\", "/").rsplit("/", 1)[-1]
        job = self._new_job(True, name, conv.name, f"Sending {name} to {conv.name}…")
        context, pin = self._file_tls()
        account, password = login

        def run() -> None:
            try:
                link = transfer.upload(url, path, account, password, cancel=job.cancel,
                                       progress=lambda done, total: self._progress(job, done,
                                                                                   total),
                                       tls_context=context, chat_tls=s.tls, pin=pin)
                size = os.path.getsize(path)
                self._job_events.put((job.key, "done", (link, size)))
            except transfer.Cancelled:
                self._job_events.put((job.key, "cancelled", None))
            except (transfer.TransferError, OSError) as exc:
                self._job_events.put((job.key, "failed", str(exc)))

        threading.Thread(target=run, name=f"upload-{job.key}", daemon=True).start()

    def save_file(self, url: str) -> None:
        """Save… on a file's line: where to, then it comes down in the background."""
        name = transfer.name_in(url)
        dest = self.choose_destination(name)
        if not dest:
            return
        shown = dest.replace("\\", "/").rsplit("/", 1)[-1]
        job = self._new_job(False, shown, "", f"Saving {shown}…")
        context, pin = self._file_tls()

        def run() -> None:
            try:
                path = transfer.download(url, dest, cancel=job.cancel, tls_context=context,
                                         pin=pin, progress=lambda done, total:
                                         self._progress(job, done, total))
                self._job_events.put((job.key, "done", (str(path), path.stat().st_size)))
            except transfer.Cancelled:
                self._job_events.put((job.key, "cancelled", None))
            except (transfer.TransferError, OSError) as exc:
                self._job_events.put((job.key, "failed", str(exc)))

        threading.Thread(target=run, name=f"download-{job.key}", daemon=True).start()

    def _new_job(self, upload: bool, name: str, target: str, text: str) -> _Job:
        self._job_count += 1
        job = _Job(f"t{self._job_count}", upload, name, target)
        self._jobs[job.key] = job
        self.chat.add_transfer(job.key, text, job.cancel.set)
        return job

    def _progress(self, job: _Job, done: int, total: int | None) -> None:
        """On the transfer's thread: report when another per mille is done."""
        step = 1000 * done // total if total else -1
        if step != job.shown or done == total:
            job.shown = step
            self._job_events.put((job.key, "progress", (done, total)))

    def _drain_jobs(self) -> None:
        """On the Tk thread, each tick: show what the transfer threads reported."""
        while True:
            try:
                key, what, data = self._job_events.get_nowait()
            except queue.Empty:
                return
            if what == "preview":
                assert isinstance(data, bytes)
                self._show_preview(key, data)
                continue
            job = self._jobs.get(key)
            row = self.chat.transfer_rows.get(key)
            if job is None or row is None:
                continue
            verb = "Sending" if job.upload else "Saving"
            if what == "progress":
                assert isinstance(data, tuple)
                done, total = data
                amount = (f"{lines.size_words(done)} of {lines.size_words(total)}" if total
                          else lines.size_words(done))
                row.show(done, total, f"{verb} {job.name}: {amount}")
                continue
            self._jobs.pop(key, None)
            self.chat.remove_transfer(key)
            if what == "done":
                assert isinstance(data, tuple)
                where, size = data
                if job.upload:
                    self._post_file(job, str(where), int(size))
                else:
                    self.info(f"Saved {job.name} ({lines.size_words(int(size))}) as {where}.")
            elif what == "cancelled":
                self.info(f"{'Sending' if job.upload else 'Saving'} {job.name} was "
                          f"cancelled.")
            else:
                self.error(f"{'Sending' if job.upload else 'Saving'} {job.name} failed: "
                           f"{data}.")

    PREVIEW_MAX = 4 * 1024 * 1024  # bytes of an image fetched to preview it, at most
    PREVIEW_BOX = (320, 200)  # pixels a preview fits in
    PREVIEW_TYPES = (".png", ".gif")  # what Tk shows by itself

    def _preview_links(self, conv: Conversation, text: str) -> None:
        """Images on the file host in a line just shown: fetch them in the background, then
        show each small under its line."""
        fh = self._filehost()
        if fh is None:
            return
        for start, end in lines.find_links(text):
            url = text[start:end]
            if not (transfer.is_file_link(url, fh)
                    and transfer.name_in(url).lower().endswith(self.PREVIEW_TYPES)):
                continue
            self._job_count += 1
            mark = f"preview{self._job_count}"
            self.chat.pane(conv.pane).mark_last_line(mark)
            context, pin = self._file_tls()
            key = f"{conv.pane}:{mark}"

            def run(url: str = url, key: str = key) -> None:
                try:
                    data = transfer.fetch(url, self.PREVIEW_MAX, tls_context=context, pin=pin)
                except transfer.TransferError:
                    return  # no preview: the line and its Save… remain
                self._job_events.put((key, "preview", data))

            threading.Thread(target=run, name="preview", daemon=True).start()

    def _show_preview(self, key: str, data: bytes) -> None:
        pane_key, mark = key.split(":", 1)
        if pane_key not in self.chat.panes:
            return
        image = views.small_image(self.master, data, self.PREVIEW_BOX)
        if image is not None:
            self.chat.pane(pane_key).show_image(mark, image)

    def _post_file(self, job: _Job, link: str, size: int) -> None:
        """The file is up: tell the conversation, as a normal message with its link."""
        s = self.session
        text = lines.file_message(job.name, size, link)
        conv = self.convs.get(job.target)
        sent = False
        if s is not None and conv is not None:
            sent = (s.send_private(conv.name, text) if conv.private
                    else s.send_message(text, room=conv.name))
        if s is None or not sent:
            self.error(f"{job.name} was uploaded, but the link could not be posted (not "
                       f"connected): {link}")
            return
        if not s.echoes:
            self.own_line(text, conv=conv)

    # --- the member list's menu -------------------------------------------------------

    def member_menu(self, nick: str) -> list[tuple[str, Callable[[], None]] | None]:
        """What the member list's right-click menu offers for ``nick`` (None: a line):
        talk and WHOIS for anyone; for a room operator, op, voice, kick and ban."""
        s, conv = self.session, self.convs.current
        if s is None or conv is None or conv.private or not nick:
            return []
        room = conv.name
        items: list[tuple[str, Callable[[], None]] | None] = [
            (f"Talk privately with {nick}", lambda: self._select(self.open_private(nick))),
            (f"Who is {nick}?", lambda: self._whois(nick)),
        ]
        me = self._fold(nick) == self._fold(s.nick)
        if not me:
            watched = self._fold(nick) in {self._fold(n) for n in s.watching}
            items.append((f"Stop telling me when {nick} comes and goes" if watched
                          else f"Tell me when {nick} comes and goes",
                          lambda: self._toggle_notify(nick)))
        if not me and s.is_oper:
            items.append(None)
            items.append((f"Disconnect {nick} from the server…",
                          lambda: self._kill(nick)))
            if s.host_of(nick) is not None:
                items.append((f"Ban {nick}'s address from the server…",
                              lambda: self._server_ban(nick)))
        if me or not (self._am_operator(conv) or s.is_oper):
            return items
        entry = next((m for m in conv.members
                      if self._fold(m.lstrip("~&@%+")) == self._fold(nick)), nick)
        op, voiced = "@" in entry[:2], "+" in entry[:3]
        items.append(None)
        items.append((f"Take operator from {nick}", lambda: self._mode(room, "-o", nick))
                     if op else (f"Make {nick} an operator", lambda: self._mode(room, "+o", nick)))
        items.append((f"Take voice from {nick}", lambda: self._mode(room, "-v", nick))
                     if voiced else (f"Give {nick} a voice", lambda: self._mode(room, "+v", nick)))
        items.append(None)
        items.append((f"Bans of {room}…", lambda: self._show_bans(room)))
        items.append((f"Remove {nick} from {room}", lambda: self._kick(room, nick, False)))
        items.append((f"Ban {nick} from {room}", lambda: self._kick(room, nick, True)))
        return items

    def _show_bans(self, room: str) -> None:
        s = self.session
        if s is None or not s.request_bans(room):
            self.error(f"Not connected to {room}: its bans can't be listed now.")

    def _unbanner(self, room: str) -> Callable[[str], bool]:
        return lambda mask: self._unban(room, mask)

    def _unban(self, room: str, mask: str) -> bool:
        s = self.session
        return s is not None and s.unban(room, mask)

    def _toggle_notify(self, nick: str) -> None:
        self.slash_notify(nick, f"/notify {nick}")

    def _kill(self, nick: str) -> None:
        s = self.session
        reason = self.ask_text(f"Disconnect {nick}",
                               f"Why is {nick} disconnected? (everyone in their rooms sees "
                               f"it)")
        if reason is None:
            return
        if s is None or not s.kill(nick, reason or "Disconnected by an operator"):
            self.error(f"Not connected: {nick} was not disconnected.")

    def _server_ban(self, nick: str) -> None:
        s = self.session
        if s is None:
            return
        host = (s.host_of(nick) or "").split("@", 1)[-1]
        how_long = self.ask_text(f"Ban {nick}'s address",
                                 f"Ban everyone from {host} for how long? (30m, 12h, 7d)")
        if not how_long:
            return
        how_long = how_long.strip().lower()
        reason = self.ask_text(f"Ban {nick}'s address", "Why? (they see it when refused)")
        if reason is None:
            return
        if not s.server_ban(nick, how_long, reason or "Banned by an operator"):
            self.error(f"Not banned: “{how_long}” is not a duration like 30m, 12h or 7d "
                       f"(or the connection is down).")

    def _whois(self, nick: str) -> None:
        self.slash_whois(nick, f"/whois {nick}")

    def _am_operator(self, conv: Conversation) -> bool:
        s = self.session
        if s is None:
            return False
        me = self._fold(s.nick)
        return any(self._fold(m.lstrip("~&@%+")) == me and m[:1] in "~&@"
                   for m in conv.members)

    def _mode(self, room: str, change: str, nick: str) -> None:
        s = self.session
        if s is None or not s.set_member_mode(room, change, nick):
            self.error("Not connected to the room: nothing was changed.")

    def _kick(self, room: str, nick: str, ban: bool) -> None:
        s = self.session
        what = "ban" if ban else "remove"
        if not self.confirm(f"{what.capitalize()} {nick}?",
                            f"{'Ban' if ban else 'Remove'} {nick} from {room}?"
                            + (" They cannot come back under that name until the ban is "
                               "lifted." if ban else " They can join again.")):
            return
        if s is None or (ban and not s.ban(room, nick)) or not s.kick(
                room, nick, "Banned" if ban else "Removed by a room operator"):
            self.error(f"Not connected to the room: could not {what} {nick}.")

    def slash_quit(self, rest: str, line: str) -> bool:
        self.exit_program(rest or QUIT_REASON)
        return True

    def slash_away(self, rest: str, line: str) -> bool:
        s = self.session
        if s is None or not s.set_away(rest):
            self.error("Not connected: you can set away once the connection is back.")
            return False
        return True

    def slash_whois(self, rest: str, line: str) -> bool:
        s = self.session
        nick = rest.split(" ", 1)[0]
        if not nick:
            self.error("Usage: /whois <name>")
            return False
        if s is None:
            self._not_in_room()
            return False
        problem = s.nick_problem(nick)
        if problem:
            self.error(f"“{nick}” is not a valid name: {problem}.")
            return False
        if not s.whois(nick):
            self.error("Not connected: try /whois again when the connection is back.")
            return False
        return True

    def slash_join(self, rest: str, line: str) -> bool:
        """/join #room: join it (or show it); /join alone: the room in view, again."""
        wanted = rest.split(" ", 1)[0]
        conv = self.convs.current
        if not wanted:
            if conv is None or conv.private:
                self.error("Usage: /join #room")
                return False
            if conv.joined:
                self.error(f"You are already in {conv.name}.")
                return False
            wanted = conv.name
        elif not wanted.startswith(tuple("#&")) and P.valid_nick(wanted):
            wanted = "#" + wanted  # "/join dev" means #dev, as in other clients
        problem = self.join_room(wanted)
        if problem:
            self.error(problem)
            return False
        return True

    def slash_part(self, rest: str, line: str) -> bool:
        """/part [#room] [reason]: leave a room (the one in view by default)."""
        s = self.session
        first, _, reason = rest.partition(" ")
        if first.startswith(tuple("#&")):
            name = first
        else:
            conv = self.convs.current
            if conv is None or conv.private:
                self.error("Usage: /part [#room] [reason] — in a private conversation, "
                           "/close closes it.")
                return False
            name, reason = conv.name, rest
        conv = self._room_conv(name)
        if s is None or not s.part(name, reason or "Left the room"):
            if conv is not None and not conv.joined:
                self._close(conv)
                return True
            self.error(f"You are not in {name}.")
            return False
        return True

    def slash_query(self, rest: str, line: str) -> bool:
        """/query name [text]: a private conversation with ``name``, shown."""
        s = self.session
        nick, _, text = rest.partition(" ")
        if not nick:
            self.error("Usage: /query <name> [text]")
            return False
        problem = s.nick_problem(nick) if s is not None else P.nick_problem(nick)
        if problem:
            self.error(f"“{nick}” is not a valid name: {problem}.")
            return False
        if s is not None and self._fold(nick) == self._fold(s.nick):
            self.error("That is you: pick someone else to talk to.")
            return False
        self._select(self.open_private(nick))
        if text.strip():
            return self.send_text(text)
        return True

    def slash_close(self, rest: str, line: str) -> bool:
        """/close: close the private conversation in view (or leave the room)."""
        if self.convs.current is None:
            return False
        self.part_clicked()
        return True

    def slash_notify(self, rest: str, line: str) -> bool:
        """/notify: the list; /notify name: add (or, on the list already, remove) them."""
        s = self.session
        nick = rest.split(" ", 1)[0]
        if s is None:
            self._not_in_room()
            return False
        if not nick:
            people = s.watching
            self.info("Your notify list: " + ", ".join(people) + "." if people else
                      "Your notify list is empty: /notify name adds someone.")
            return True
        if self._fold(nick) in {self._fold(n) for n in s.watching}:
            s.unwatch(nick)
            self.info(f"{nick} is off your notify list.")
        elif s.watch(nick):
            self.info(f"{nick} is on your notify list: you'll see when they come and go.")
        else:
            self.error(f"“{nick}” is not a valid name.")
            return False
        self._keep(self.notify, list(s.watching))
        return True

    def slash_oper(self, rest: str, line: str) -> bool:
        """/oper [name]: become a server operator; the password is asked in a dialog, so it
        never sits in the message field or the sent-lines history."""
        s = self.session
        if s is None or s.state not in ("joining", "joined"):
            self._not_in_room()
            return False
        name = rest.split(" ", 1)[0] or (self._account or s.nick)
        if " " in rest.strip():
            self.error("Type /oper and your operator name only: the password is asked "
                       "separately, so it is never shown.")
            return False
        secret = self.ask_secret("Server operator", f"Password of {name}:")
        if not secret:
            return True
        if not s.oper(name, secret):
            self.error("Could not ask to be an operator right now.")
            return False
        self._expect_reply(line, {"464", "491", "461"})
        return True

    def slash_list(self, rest: str, line: str) -> bool:
        self.open_join_dialog()
        return True

    def slash_me(self, rest: str, line: str) -> bool:
        if not rest:
            self.error("Usage: /me <action>, e.g. /me waves")
            return False
        if not self._room_session().send_action(rest, self.target):
            self.error("The action was not sent.")
            return False
        self._expect_reply(line, {P.ERR_CANNOTSENDTOCHAN, P.ERR_NOSUCHNICK})
        if not self._room_session().echoes:
            self.own_line(rest, action=True, conv=self.convs.current)
        return True

    def slash_msg(self, rest: str, line: str) -> bool:
        s = self._room_session()
        nick, _, text = rest.partition(" ")
        if not nick or not text.strip():
            self.error("Usage: /msg <name> <text>")
            return False
        problem = s.nick_problem(nick)
        if problem:
            self.error(f"“{nick}” is not a valid name: {problem}.")
            return False
        if not s.send_private(nick, text):
            self.error("The private message was not sent.")
            return False
        self._expect_reply(line, {P.ERR_NOSUCHNICK, P.ERR_CANNOTSENDTOCHAN})
        if not s.echoes:
            here = self.convs.current
            talk = self.convs.get(nick)
            if talk is not None and talk.private and talk is not here:
                self.own_line(text, conv=talk)
            self.own_line(text, to=None if here is talk else nick, conv=here)
        return True

    def slash_nick(self, rest: str, line: str) -> bool:
        s = self._room_session()
        problem = s.nick_problem(rest)
        if problem:
            self.error(f"That name won't work: {problem}.")
            return False
        if not s.change_nick(rest):
            self.error("Your name could not be changed right now: not connected.")
            return False
        self._expect_reply(line, NICK_ERRORS)
        return True

    def slash_topic(self, rest: str, line: str) -> bool:
        s = self._room_session()
        if not rest:
            if not s.request_topic(self.target):
                self.error("Could not ask for the topic right now.")
                return False
            self._show_topic = True
            return True
        limit = s.topiclen
        size = len(rest.encode("utf-8"))
        if limit is not None and size > limit:
            self.error(f"That topic is too long for this server: it keeps at most {limit} "
                       f"bytes and yours has {size}. Shorten it and press Enter again.")
            return False
        if not s.set_topic(rest, self.target):
            self.error("The topic was not set: not connected to the room.")
            return False
        self._expect_reply(line, {P.ERR_CHANOPRIVSNEEDED, P.ERR_NOTONCHANNEL,
                                  P.ERR_NOSUCHCHANNEL})
        return True

    def slash_names(self, rest: str, line: str) -> bool:
        if not self._room_session().request_names(self.target):
            self.error("Could not ask for the member list right now.")
            return False
        self._show_names = True
        return True

    def _expect_reply(self, line: str, refusals: Iterable[str]) -> None:
        """Remember ``line``: if the server refuses it, it goes back into the message field."""
        self._expect = (line, frozenset(refusals), time.monotonic())

    def _refused(self, code: str) -> None:
        expect = self._expect
        if expect is None or code not in expect[1]:
            return
        self._expect = None
        if time.monotonic() - expect[2] <= self.REPLY_WINDOW:
            self.chat.restore_entry(expect[0])

    def _show_security(self) -> None:
        if self._tls:
            self.chat.set_security(f"Encrypted ({self._tls})", True)
        elif self._tls_offer:
            self.chat.set_security(f"Not encrypted: the server offers TLS on port "
                                   f"{self._tls_offer}", False)
        else:
            self.chat.set_security("Not encrypted", False)

    def refresh_names(self) -> None:
        conv = self.convs.current
        if self.session is not None and conv is not None and not conv.private:
            self.session.request_names(conv.name)

    def back_to_login(self) -> None:
        """The banner's Back to Login: leave, keeping a remembered password (not a log out)."""
        self.leave_chat(log_out=False)

    def log_in_instead(self) -> None:
        """The registered-name banner's Log In: leave, and offer the login to that name."""
        claim = self._claim
        s = self.session
        name = claim[0] if claim is not None else (s.nick if s is not None else "")
        self.leave_chat(log_out=False)
        self.login.set_mode(AccountMode.LOGIN.value)
        if name:
            self.login.set_name(name)
        self.login.show_status(f"Enter the password of {name} to log in to it, then press "
                               f"Log In and Join." if name else "Log in to your account.")
        self.login.focus_field("password" if name else "name", select=True)

    def leave_chat(self, log_out: bool = True) -> None:
        """Leave the room, back to the login view (join again, also under another name).

        Logged in to an account the button says Log Out, and does: a password remembered
        for the account is deleted, and the form's password field cleared.
        """
        s = self.session
        nick = s.nick if s is not None else ""
        attempt = self._attempt
        forgotten = False
        if log_out and self._account is not None and attempt is not None:
            forgotten = self._forget(attempt.host, attempt.port, attempt.name)
            self._prefilled = None
            self.login.set_password("", remembered=False)
        if self._account is not None and log_out:
            status = (f"You logged out of {self._account} and left {self.room}."
                      + (" Your password is no longer remembered on this computer."
                         if forgotten else ""))
        elif s is not None and s.in_room:
            status = (f"You left {self.room}. Press Join Chat to join again, under this "
                      f"name or another.")
        elif s is not None and s.state in ("joining", "joined"):
            status = (f"You were no longer in {self.room} and have left the server. Press "
                      f"Join Chat to join again, under this name or another.")
        else:
            status = (f"You were disconnected from {self.room} (the connection had been "
                      f"lost). Press Join Chat to connect again, under this name or another.")
        question = self._question
        self._retire(leave=True)
        self._account = None
        self._claim = None
        if nick and self._attempt is None:  # an account's name stays as typed
            self.login.set_name(nick)
        self._show_login(status=status)
        if question is not None:  # a reconnect met a certificate we must ask about
            self._ask_about_certificate(question)

    def request_exit(self) -> None:
        """Ask for Exit Program from a signal handler: the next tick of the event loop runs
        it (a handler must not touch widgets or raise into Tk, which would swallow it)."""
        self.exit_requested = True

    def exit_program(self, reason: str = QUIT_REASON) -> None:
        """QUIT with ``reason``, close every connection, join the threads, close the window."""
        if self.phase == "closed":
            return
        self.phase = "closed"
        for job in self._jobs.values():  # transfers stop within one chunk
            job.cancel.set()
        self._save_geometry()
        if self._after_id is not None:
            self.window.cancel(self._after_id)
            self._after_id = None
        self.window.hide()  # the window goes at once; saying goodbye takes a moment
        sessions = list(self.retired)
        if self.session is not None:
            self.session.quit(reason)
            sessions.insert(0, self.session)
            self.session = None
        close_sessions(sessions, timeout=2.0)
        self.retired.clear()
        self.window.destroy()

    # --- lines in the view ------------------------------------------------------------

    def own_line(self, text: str, *, action: bool = False, to: str | None = None,
                 conv: Conversation | None = None) -> None:
        """Our line, shown at once (a server without echo-message never sends it back)."""
        nick = self.session.nick if self.session is not None else "you"
        now = time.time()
        target = conv or self.convs.current
        if target is not None and target.pane in self.chat.panes:
            self.chat.pane(target.pane).jump_to_bottom()  # what you said: in view
        self._add_row(now, lines.message(now, nick, text, own=True, action=action, to=to,
                                         filehost=self._filehost()), conv)
        self.chat.flush()

    def event_line(self, text: str, ts: float | None = None,
                   conv: Conversation | None = None) -> None:
        when = time.time() if ts is None else ts
        self._add_row(when, (lines.event(text, when), ()), conv)

    def _add_row(self, ts: float, row: lines.Row | None,
                 conv: Conversation | None = None) -> None:
        """A line at the end of ``conv``'s log (the one in view by default), after a day
        line if the date has changed."""
        if row is None:
            return
        conv = conv or self.convs.current
        if conv is None:
            self.chat.add(*row, key="")
            return
        today = lines.day_of(ts)
        if conv.bottom_day is not None and today != conv.bottom_day:
            self.chat.add(lines.day(ts), key=conv.pane)
        conv.bottom_day = today
        self.chat.add(*row, key=conv.pane)

    def _arrived(self, conv: Conversation, ts: float, row: lines.Row | None, *,
                 mention: bool = False) -> None:
        """Someone's line in ``conv``: counted as unread unless it is in view (with the
        window focused), marked where the unread lines start; a mention (or any private
        line) rings and marks the window when it is not focused."""
        if row is None:
            return
        away = conv is not self.convs.current or not self._has_focus
        if away:
            if not conv.unread:
                self.chat.pane(conv.pane).add_unread_rule(lines.unread_rule())
            conv.unread += 1
            if mention or conv.private:
                conv.mentioned += 1
            self._list_stale = True
        if (mention or conv.private) and not self._has_focus:
            self._alert()
        conv.last_time = max(conv.last_time, ts)
        self._add_row(ts, row, conv)

    def _alert(self) -> None:
        """The bell and the window's urgency hint, for a mention while it is not focused;
        the bell at most every ALERT_EVERY seconds, so a busy talk does not keep ringing."""
        now = time.monotonic()
        if now - self._alerted >= self.ALERT_EVERY:
            self._alerted = now
            self.window.bell()
        self.window.set_urgent(True)

    # --- history ----------------------------------------------------------------------

    def older_wanted(self) -> None:
        """The log is scrolled to its top: ask for the page of history before it.  Not
        once lines have gone off the top to keep the scrollback bounded (the page would
        leave a gap), nor while the session has nothing to ask for."""
        s, conv = self.session, self.convs.current
        if (self.phase == "chat" and s is not None and conv is not None and not conv.private
                and not self.chat.trimmed and self.chat.line_count() < self.chat.scrollback):
            s.load_older(conv.name)

    def _show_history(self, ev: History, conv: Conversation) -> None:
        me = self.session.nick if self.session is not None else ""
        entries = ev.entries
        if ev.kind is HistoryKind.MISSED:  # our own going and coming back says nothing new
            entries = tuple(e for e in entries if not (
                isinstance(e, (UserJoined, UserLeft, UserQuit))
                and self._fold(e.nick) == self._fold(me)))
        rows = [(e.time, row) for e in entries
                if (row := lines.render(e, me=me, filehost=self._filehost())) is not None]
        if ev.kind is HistoryKind.MISSED:
            self._show_missed(rows, ev.more, conv)
            return
        if not rows and not (ev.start and ev.kind is HistoryKind.OLDER):
            return  # a room with no history: nothing to set apart
        block = lines.dated(lines.as_history(rows), None)
        if ev.start:
            block.insert(0, (lines.start_of(conv.name), ()))
        if ev.kind is HistoryKind.LATEST:
            block.append((lines.new_messages(), ()))
            self.chat.prepend(block, key=conv.pane)
            if conv.bottom_day is None and rows:
                conv.bottom_day = lines.day_of(rows[-1][0])
        else:
            # The first line shown is the day line of the oldest line; if this page ends
            # on that day, the page's own day line takes its place.
            same_day = bool(rows) and lines.day_of(rows[-1][0]) == conv.top_day
            self.chat.prepend(block, drop_first=same_day, key=conv.pane)
        if rows:
            conv.top_day = lines.day_of(rows[0][0])

    def _show_missed(self, rows: list[tuple[float, lines.Row]], more: bool,
                     conv: Conversation) -> None:
        """What was said while we were disconnected, at the end (before the live lines)."""
        if rows and not conv.missed_shown:
            conv.missed_shown = True
            self.chat.add(lines.missed(), key=conv.pane)
        for ts, row in rows:
            self._add_row(ts, row, conv)
        if more:
            self.chat.add(lines.missed_more(), key=conv.pane)

    def info(self, text: str) -> None:
        self.chat.add(lines.plain(text, "info"))
        self.chat.flush()

    def error(self, text: str) -> None:
        self.chat.add(lines.plain(text, "error"))
        self.chat.flush()

    # --- the event loop ---------------------------------------------------------------

    def _poll(self) -> None:
        """One tick: handle a batch of events, then schedule the next tick, always."""
        self._after_id = None
        busy = False
        try:
            busy = self._tick()
        except Exception:
            log.exception("chat window: error in the event loop")
        finally:
            if self.phase != "closed":
                self._after_id = self.window.after(1 if busy else self.poll_ms, self._poll)

    def _tick(self) -> bool:
        if self.exit_requested:
            self.exit_program()
            return False
        s = self.session
        handled = 0
        focused = self.window.focused()
        self._focus_changed(focused)
        self._has_focus = focused
        while s is not None and handled < self.batch and self.session is s:
            try:
                ev = s.events.get_nowait()
            except queue.Empty:
                break
            handled += 1
            try:
                self._handle(ev)
            except Exception:
                log.exception("chat window: error handling %s", type(ev).__name__)
            if self.phase == "closed":
                return False
        if self._members is not None:
            members, self._members = self._members, None
            self.chat.set_members(members, self._is_away)
        self._drain_jobs()
        conv = self.convs.current
        if (self._has_focus and conv is not None and self.phase == "chat"
                and time.monotonic() - self._read_at >= self.READ_EVERY):
            self._mark_read(conv)
        if self._list_stale and self.phase == "chat":
            self._refresh_list()
        self.chat.flush()
        self._countdown()
        self._claim_countdown()
        self.retired = [r for r in self.retired if r.alive]
        self._update_title()
        return self.session is not None and not self.session.events.empty()

    def _set_members(self, conv: Conversation | None, members: tuple[str, ...]) -> None:
        """``conv``'s members; shown at the end of this tick if it is in view (only the
        newest snapshot counts)."""
        if conv is None:
            return
        conv.members = members
        if conv is self.convs.current:
            self._members = members

    def _countdown(self) -> None:
        if self._retry is None:
            return
        when, attempt, name_in_use = self._retry
        left = math.ceil(when - time.monotonic())
        if left > 0:
            wait = f"in {left} s"
        else:
            wait = "now"
        if self.phase == "chat":
            if name_in_use:
                text = (f"Your name is in use on the server. Trying again {wait} (attempt "
                        f"{attempt})… or go Back to Login and pick another name.")
            else:
                text = f"Connection lost. Reconnecting {wait} (attempt {attempt})…"
            if not self.chat.showing_connection(text):
                self.chat.set_connection(text)
        elif self.phase == "connecting":
            self.login.show_status(f"Could not connect. Trying again {wait}…")

    def _claim_countdown(self) -> None:
        """The registered-name banner, counting down to the server's rename."""
        if self.phase != "chat":
            return
        if self._claim is None:
            if self.chat.claim_showing():
                self.chat.set_claim(None)
            return
        nick, deadline = self._claim
        self.chat.set_claim(lines.claim_countdown(nick, math.ceil(deadline - time.monotonic())))

    def _handle(self, ev: Event) -> None:
        if self.phase == "connecting":
            self._handle_login(ev)
        elif self.phase == "chat":
            self._handle_chat(ev)

    def _handle_login(self, ev: Event) -> None:
        match ev:
            case LoginFailed(kind=kind, message=message):
                self._retire()
                self._account_refused(kind)
                self._show_login(error=message,
                                 focus=ev.field or FIELD_AT_FAULT.get(kind, "name"))
                if kind in CERT_KINDS and ev.fingerprint:
                    self._ask_about_certificate(ev)
            case LoggedIn(account=account, created=created):
                self._logged_in(ev)
                if created:
                    self._early.append(f"Your account {account} was created: from now on, log "
                                       f"in to it with its password.")
                done = "Account created" if created else "Logged in"
                self.login.show_status(f"{done}: you are {account}. Joining {self.room}…")
            case RenameWarning(nick=nick, deadline=deadline):
                self._claim = (nick, deadline)
            case Registered(nick=nick, tls=tls):
                self._retry = None
                self._tls = tls
                if self._account is None:
                    self.login.show_status(f"Connected as {nick}. Joining {self.room}…")
            case Notice(text=text, tls_port=offer):
                self._early.append(text)
                self._tls_offer = offer or self._tls_offer
            case Reconnecting(attempt=n, delay=delay, name_in_use=name_in_use):
                self._retry = (time.monotonic() + delay, n, name_in_use)
            case Joined(room=room, nick=nick):
                self._show_chat(nick, room)
                self._joined(room, nick, rejoined=False, first=True)
            case Left(refused=True, reason=reason):  # another remembered room: said later
                self._early.append(reason)
            case Closed():
                self._retire()
                self._show_login(error="The connection ended before you could join. "
                                       "Try again.")

    def _handle_chat(self, ev: Event) -> None:
        chat = self.chat
        match ev:
            case Message():
                self._message(ev)
            case Echo(message=said):
                self._message(said)
            case History(room=room):
                conv = self._room_conv(room)
                if conv is not None:
                    self._show_history(ev, conv)
            case (UserJoined(room=room, members=members) | UserLeft(room=room, members=members)
                  | UserQuit(room=room, members=members)):
                conv = self._room_conv(room)
                if conv is not None:
                    self._add_row(ev.time, lines.render(ev), conv)
                    self._set_members(conv, members)
            case UserRenamed(is_self=is_self, members=members):
                self._renamed(ev)
                if is_self:
                    self._expect = None
                    self._claim = None
                self._set_members(self._room_conv(ev.room), members)
            case RenameWarning(nick=nick, deadline=deadline):
                self._claim = (nick, deadline)
            case LoggedIn(account=account):  # logged in again after a reconnect
                self._account = account
                chat.set_account(account)
            case Names(room=room, members=members):
                self._set_members(self._room_conv(room), members)
                if self._show_names:
                    self._show_names = False
                    self.info(f"In {room} ({len(members)}): " + ", ".join(members))
            case Topic(room=room, text=text, by=by):
                conv = self._room_conv(room)
                if conv is not None:
                    conv.topic = text
                    if conv is self.convs.current:
                        chat.set_topic(text)
                    if by:
                        self._add_row(ev.time, lines.render(ev), conv)
                if not by and self._show_topic:
                    self._show_topic = False
                    here = conv is not None and conv is self.convs.current
                    where = "" if here else f" of {room}"
                    self.info(f"Topic{where}: {text}" if text else
                              f"No topic is set in {room}.")
            case Notice(text=text, tls_port=offer, room=room):
                conv = self._room_conv(room)
                chat.add(lines.plain(text, "notice"), key=conv.pane if conv else None)
                if offer:
                    self._tls_offer = offer
                    self._show_security()
            case Registered(tls=tls):  # connected again (the same way: the session's choice)
                self._tls = tls
                self._show_security()
            case ServerError(code=code, text=text):
                chat.add(lines.plain(text, "error"))
                self._refused(code)
            case Sending(target=target, sent=sent, total=total, gave_up=gave_up):
                if gave_up:
                    self.error(lines.paste_cut(target, sent, total))
                    self._sending = None
                elif sent == 1:
                    self.info(lines.paste_started(target, total))
                    self._sending = (sent, total)
                elif sent == total:
                    self.info(lines.paste_done(target, total))
                    self._sending = None
                else:
                    self._sending = (sent, total)
                self._update_title()
            case Away(nick=nick, text=text):
                talk = self.convs.get(nick)
                chat.add(lines.plain(lines.away(nick, text), "info"),
                         key=talk.pane if talk is not None and talk.private else None)
            case AwayChanged(away=away):
                self.info(lines.away_changed(away))
            case Whois(nick=nick, facts=facts):
                self.info(lines.whois_header(nick, facts))
                for fact in facts:
                    self.info(f"    {fact}")
            case ReadMarker():
                self._read_elsewhere(ev)
            case BanList(room=where, bans=bans):
                views.show_bans(self.master, where, bans, self._unbanner(where))
            case AwayStates(states=states):
                for nick, away in states:
                    key = self._fold(nick)
                    if away:
                        self._away.add(key)
                    else:
                        self._away.discard(key)
                conv = self.convs.current
                if conv is not None and not conv.private:
                    self._members = conv.members  # redrawn, greyed, at the end of the tick
            case Presence(nick=nick, online=online):
                text = (f"{nick} is online now." if online else f"{nick} went offline.")
                talk = self.convs.get(nick)
                if talk is not None and talk.private:
                    chat.add(lines.plain(text, "info"), key=talk.pane)
                if talk is not self.convs.current:
                    self.info(text)
            case OperChanged(oper=oper):
                self.info("You are a server operator now: the member menu has Disconnect "
                          "and Ban from the server." if oper else
                          "You are no longer a server operator.")
            case RoomList(rooms=rooms, complete=complete):
                if self.join_dialog is not None and self.join_dialog.alive():
                    self.join_dialog.set_rooms(rooms, complete)
            case Joined(room=room, nick=nick, rejoined=rejoined):
                self._joined(room, nick, rejoined)
            case Left():
                self._left(ev)
            case Disconnected(reason=reason, will_retry=retry):
                self._members = None
                self._claim = None  # the server forgets its timer with the connection
                self._show_names = self._show_topic = False
                for conv in self.convs:
                    if not conv.private:
                        conv.joined, conv.members, conv.lost = False, (), True
                self._list_stale = True
                chat.set_offline()
                chat.refresh_button.configure(state="disabled")
                for conv in self.convs:
                    chat.add(lines.plain(lines.connection_lost(reason, retry), "error"),
                             key=conv.pane)
                if not len(self.convs):
                    chat.add(lines.plain(lines.connection_lost(reason, retry), "error"))
                chat.set_connection("Connection lost. Reconnecting…" if retry
                                    else "Connection lost.")
            case Reconnecting(attempt=n, delay=delay, name_in_use=name_in_use):
                self._retry = (time.monotonic() + delay, n, name_in_use)
            case LoginFailed(kind=kind, message=message):
                # Reconnecting, the server turned us away for good: say why, offer the login
                # (which asks about a certificate that changed).
                if kind in CERT_KINDS and ev.fingerprint:
                    self._question = ev
                    message += " Press Back to Login to see it."
                self._account_refused(kind)
                self._members = None
                self._retry = None
                self._final = True
                chat.set_offline()
                chat.add(lines.plain(message, "error"))
                chat.set_connection(message)
            case Closed():
                self._retry = None
                if not self._final:
                    chat.set_connection("Disconnected. Go back to the login to join again.")

    def _message(self, ev: Message) -> None:
        """A message (or our own, echoed) into its room, or its private conversation."""
        me = self.session.nick if self.session is not None else ""
        fh = self._filehost()
        if not ev.private:
            conv = self._room_conv(ev.room)
            if conv is None:
                return
            row = lines.render(ev, me=me, filehost=fh)
            if ev.own:
                self.chat.pane(conv.pane).jump_to_bottom()  # what you said: in view
                self._add_row(ev.time, row, conv)
            else:
                self._arrived(conv, ev.time, row, mention=lines.mentions(ev.text, me))
            self._preview_links(conv, ev.text)
            return
        other = ev.target if ev.own else ev.sender
        talk = self.convs.get(other)
        if ev.notice and (talk is None or not talk.private):
            # A notice from a person (a service, a bot's answer): where we are, as before.
            self._add_row(ev.time, lines.render(ev, me=me, filehost=fh))
            return
        if talk is None:
            talk = self.open_private(other)
        elif not talk.private:
            return  # a person named like one of our rooms: cannot be
        row = lines.render(ev, me=me, conversation=True, filehost=fh)
        if ev.own:
            self._add_row(ev.time, row, talk)
            self._preview_links(talk, ev.text)
            here = self.convs.current
            if here is not None and here is not talk:  # /msg from a room: say it there too
                self._add_row(ev.time, lines.render(ev, me=me, filehost=fh), here)
        else:
            self._arrived(talk, ev.time, row, mention=True)
            self._preview_links(talk, ev.text)

    def _renamed(self, ev: UserRenamed) -> None:
        conv = self._room_conv(ev.room)
        if ev.forced:  # the server took a registered name back: say it plainly
            self.chat.add(lines.plain(lines.renamed_to_guest(ev.old, ev.new), "notice"),
                          key=conv.pane if conv is not None else None)
        elif conv is not None:
            self._add_row(ev.time, lines.render(ev), conv)
        if not ev.is_self:
            talk = self.convs.rename(ev.old, ev.new)
            if talk is not None:  # the private conversation follows them
                self._add_row(ev.time, (lines.event(lines.membership(ev), ev.time), ()), talk)
                if talk is self.convs.current:
                    self._show_side(talk)
                self._list_stale = True

    def _joined(self, room: str, nick: str, rejoined: bool, first: bool = False) -> None:
        """We are in ``room``: a new entry (shown if the user asked for it), or back."""
        conv = self._room_conv(room)
        new = conv is None
        conv = self._open(room)
        conv.joined = True
        self._retry = None
        self.chat.set_connection(None)
        if rejoined and not new:
            conv.topic = ""  # the 332 that follows brings the topic, if there is one
            conv.missed_shown = False
            if conv.lost:
                self.event_line(f"Reconnected: you are back in {room} as {nick}", conv=conv)
            else:
                self.event_line(f"You joined {room} again", conv=conv)
            conv.lost = False
        elif not first:
            self.event_line(f"You joined {room}", conv=conv)
        if self._switch_to is not None and self._switch_to == self._fold(room):
            self._switch_to = None
            self._select(conv)
        elif conv is self.convs.current:
            self._show_side(conv)
        self._list_stale = True
        if new:
            self._remember_rooms()

    def _left(self, ev: Left) -> None:
        """We are out of a room: we left it (its entry goes), could not get in, or were
        removed (the entry stays, greyed, to join again)."""
        conv = self._room_conv(ev.room)
        if ev.parted:
            if conv is not None:
                self._close(conv)
            self.info(f"You left {ev.room}.")
            self._remember_rooms()
            return
        if ev.refused:
            if self._switch_to == self._fold(ev.room):
                self._switch_to = None
            if conv is not None:  # we were in it before a reconnect
                conv.joined, conv.members = False, ()
                self.chat.add(lines.plain(ev.reason, "error"), key=conv.pane)
                if conv is self.convs.current:
                    self._show_side(conv)
                else:
                    self.error(ev.reason)
            else:
                self.error(ev.reason)
            self._list_stale = True
            self._remember_rooms()
            return
        if conv is None:
            return
        conv.joined, conv.members = False, ()
        self._list_stale = True
        self.chat.add(lines.plain(lines.removed(conv.name, ev.kicked_by, ev.reason), "error"),
                      key=conv.pane)
        self.chat.add(lines.plain(f"Type /join to join {conv.name} again, or Leave to close "
                                  f"it.", "info"), key=conv.pane)
        self._remember_rooms()  # not joined again at the next start, unless asked
        if conv is self.convs.current:
            self._show_names = self._show_topic = False
            self._show_side(conv)

    def _account_refused(self, kind: LoginKind) -> None:
        """A wrong password is not worth remembering: delete it (the box stays ticked, so
        the right one is kept once it is accepted)."""
        attempt = self._attempt
        if (kind is LoginKind.WRONG_PASSWORD and attempt is not None
                and self._forget(attempt.host, attempt.port, attempt.name)):
            self._prefilled = None

    # --- title and focus --------------------------------------------------------------

    def _on_focus(self) -> None:
        """The window got the focus: what is in view is read, and it needs no attention."""
        if self.phase != "chat" or not self.window.focused():
            return
        conv = self.convs.current
        if conv is not None and (conv.unread or conv.mentioned):
            conv.unread = conv.mentioned = 0
            self._list_stale = True
        self.window.set_urgent(False)
        self._update_title()

    def _focus_changed(self, focused: bool) -> None:
        """Once per tick: leaving the window starts a new "new messages" mark in view, so
        coming back shows what came meanwhile."""
        if focused == self._has_focus:
            return
        conv = self.convs.current
        if not focused and conv is not None and conv.pane in self.chat.panes:
            self.chat.pane(conv.pane).drop_unread_rule()

    def _update_title(self) -> None:
        unread, mentioned = self.convs.totals()
        if self.phase == "chat" and self.session is not None:
            title = f"{self.target} — {self.session.nick} — Chat"
        else:
            title = "Chat — join a room"
            unread = mentioned = 0
        if mentioned:
            title = f"({unread}, {mentioned} for you) {title}"
        elif unread:
            title = f"({unread}) {title}"
        if self._sending is not None:
            title = f"[sending {self._sending[0]}/{self._sending[1]}] {title}"
        if title != self._title:
            self._title = title
            self.window.set_title(title)


# Every handler the slash table names is a method here (a typo fails at import).
assert all(callable(getattr(ChatApp, c.handler, None)) for c in slash.COMMANDS)


# --- command line ------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The client's command line (``--help`` lists it)."""
    p = argparse.ArgumentParser(
        description="Desktop chat client (speaks IRC).",
        epilog="The login form starts with what worked last time (the server, port, name "
               "and TLS choice, kept in the config directory with the rooms you were in "
               "and the window size); the options above take precedence.")
    p.add_argument("--host", default=None,
                   help=f"server host name or address (default: the last one, or "
                        f"{DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=None,
                   help=f"server TCP port (default: the last one, or {DEFAULT_PORT}, or "
                        f"{TLS_PORT} with --tls)")
    p.add_argument("--tls", action="store_true", default=None,
                   help="connect with TLS (encrypted); ticks Use TLS on the login view")
    p.add_argument("--cafile", metavar="FILE", default=None,
                   help="also trust the CA certificates in FILE (PEM), e.g. your own CA")
    p.add_argument("--name", default=None, help="your name, filled in on the login view")
    p.add_argument("--room", default=DEFAULT_ROOM,
                   help=f"the room to join first (default: {DEFAULT_ROOM}; the rooms you "
                        f"were in last time are joined too)")
    p.add_argument("--profile", metavar="NAME", default=None,
                   help="keep a separate set of settings, rooms, trusted certificates and "
                        "remembered passwords under NAME (e.g. work, home)")
    a = p.parse_args(argv)
    if a.port is not None and not 1 <= a.port <= 65535:
        p.error("--port must be 1-65535")
    if not a.room.startswith("#"):
        a.room = "#" + a.room
    if not P.valid_channel(a.room):
        p.error(f"--room {a.room!r} is not a valid room name (e.g. #chat)")
    if a.profile is not None:
        try:
            set_profile(a.profile)
        except ValueError as exc:
            p.error(f"--profile: {exc}")
    return a


def form_values(args: argparse.Namespace, saved: Saved) -> tuple[str, int, str, bool | None]:
    """(host, port, name, tls) for the login form: the command line, else what worked
    last time, else the defaults."""
    host = args.host or saved.host or DEFAULT_HOST
    tls = args.tls if args.tls is not None else (saved.tls if args.host is None else None)
    if args.port is not None:
        port = args.port
    elif saved.port is not None and args.host is None and args.tls is None:
        port = saved.port
    else:
        port = TLS_PORT if args.tls else DEFAULT_PORT
    name = args.name if args.name is not None else saved.name
    return host, port, name, True if tls else None


def main(argv: list[str] | None = None) -> int:
    """The ``chat-client`` command (and ``python client.py``): one window until it closes."""
    args = parse_args(argv)
    settings = Settings()
    saved = settings.load()
    host, port, name, tls = form_values(args, saved)
    try:
        root = views.open_root(saved.geometry or DEFAULT_SIZE)
    except views.NoWindow as exc:
        print(f"client.py: {exc}", file=sys.stderr)
        return 1
    app = ChatApp(root, host, port, name, args.room, tls=tls, cafile=args.cafile,
                  settings=settings)
    if saved.mode == "login" and name and args.name is None:
        app.login.set_mode(AccountMode.LOGIN.value)

    def on_signal(signum: int, frame: object) -> None:
        # Runs in the main thread between bytecodes, so within some Tk callback: only set
        # a flag (an exception here would be swallowed by Tkinter).  The app's poll tick,
        # every 50 ms, gives Python the chance to run this and then does Exit Program.
        app.request_exit()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        app.window.mainloop()
    except KeyboardInterrupt:
        pass
    app.exit_program()
    return 0
