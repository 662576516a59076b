"""Accounts on the wire: SASL PLAIN, REGISTER and VERIFY, and who may keep which nick.

* **SASL** (IRCv3 sasl-3.1 and 3.2): ``AUTHENTICATE PLAIN``, the response in 400-byte
  chunks, ``*`` to abort, a retry after a failure, and re-authentication once registered.
  Numerics 900-908 carry exactly the spec's parameters (``*`` before a nick exists).
* **REGISTER** (draft/account-registration, ``before-connect``): the account is named for
  the current nick; success logs the connection in, as SASL would.
* **Nick protection**: a registered nick held by someone not logged in to it draws a NOTICE
  at once and, after ``nick_grace`` seconds, a rename to a guest name (the housekeeper's
  timer).  The owner takes the nick back from a guest at once: at registration if it logged
  in with SASL, or later by asking for it with NICK.

Passwords are hashed by the accounts store on the calling reader thread, never under the
registry lock, at most two at a time (the store's semaphore).  Failed logins are throttled
per connection and per account (:class:`~chatroom.accounts.Throttle`); successes never
count.  :func:`check_password` is that check alone; the file host's HTTP Basic logins use
it too, on their own threads.  A password is never logged, echoed or kept: it lives in this module's locals only.

Runs on the reader thread of the client that sent the line (and the housekeeper's, for the
grace rename).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import secrets
import time
from dataclasses import dataclass

from chatroom import protocol as P
from chatroom.accounts import (
    Account,
    AccountError,
    Accounts,
    AccountExists,
    BadName,
    BadPassword,
    Throttle,
    check_password_rules,
)
from chatroom.hub import Hub, conn_key
from chatroom.protocol import Message, ProtocolError
from chatroom.registry import Client
from chatroom.transport import is_loopback

log = logging.getLogger(__name__)

MECHANISMS = "PLAIN"
GUEST_PREFIX = "Guest"


def insecure(hub: Hub, c: Client) -> bool:
    """Would a password from ``c`` (PASS, SASL, REGISTER) cross the network in clear though
    TLS is on offer?  Then it is refused, before it is even kept."""
    return hub.tls_port is not None and c.tls is None and not is_loopback(c.host)


def address_key(host: str) -> str:
    """What one party's address is counted as: an IPv6 address by its /64 (one machine
    may use the whole block), an IPv4 address as it is."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "addr:" + host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return "addr:" + str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return "addr:" + str(ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else ip)


def _wait_text(seconds: float) -> str:
    return f"too many failed attempts: try again in {max(1, math.ceil(seconds))} s"


# --- SASL ----------------------------------------------------------------------------------


def cmd_authenticate(hub: Hub, c: Client, msg: Message) -> None:
    arg = msg.params[0]
    if "sasl" not in c.caps:
        hub.reply(c, P.ERR_SASLFAIL, "SASL authentication failed: request the sasl cap first")
        return
    if c.sasl is None:
        start(hub, c, arg)
        return
    if arg == "*":
        c.sasl = None
        hub.reply(c, P.ERR_SASLABORTED, "SASL authentication aborted")
        return
    try:
        response = c.sasl.feed(arg)
    except ProtocolError as exc:
        c.sasl = None
        if exc.too_long:
            hub.reply(c, P.ERR_SASLTOOLONG, "SASL message too long")
        else:
            hub.reply(c, P.ERR_SASLFAIL, f"SASL authentication failed: {exc.reason}")
        return
    if response is None:
        return  # a full chunk: more follow
    c.sasl = None
    try:
        authzid, authcid, password = P.sasl_plain(response)
    except ProtocolError as exc:
        hub.reply(c, P.ERR_SASLFAIL, f"SASL authentication failed: {exc.reason}")
        return
    if authzid and P.casefold(authzid) != P.casefold(authcid):
        hub.reply(c, P.ERR_SASLFAIL, "SASL authentication failed: you may only log in as "
                                     "yourself")
        return
    plain_login(hub, c, authcid, password)


