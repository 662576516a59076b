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
import queue
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from chatroom import lines, slash, views
from chatroom import protocol as P
from chatroom.events import (
    Away,
    AwayChanged,
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
    Reconnecting,
    Registered,
    RenameWarning,
    Sending,
    ServerError,
    Topic,
    UserJoined,
    UserLeft,
    UserQuit,
    UserRenamed,
    Whois,
)
from chatroom.pins import PinStore
from chatroom.secrets_store import PasswordStore
from chatroom.serverinfo import ServerInfo
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
MIN_SIZE = (560, 480)  # the login view's longest form (create account) fits


def paste_seconds(count: int, burst: int, rate: float) -> int:
    """How long ``count`` messages take at ``burst`` at once, then ``rate`` a second."""
    return max(0, round((count - burst) / rate)) if rate > 0 else 0


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

    def __init__(self, master: views.Toplevel, host: str = DEFAULT_HOST,
                 port: int = DEFAULT_PORT, name: str = "", room: str = DEFAULT_ROOM, *,
                 poll_ms: int = 50, batch: int = 300, scrollback: int = 5000,
                 session_options: dict[str, object] | None = None, tls: bool | None = None,
                 cafile: str | None = None, pins: PinStore | None = None,
                 passwords: PasswordStore | None = None) -> None:
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
        self.unread = 0
        self.exit_requested = False  # set by the signal handler; the next tick exits
        self._title = ""
        self._show_names = False
        self._show_topic = False
        self._has_focus = False
        self._early: deque[str] = deque(maxlen=50)  # server notices (MOTD) before the chat
        self._members: tuple[str, ...] | None = None  # newest snapshot not yet shown
        self._retry: tuple[float, int, bool] | None = None  # (when, attempt, name in use)
        self._lost = False  # the connection dropped: the next Joined is a reconnect
        self._final = False  # the session told us it gave up (LoginFailed in the chat)
        self._expect: tuple[str, frozenset[str], float] | None = None  # sent, refusals, when
        self._bottom_day: lines.Day | None = None  # local date of the last dated line
        self._top_day: lines.Day | None = None  # of the oldest history line shown
        self._missed_shown = False  # "While you were disconnected:" is up for this return
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
                                   self.log_in_instead, self.back_to_login)
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
        self.session = ChatSession(host, port, name, self.room, password or None, tls=tls,
                                   account=account, **options)  # type: ignore[arg-type]
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
        self.unread = 0
        self._retry = None
        self._claim = None
        self.login.focus_field(focus, select=bool(error))

    def _show_chat(self, nick: str) -> None:
        self.login.hide()
        self.chat.reset(self.room)
        self.chat.show()
        self.phase = "chat"
        self._members = None
        self._retry = None
        self._lost = self._final = False
        self._expect = None
        self._bottom_day = self._top_day = None
        self.chat.focus_entry()
        self._show_security()
        self.chat.set_account(self._account)
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
        self.info(f"You joined {self.room} as {nick}{who}. Type /help for commands.")
        if self._save_error:
            self.error(self._save_error)
            self._save_error = None

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
        pieces = s.pieces(self.room, body) if s is not None else []
        if s is not None and len(pieces) > PASTE_ASK and not self._paste_ok(s, len(pieces)):
            return False  # the text stays in the field
        if s is None or not s.send_message(body):
            self.error("Not connected to the room: the message was not sent.")
            return False
        self._expect_reply(text, {P.ERR_CANNOTSENDTOCHAN})
        if not s.echoes:  # else the server's echo shows it, with the server's time
            for piece in pieces:  # each as others get it: IRC has no multi-line message
                self.own_line(piece)
        return True

    def _paste_ok(self, s: ChatSession, count: int) -> bool:
        """Ask before many messages go at once: they take a while, and can't be undone."""
        seconds = paste_seconds(count, s.send_burst, s.send_rate)
        pace = (f" They go out {s.send_rate:g} a second after the first {s.send_burst}, so "
                f"the server takes them all: about {seconds} s." if seconds else "")
        return self.confirm("Send these lines?",
                            f"This sends {count} messages to {self.room}, one for each line "
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
        return self.session is not None and self.session.in_room

    def _not_in_room(self) -> None:
        self.error("Not connected to the room: try again when the connection is back.")

    def _room_session(self) -> ChatSession:
        """The session, for a handler that ``needs_room`` (checked before it runs)."""
        assert self.session is not None
        return self.session

    def slash_help(self, rest: str, line: str) -> bool:
        self.info("Commands:")
        self.chat.add_help(slash.HELP)
        self.chat.flush()
        return True

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
        s = self.session
        wanted = rest.split(" ", 1)[0]
        if wanted and s is not None and s.server_info.fold(wanted) != s.server_info.fold(
                self.room):
            # One room per window for now: say how to get there instead of pretending.
            self.error(f"This window shows one room, {self.room}. To go to {wanted}, press "
                       f"Leave Chat and enter {wanted} as the room on the login screen.")
            return False
        if s is not None and s.state == "joined" and not s.in_room:
            if not s.rejoin():
                self.error(f"Could not ask to join {self.room} right now.")
                return False
            self.info(f"Joining {self.room}…")
            return True
        if s is not None and s.in_room:
            self.error(f"You are already in {self.room}.")
            return False
        self._not_in_room()
        return False

    def slash_me(self, rest: str, line: str) -> bool:
        if not rest:
            self.error("Usage: /me <action>, e.g. /me waves")
            return False
        if not self._room_session().send_action(rest):
            self.error("The action was not sent.")
            return False
        self._expect_reply(line, {P.ERR_CANNOTSENDTOCHAN})
        if not self._room_session().echoes:
            self.own_line(rest, action=True)
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
            self.own_line(text, to=nick)
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
            if not s.request_topic():
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
        if not s.set_topic(rest):
            self.error("The topic was not set: not connected to the room.")
            return False
        self._expect_reply(line, {P.ERR_CHANOPRIVSNEEDED, P.ERR_NOTONCHANNEL,
                                  P.ERR_NOSUCHCHANNEL})
        return True

    def slash_names(self, rest: str, line: str) -> bool:
        if not self._room_session().request_names():
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
        if self.session is not None:
            self.session.request_names()

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

    def own_line(self, text: str, *, action: bool = False, to: str | None = None) -> None:
        """Our line, shown at once (a server without echo-message never sends it back)."""
        nick = self.session.nick if self.session is not None else "you"
        now = time.time()
        self._add_row(now, lines.message(now, nick, text, own=True, action=action, to=to))
        self.chat.flush()

    def event_line(self, text: str, ts: float | None = None) -> None:
        when = time.time() if ts is None else ts
        self._add_row(when, (lines.event(text, when), ()))

    def _add_row(self, ts: float, row: lines.Row | None) -> None:
        """A line at the end of the log, after a day line if the date has changed."""
        if row is None:
            return
        today = lines.day_of(ts)
        if self._bottom_day is not None and today != self._bottom_day:
            self.chat.add(lines.day(ts))
        self._bottom_day = today
        self.chat.add(*row)

    # --- history ----------------------------------------------------------------------

    def older_wanted(self) -> None:
        """The log is scrolled to its top: ask for the page of history before it.  Not
        once lines have gone off the top to keep the scrollback bounded (the page would
        leave a gap), nor while the session has nothing to ask for."""
        s = self.session
        if (self.phase == "chat" and s is not None and not self.chat.trimmed
                and self.chat.line_count() < self.chat.scrollback):
            s.load_older()

    def _show_history(self, ev: History) -> None:
        rows = [(e.time, row) for e in ev.entries if (row := lines.render(e)) is not None]
        if ev.kind is HistoryKind.MISSED:
            self._show_missed(rows, ev.more)
            return
        if not rows and not (ev.start and ev.kind is HistoryKind.OLDER):
            return  # a room with no history: nothing to set apart
        block = lines.dated(lines.as_history(rows), None)
        if ev.start:
            block.insert(0, (lines.start_of(self.room), ()))
        if ev.kind is HistoryKind.LATEST:
            block.append((lines.new_messages(), ()))
            self.chat.prepend(block)
            if self._bottom_day is None:
                self._bottom_day = lines.day_of(rows[-1][0])
        else:
            # The first line shown is the day line of the oldest line; if this page ends
            # on that day, the page's own day line takes its place.
            same_day = bool(rows) and lines.day_of(rows[-1][0]) == self._top_day
            self.chat.prepend(block, drop_first=same_day)
        if rows:
            self._top_day = lines.day_of(rows[0][0])

    def _show_missed(self, rows: list[tuple[float, lines.Row]], more: bool) -> None:
        """What was said while we were disconnected, at the end (before the live lines)."""
        if rows and not self._missed_shown:
            self._missed_shown = True
            self.chat.add(lines.missed())
        for ts, row in rows:
            self._add_row(ts, row)
        if more:
            self.chat.add(lines.missed_more())

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
        self._has_focus = self.window.focused()
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
            self.chat.set_members(members)
        self.chat.flush()
        self._countdown()
        self._claim_countdown()
        self.retired = [r for r in self.retired if r.alive]
        self._update_title()
        return self.session is not None and not self.session.events.empty()

    def _set_members(self, members: tuple[str, ...]) -> None:
        """Show ``members`` at the end of this tick (only the newest snapshot counts)."""
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
            case Joined(nick=nick):
                self._show_chat(nick)
            case Closed():
                self._retire()
                self._show_login(error="The connection ended before you could join. "
                                       "Try again.")

    def _handle_chat(self, ev: Event) -> None:
        chat = self.chat
        match ev:
            case Message():
                self._add_row(ev.time, lines.render(ev))
                if not self._has_focus:
                    self.unread += 1
            case Echo(message=said):
                self._add_row(said.time, lines.render(said))
            case History():
                self._show_history(ev)
            case (UserJoined(members=members) | UserLeft(members=members)
                  | UserQuit(members=members)):
                self._add_row(ev.time, lines.render(ev))
                self._set_members(members)
            case UserRenamed(is_self=is_self, members=members, forced=forced):
                if forced:  # the server took a registered name back: say it plainly
                    chat.add(lines.plain(lines.renamed_to_guest(ev.old, ev.new), "notice"))
                else:
                    self._add_row(ev.time, lines.render(ev))
                if is_self:
                    self._expect = None
                    self._claim = None
                self._set_members(members)
            case RenameWarning(nick=nick, deadline=deadline):
                self._claim = (nick, deadline)
            case LoggedIn(account=account):  # logged in again after a reconnect
                self._account = account
                chat.set_account(account)
            case Names(room=room, members=members):
                fold = (self.session.server_info if self.session else ServerInfo()).fold
                if fold(room) == fold(self.room):
                    self._set_members(members)
                if self._show_names:
                    self._show_names = False
                    self.info(f"In {room} ({len(members)}): " + ", ".join(members))
            case Topic(text=text, by=by):
                chat.set_topic(text)
                if by:
                    self._add_row(ev.time, lines.render(ev))
                elif self._show_topic:
                    self._show_topic = False
                    self.info(f"Topic: {text}" if text else "No topic is set.")
            case Notice(text=text, tls_port=offer):
                chat.add(lines.plain(text, "notice"))
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
                self.info(lines.away(nick, text))
            case AwayChanged(away=away):
                self.info(lines.away_changed(away))
            case Whois(nick=nick, facts=facts):
                self.info(lines.whois_header(nick, facts))
                for fact in facts:
                    self.info(f"    {fact}")
            case Joined(nick=nick, rejoined=True):
                chat.set_connection(None)
                chat.set_topic("")  # the 332 that follows brings the topic, if there is one
                self._retry = None
                self._missed_shown = False
                if self._lost:
                    self.event_line(f"Reconnected: you are back in {self.room} as {nick}")
                else:
                    self.event_line(f"You joined {self.room} again")
                self._lost = False
            case Left(reason=reason, kicked_by=by):
                self._members = None
                chat.set_offline("not in the room")  # connected, but nobody is shown
                self._show_names = self._show_topic = False
                chat.add(lines.plain(lines.removed(self.room, by, reason), "error"))
                chat.set_connection(f"You are not in {self.room}. Type /join to join again.")
            case Disconnected(reason=reason, will_retry=retry):
                self._members = None
                self._lost = True
                self._claim = None  # the server forgets its timer with the connection
                self._show_names = self._show_topic = False
                chat.set_offline()
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

    def _account_refused(self, kind: LoginKind) -> None:
        """A wrong password is not worth remembering: delete it (the box stays ticked, so
        the right one is kept once it is accepted)."""
        attempt = self._attempt
        if (kind is LoginKind.WRONG_PASSWORD and attempt is not None
                and self._forget(attempt.host, attempt.port, attempt.name)):
            self._prefilled = None

    # --- title and focus --------------------------------------------------------------

    def _on_focus(self) -> None:
        if self.unread and self.window.focused():
            self.unread = 0
            self._update_title()

    def _update_title(self) -> None:
        if self.unread and self.window.focused():
            self.unread = 0
        if self.phase == "chat" and self.session is not None:
            title = f"{self.room} — {self.session.nick} — Chat"
        else:
            title = "Chat — join a room"
        if self.unread:
            title = f"({self.unread}) {title}"
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
    p = argparse.ArgumentParser(description="Desktop chat client (speaks IRC).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default=DEFAULT_HOST, help="server host name or address")
    p.add_argument("--port", type=int, default=argparse.SUPPRESS,
                   help=f"server TCP port (default: {DEFAULT_PORT}, or {TLS_PORT} with --tls)")
    p.add_argument("--tls", action="store_true",
                   help="connect with TLS (encrypted); ticks Use TLS on the login view")
    p.add_argument("--cafile", metavar="FILE", default=None,
                   help="also trust the CA certificates in FILE (PEM), e.g. your own CA")
    p.add_argument("--name", default="", help="your name, filled in on the login view")
    p.add_argument("--room", default=DEFAULT_ROOM, help="the room to join")
    a = p.parse_args(argv)
    if not hasattr(a, "port"):
        a.port = TLS_PORT if a.tls else DEFAULT_PORT
    if not a.room.startswith("#"):
        a.room = "#" + a.room
    if not P.valid_channel(a.room):
        p.error(f"--room {a.room!r} is not a valid room name (e.g. #chat)")
    if not 1 <= a.port <= 65535:
        p.error("--port must be 1-65535")
    return a


def main(argv: list[str] | None = None) -> int:
    """The ``chat-client`` command (and ``python client.py``): one window until it closes."""
    args = parse_args(argv)
    try:
        root = views.open_root("860x560")
    except views.NoWindow as exc:
        print(f"client.py: {exc}", file=sys.stderr)
        return 1
    app = ChatApp(root, args.host, args.port, args.name, args.room,
                  tls=True if args.tls else None, cafile=args.cafile)

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
