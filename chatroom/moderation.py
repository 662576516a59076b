"""The moderation store: which accounts are server operators, and the server bans.

Both live in the data directory's database (``chat.sqlite3``, shared with the history and
accounts stores) in tables of their own, through this store's own connection:

* ``opers(key, name, account_created, added)``: accounts the admin command line made
  operators.  The account's creation time is kept with it, so an account that is deleted
  and registered again by someone else does not inherit the old one's powers.
* ``server_bans(mask, reason, by, set_at, expires)``: ``user@host`` masks (wildcards, or a
  CIDR block as the host) and ``$a:account`` masks, each until ``expires`` (unix seconds;
  0 for never).  Expired rows stop matching at once and are deleted at the next change.

The bans are read once, at open, and kept in memory as well: only the server (``KLINE`` and
``UNKLINE``) changes them, and a connection is checked against them at registration, which
must not wait for the disk.  The operators are read from the file at each ``OPER``, so the
admin command line can change them next to a running server.

A store: it imports only shared modules, never the registry or the handlers.  Threads: any
(reader threads on OPER, KLINE and at registration; the admin command line's main thread);
one lock guards the connection and the cache, held for the SQL and the lookups only.  Never
called with the registry lock held, except :meth:`Moderation.find`, which does no I/O.
"""

from __future__ import annotations

import ipaddress
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from chatroom import protocol as P
from chatroom.storage import open_db

log = logging.getLogger(__name__)

DB_NAME = "chat.sqlite3"  # the same file as the other stores'
ACCOUNT_PREFIX = "$a:"

SCHEMA = """
CREATE TABLE IF NOT EXISTS opers (
    key TEXT PRIMARY KEY,            -- casefolded account name
    name TEXT NOT NULL,              -- as registered
    account_created REAL NOT NULL,   -- the account's own creation time (unix seconds)
    added REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS server_bans (
    mask TEXT PRIMARY KEY,           -- casefolded user@host or $a:account
    reason TEXT NOT NULL,
    by TEXT NOT NULL,                -- who set it (nick!user@host)
    set_at REAL NOT NULL,
    expires REAL NOT NULL            -- unix seconds, 0 for never
);
"""


class ModerationError(Exception):
    """The store could not be opened or written; the message says why."""


def ban_mask(text: str) -> str | None:
    """The stored form of a ban's mask (``host`` -> ``*@host``, ``$a:Bob`` -> ``$a:bob``),
    or None when ``text`` can't be one."""
    if not text or any(ch in text for ch in " ,\0") or not text.isprintable():
        return None
    if text[:len(ACCOUNT_PREFIX)].lower() == ACCOUNT_PREFIX:
        name = text[len(ACCOUNT_PREFIX):]
        return ACCOUNT_PREFIX + P.casefold(name) if name and "@" not in name else None
    if "!" in text:
        return None  # a server ban names an address, not a nick
    user, at, host = P.casefold(text).rpartition("@")
    if not at:
        user = "*"
    if not user or not host or "@" in user:
        return None
    if "/" in host:
        try:
            host = str(ipaddress.ip_network(host, strict=False))
        except ValueError:
            return None
    return f"{user}@{host}"


@dataclass(frozen=True)
class ServerBan:
    """One server ban, as stored."""

    mask: str
    reason: str
    by: str
    set_at: float
    expires: float  # 0 for never

    def active(self, now: float) -> bool:
        return not self.expires or now < self.expires

    def matches(self, user: str, host: str, account: str | None) -> bool:
        """Does this ban hit a connection with this user name, address and account?"""
        if self.mask.startswith(ACCOUNT_PREFIX):
            return account is not None and P.mask_matcher(self.mask[len(ACCOUNT_PREFIX):])(
                P.casefold(account))
        umask, _, hmask = self.mask.rpartition("@")
        if not P.mask_matcher(umask)(P.casefold(user)):
            return False
        if "/" in hmask:
            try:
                return ipaddress.ip_address(host) in ipaddress.ip_network(hmask)
            except ValueError:  # a host name, or an address of the other family
                return False
        return P.mask_matcher(hmask)(P.casefold(host))