def start(hub: Hub, c: Client, mechanism: str) -> None:
    """``AUTHENTICATE <mechanism>``: begin an exchange, or say why not."""
    if mechanism == "*":
        hub.reply(c, P.ERR_SASLABORTED, "SASL authentication aborted")
    elif c.account is not None and not c.registered:
        # Before registration a login is final (sasl-3.1); once registered, sasl-3.2's
        # re-authentication is allowed.
        hub.reply(c, P.ERR_SASLALREADY, "You have already authenticated using SASL")
    elif mechanism.upper() != "PLAIN":
        hub.send_many(c, [hub.numeric(c, P.RPL_SASLMECHS, MECHANISMS,
                                      "are available SASL mechanisms"),
                          hub.numeric(c, P.ERR_SASLFAIL, "SASL authentication failed")])
    elif insecure(hub, c):
        hub.reply(c, P.ERR_SASLFAIL, "SASL authentication failed: passwords are only "
                                     f"accepted over TLS (port {hub.tls_port})")
    elif not c.registered and not hub.password_ok(c):
        hub.reply(c, P.ERR_SASLFAIL, "SASL authentication failed: send the server password "
                                     "(PASS) first")
    else:
        c.sasl = P.SaslResponse()
        hub.send(c, P.format_line(None, "AUTHENTICATE", "+"))


@dataclass(frozen=True)
class PasswordCheck:
    """What :func:`check_password` found: the account, or how long to wait (both unset:
    a wrong name or password)."""

    account: Account | None
    wait: float = 0.0


def check_password(accounts: Accounts, login_throttle: Throttle, address_throttle: Throttle,
                   name: str, password: str, host: str,
                   keys: tuple[str, ...] = ()) -> PasswordCheck:
    """Check ``name``'s password as every login does (SASL PLAIN, the file host's Basic
    auth): throttled, hashed by the store outside any lock of ours.

    Counted per ``keys`` (a connection's) always, and per account for any name that could
    be one (whether it exists or not: a difference would tell which names exist; junk
    names can't flush a real one, since keys that still delay are never evicted): each
    attempt before its hash, so parallel guesses at one account can't all pass the check
    first, and taken back if it succeeds (successes never count).  Per address only real
    failures count: many people behind one router logging in at once (after a restart)
    must all get in.  Never called with the registry lock held."""
    if P.valid_nick(name):
        keys += ("acct:" + P.casefold(name),)
    addr = address_key(host)
    now = time.monotonic()
    wait = address_throttle.wait(addr, now)
    if wait == 0.0 and keys:
        wait = login_throttle.attempt(keys, now)
    if wait > 0:
        return PasswordCheck(None, wait)
    try:
        account = accounts.verify(name, password)
    except AccountError as exc:  # a damaged stored hash, a busy server: not this user's fault
        log.error("login check for %r failed: %s", name, exc)
        account = None
    if account is None:
        address_throttle.failed(addr, time.monotonic())
        return PasswordCheck(None)
    login_throttle.succeeded(keys, now)
    return PasswordCheck(account)


def plain_login(hub: Hub, c: Client, name: str, password: str) -> None:
    """Check ``name``'s password (throttled, hashed outside the lock); log in or say no."""
    assert hub.accounts is not None
    check = check_password(hub.accounts, hub.login_throttle, hub.address_throttle, name,
                           password, c.host, (conn_key(c),))
    if check.wait > 0:
        hub.reply(c, P.ERR_SASLFAIL, f"SASL authentication failed: {_wait_text(check.wait)}")
        return
    account = check.account
    if account is None:
        log.info("failed login as %r from %s", name, c.host)
        hub.reply(c, P.ERR_SASLFAIL, "SASL authentication failed: wrong name or password")
        return
    log.info("login %s as %s from %s", c.nick, account.name, c.host)
    logged_in(hub, c, account.name)
    hub.reply(c, P.RPL_SASLSUCCESS, "SASL authentication successful")
    if c.registered:
        protect_nick(hub, c)


def logged_in(hub: Hub, c: Client, account: str) -> None:
    """``c`` is now ``account``: 900, and ACCOUNT to whoever asked (account-notify).  The
    caller re-checks the nick's standing once it has given its own reply."""
    with hub.delivering():
        c.account = account
        if owns(c, P.casefold(c.nick)):
            c.nick_deadline = None  # in time: the grace timer must not rename the owner
        mask = (c.prefix if c.registered else "*" if c.nick == "*"
                else f"{c.nick}!{c.user or '*'}@{c.host}")
        hub.writer.queue(c, hub.numeric(c, P.RPL_LOGGEDIN, mask, account,
                                        f"You are now logged in as {account}"))
        if c.registered:
            line = P.format_line(c.prefix, "ACCOUNT", account)
            tagged = P.tag_section({"account": account}) + line  # account-tag: on all
            # Room-mates, and with extended-monitor those watching the nick too.
            for m in [c, *hub.reg.audience(c, "account-notify")]:
                if "account-notify" in m.caps:
                    hub.writer.queue(m, tagged if "account-tag" in m.caps else line)


# --- REGISTER and VERIFY ---------------------------------------------------------------------