class Moderation:
    """The operators and server bans of one data directory.

    For the caller: :meth:`add_oper`, :meth:`remove_oper`, :meth:`oper_created`,
    :meth:`oper_names`; :meth:`add_ban`, :meth:`remove_ban`, :meth:`bans`, :meth:`find`;
    :meth:`close`.  Raises only :class:`ModerationError`.
    """

    def __init__(self, data_dir: Path | str) -> None:
        self.path = Path(data_dir) / DB_NAME
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = open_db(self.path, data_dir, SCHEMA,
                                                      ModerationError)
        try:
            rows = self._db.execute(
                "SELECT mask, reason, by, set_at, expires FROM server_bans").fetchall()
        except sqlite3.Error as exc:
            raise ModerationError(f"{self.path}: {exc}") from None
        self._bans = {str(r[0]): ServerBan(str(r[0]), str(r[1]), str(r[2]), float(r[3]),
                                           float(r[4])) for r in rows}

    def _sql(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """One statement, lock held by the caller."""
        if self._db is None:
            raise ModerationError("the moderation store is closed")
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise ModerationError(f"the moderation database failed: {exc}") from None

    # --- operators (read from the file each time: the admin command line changes them) ---

    def add_oper(self, name: str, account_created: float) -> None:
        with self._lock:
            self._sql("INSERT OR REPLACE INTO opers VALUES (?, ?, ?, ?)",
                      (P.casefold(name), name, account_created, time.time()))
        log.info("moderation: %s is a server operator", name)

    def remove_oper(self, name: str) -> bool:
        with self._lock:
            key = P.casefold(name)
            gone = bool(self._sql("SELECT 1 FROM opers WHERE key = ?", (key,)))
            self._sql("DELETE FROM opers WHERE key = ?", (key,))
        if gone:
            log.info("moderation: %s is no longer a server operator", name)
        return gone

    def oper_created(self, name: str) -> float | None:
        """The creation time of the account ``name`` was made an operator as, or None."""
        with self._lock:
            rows = self._sql("SELECT account_created FROM opers WHERE key = ?",
                             (P.casefold(name),))
        return float(str(rows[0][0])) if rows else None

    def oper_names(self) -> list[str]:
        with self._lock:
            return [str(r[0]) for r in self._sql("SELECT name FROM opers ORDER BY key")]

    # --- server bans (written through, matched from memory) -------------------------------

    def _prune(self, now: float) -> None:
        """Forget expired bans, in memory and on disk.  Lock held."""
        old = [m for m, b in self._bans.items() if not b.active(now)]
        for mask in old:
            del self._bans[mask]
        if old:
            self._sql("DELETE FROM server_bans WHERE expires > 0 AND expires <= ?", (now,))

    def add_ban(self, ban: ServerBan) -> bool:
        """Set ``ban`` (replacing one on the same mask); True if the mask was new."""
        with self._lock:
            self._prune(time.time())
            self._sql("INSERT OR REPLACE INTO server_bans VALUES (?, ?, ?, ?, ?)",
                      (ban.mask, ban.reason, ban.by, ban.set_at, ban.expires))
            new = ban.mask not in self._bans
            self._bans[ban.mask] = ban
        return new

    def remove_ban(self, mask: str) -> bool:
        """Lift the ban on ``mask`` (its stored form); False if there was none in force."""
        with self._lock:
            self._prune(time.time())
            self._sql("DELETE FROM server_bans WHERE mask = ?", (mask,))
            return self._bans.pop(mask, None) is not None

    def bans(self) -> list[ServerBan]:
        """The bans in force, oldest first."""
        now = time.time()
        with self._lock:
            return sorted((b for b in self._bans.values() if b.active(now)),
                          key=lambda b: b.set_at)

    def find(self, user: str, host: str, account: str | None) -> ServerBan | None:
        """The ban in force that hits this connection, or None (no I/O)."""
        now = time.time()
        with self._lock:
            return next((b for b in self._bans.values()
                         if b.active(now) and b.matches(user, host, account)), None)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