def cmd_register(hub: Hub, c: Client, msg: Message) -> None:
    asked, password = msg.params[0], msg.params[2]
    nick = c.nick  # read once: the housekeeper may rename it meanwhile
    # The account's name as the replies give it: "*" stands for the current nick.
    shown = nick if asked == "*" else P.echo_param(asked, P.NICKLEN)
    why = register_refusal(hub, c, nick, asked, password)
    if why is not None:
        code, text = why
        hub.send(c, P.format_line(hub.config.name, "FAIL", "REGISTER", code,
                                  shown if code != "NEED_NICK" else "*", text, truncate=True))
        return
    assert hub.accounts is not None
    try:
        account = hub.accounts.register(nick, password)
    except AccountExists:
        hub.send(c, P.format_line(hub.config.name, "FAIL", "REGISTER", "ACCOUNT_EXISTS", c.nick,
                                  "That name is already registered: log in, or pick another"))
        return
    except BadPassword as exc:
        hub.send(c, P.format_line(hub.config.name, "FAIL", "REGISTER", "UNACCEPTABLE_PASSWORD",
                                  c.nick, str(exc)))
        return
    except BadName as exc:
        hub.send(c, P.format_line(hub.config.name, "FAIL", "REGISTER", "BAD_ACCOUNT_NAME",
                                  nick, str(exc)))
        return
    except AccountError as exc:  # the store itself: the reason is for the log
        log.error("REGISTER %s from %s failed: %s", nick, c.host, exc)
        hub.send(c, P.format_line(hub.config.name, "FAIL", "REGISTER",
                                  "TEMPORARILY_UNAVAILABLE", nick,
                                  "Accounts can't be created right now: try again later"))
        return
    log.info("registered account %s from %s", account.name, c.host)
    hub.send(c, P.format_line(hub.config.name, "REGISTER", "SUCCESS", account.name,
                              "Account created: you are logged in"))
    logged_in(hub, c, account.name)
    if c.registered:
        protect_nick(hub, c)  # the nick is the account's now: any grace timer stops


def register_refusal(hub: Hub, c: Client, nick: str, asked: str,
                     password: str) -> tuple[str, str] | None:
    """Why ``c`` may not register ``asked`` (a FAIL code and words), or None."""
    if hub.config.registration != "open":
        return ("TEMPORARILY_UNAVAILABLE", "Registration is closed on this server: ask its "
                                           "administrator for an account")
    if nick == "*":
        return ("NEED_NICK", "Choose a nick (NICK) first: the account is named after it")
    if c.account is not None:
        return ("ALREADY_AUTHENTICATED", f"You are already logged in as {c.account}")
    if asked != "*" and P.casefold(asked) != P.casefold(nick):
        return ("ACCOUNT_NAME_MUST_BE_NICK", "The account must be named after your nick: "
                                             "use * or your current nick")
    if is_guest_name(nick):
        return ("BAD_ACCOUNT_NAME", f"{GUEST_PREFIX} and a number is a guest's name")
    if not c.registered and not hub.password_ok(c):
        return ("TEMPORARILY_UNAVAILABLE", "Send the server password (PASS) first")
    if insecure(hub, c):
        return ("INSECURE_CONNECTION", "Passwords are only accepted over TLS: connect to "
                                       f"port {hub.tls_port}")
    try:
        check_password_rules(password)
    except BadPassword as exc:
        return ("UNACCEPTABLE_PASSWORD", str(exc))
    now = time.monotonic()
    wait = hub.register_throttle.wait(address_key(c.host), now)
    if wait > 0:
        return ("TEMPORARILY_UNAVAILABLE", "Too many new accounts from your address: try "
                                           f"again in {max(1, math.ceil(wait))} s")
    hub.register_throttle.failed(address_key(c.host), now)  # every attempt counts against the address
    return None


def cmd_verify(hub: Hub, c: Client, msg: Message) -> None:
    shown = P.echo_param(msg.params[0], P.NICKLEN)
    if c.account is not None:
        code, text = "ALREADY_AUTHENTICATED", f"You are already logged in as {c.account}"
    else:
        code, text = "INVALID_CODE", ("This server sends no codes: an account is ready as soon "
                                      "as REGISTER succeeds")
    hub.send(c, P.format_line(hub.config.name, "FAIL", "VERIFY", code, shown, text))


# --- who keeps which nick --------------------------------------------------------------------


def is_guest_name(nick: str) -> bool:
    """``Guest`` and digits: the names the server hands out."""
    head, tail = nick[:len(GUEST_PREFIX)], nick[len(GUEST_PREFIX):]
    return head.lower() == GUEST_PREFIX.lower() and tail.isdigit()


def owns(c: Client, key: str) -> bool:
    """Is ``c`` logged in to the account whose key is ``key``?"""
    return c.account is not None and P.casefold(c.account) == key


def protect_nick(hub: Hub, c: Client) -> None:
    """If ``c``'s nick belongs to an account it is not logged in to, warn it and start the
    grace timer (unless one runs already: changing case, or hopping from one registered
    nick to another, never buys more time); otherwise stop any timer.  Reads the store
    first, without the lock; decides under it, for the nick it still has."""
    assert hub.accounts is not None
    nick = c.nick
    try:
        owner = hub.accounts.get(nick) if nick != "*" else None
    except AccountError as exc:
        log.error("nick check for %s failed: %s", nick, exc)
        return
    grace = hub.config.nick_grace
    with hub.delivering():
        if c.nick != nick:
            return  # renamed meanwhile: that rename made its own check
        if owner is None or owns(c, P.casefold(owner.name)):
            c.nick_deadline = None
            return
        now = time.monotonic()
        if c.nick_deadline is None:
            c.nick_deadline = now + grace
        left = max(0.0, c.nick_deadline - now)
        hub.writer.queue(c, P.format_line(
            hub.config.name, "NOTICE", c.nick,
            f"The nick {owner.name} is registered. Log in to it within {math.ceil(left)} s, "
            f"or you will be renamed to a guest name."))


def guest_name(hub: Hub) -> str:
    """A free ``GuestNNNNN``.  Lock held."""
    while True:
        name = f"{GUEST_PREFIX}{secrets.randbelow(90000) + 10000}"
        if P.casefold(name) not in hub.reg.nicks:
            return name


def make_guest(hub: Hub, c: Client, why: str) -> tuple[str, str]:
    """Rename ``c`` to a guest name and tell it ``why``; (old, new) for the caller to log
    once the lock is released.  Lock held."""
    old = c.nick
    new = guest_name(hub)
    if c.lost_nicks is None:
        c.lost_nicks = set()
    if len(c.lost_nicks) < 100:
        c.lost_nicks.add(P.casefold(old))
    c.nick_deadline = None
    hub.change_nick(c, new)
    hub.writer.queue(c, P.format_line(hub.config.name, "NOTICE", new,
                                      f"{why}: you are now {new}"))
    return old, new


def grace_over(hub: Hub, c: Client) -> None:
    """The housekeeper's timer: ``c`` kept a registered nick past its grace."""
    with hub.delivering():
        if c.nick_deadline is None or not c.registered or c.quit_reason is not None:
            return
        if c.account is not None and owns(c, P.casefold(c.nick)):
            c.nick_deadline = None  # logged in just in time
            return
        renamed = make_guest(hub, c, f"{c.nick} is registered to someone else")
    log.info("nick %s taken back from %s (grace over), now %s", renamed[0], c.host, renamed[1])


def claim_from_guest(hub: Hub, c: Client, key: str) -> tuple[str, str] | None:
    """``c``, logged in to the account ``key``, takes that nick from whoever holds it
    without being logged in to it; (old, new) of the guest, to log.  Lock held."""
    holder = hub.reg.nicks.get(key)
    if holder is not None and holder is not c and not owns(holder, key):
        return make_guest(hub, holder, f"{holder.nick} logged in to their account")
    return None


def before_welcome(hub: Hub, c: Client) -> None:
    """Registration is about to complete: an unfinished SASL exchange is aborted (sasl-3.1),
    and a logged-in owner gets its nick back from a guest holding it."""
    if c.sasl is not None:
        c.sasl = None
        hub.reply(c, P.ERR_SASLABORTED, "SASL authentication aborted")
    if (c.account is None or P.casefold(c.nick) == P.casefold(c.account)
            or not hub.password_ok(c)):
        return
    key = P.casefold(c.account)
    renamed = None
    with hub.delivering():
        holder = hub.reg.nicks.get(key)
        if holder is not None and holder is not c and not owns(holder, key):
            renamed = claim_from_guest(hub, c, key)
            hub.change_nick(c, c.account)
    if renamed:
        log.info("nick %s taken back for its owner, the guest is now %s", *renamed)


def after_welcome(hub: Hub, c: Client) -> None:
    """Registered: warn about a registered nick, and say what a private server needs."""
    protect_nick(hub, c)
    if hub.config.require_account and c.account is None:
        hub.send(c, P.format_line(hub.config.name, "NOTICE", c.nick,
                                  "This server is for registered users: log in to your "
                                  "account to join rooms and talk."))
