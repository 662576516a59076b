"""The read-markers store: per account, the time of the last message read in each buffer.

IRCv3 ``draft/read-marker`` keeps, for every account, one timestamp per target (a room or
the other party of a private talk, both casefolded with the server's ``ascii``
casemapping).  They live in the data directory's database (``chat.sqlite3``, shared with the
history and accounts stores) in their own table, through this store's own connection:
``read_markers(account, target, ms)``, keyed by (casefolded account name, casefolded
target), ``ms`` the marker's milliseconds since the epoch.  A marker only ever grows: the
write is ``max(stored, given)``.  An account keeps at most :data:`MAX_TARGETS` markers; past
that, its oldest one goes.

Every account's markers are read once, on first use (:meth:`Markers.load`), and then kept
in memory, so :meth:`Markers.cached` answers without disk I/O: the one method that may be
called under the registry lock (a join's burst).  Guests' markers are not here at all: they
are per connection, in memory, and die with it (see ``readmarker``).

Locks: ``_db_lock`` guards the connection and is held for SQL (disk I/O); ``_cache_lock``
guards the in-memory copy and is held only for dict operations, never around I/O, so a
thread holding the registry lock never waits for the disk.  Writes hold ``_db_lock`` for
the whole read-compare-write, so two writers to one account serialise.

A store: it imports only shared modules, never the registry or the handlers.  Threads:
:meth:`load`, :meth:`advance` and :meth:`close` from reader threads (and the main thread at
shutdown), never under the registry lock; :meth:`cached` from any thread, locks or not.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from chatroom.storage import open_db

log = logging.getLogger(__name__)

DB_NAME = "chat.sqlite3"  # the same file as the history and accounts stores'
MAX_TARGETS = 1000  # markers one account (or one guest connection) keeps

SCHEMA = """
CREATE TABLE IF NOT EXISTS read_markers (
    account TEXT NOT NULL,       -- casefolded account name
    target TEXT NOT NULL,        -- casefolded room name or the other party's nick
    ms INTEGER NOT NULL,         -- the last read message's time, ms since the epoch
    PRIMARY KEY (account, target)
) WITHOUT ROWID;
"""


class MarkerError(Exception):
    """The read markers could not be read or written (the database failed or is closed)."""


class Markers:
    """The read markers of every account: SQLite on disk, a copy in memory once loaded."""

    def __init__(self, data_dir: Path | str) -> None:
        self.path = Path(data_dir) / DB_NAME
        self._db_lock = threading.Lock()  # the connection: held for SQL only
        self._cache_lock = threading.Lock()  # the copy: held for dict operations only
        self._cache: dict[str, dict[str, int]] = {}
        self._db: sqlite3.Connection | None = open_db(self.path, data_dir, SCHEMA,
                                                      MarkerError)

    def __repr__(self) -> str:
        return f"<Markers {str(self.path)!r}>"

    def _rows(self, account: str) -> dict[str, int]:
        """The account's markers from disk.  ``_db_lock`` held."""
        if self._db is None:
            raise MarkerError("the read-markers store is closed")
        try:
            cur = self._db.execute("SELECT target, ms FROM read_markers WHERE account = ?",
                                   (account,))
            return {str(t): int(ms) for t, ms in cur.fetchall()}
        except sqlite3.Error as exc:
            raise MarkerError(f"the read-markers database failed: {exc}") from None

    def load(self, account: str) -> None:
        """Read ``account``'s markers into memory, unless they already are (disk I/O the
        first time: never under the registry lock)."""
        with self._cache_lock:
            if account in self._cache:
                return
        with self._db_lock:
            with self._cache_lock:
                if account in self._cache:
                    return
            rows = self._rows(account)
            with self._cache_lock:
                self._cache[account] = rows

    def cached(self, account: str, target: str) -> int | None:
        """``account``'s marker for ``target`` as loaded, or None (never any I/O: may be
        called under the registry lock)."""
        with self._cache_lock:
            known = self._cache.get(account)
            return known.get(target) if known is not None else None

    def advance(self, account: str, target: str, ms: int) -> tuple[int | None, int]:
        """Move ``account``'s marker for ``target`` forward to ``ms``, unless it already is
        there or later; (the marker before, the marker now), written before this returns."""
        self.load(account)
        with self._db_lock:
            with self._cache_lock:
                known = dict(self._cache.get(account, {}))
            old = known.get(target)
            if old is not None and old >= ms:
                return old, old
            if self._db is None:
                raise MarkerError("the read-markers store is closed")
            drop: str | None = None
            if old is None and len(known) >= MAX_TARGETS:
                drop = min(known, key=lambda t: known[t])
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")  # one transaction: the drop and the write
                try:
                    if drop is not None:
                        db.execute("DELETE FROM read_markers WHERE account = ? AND "
                                   "target = ?", (account, drop))
                    db.execute(
                        "INSERT INTO read_markers (account, target, ms) VALUES (?, ?, ?) "
                        "ON CONFLICT (account, target) DO UPDATE SET ms = max(ms, excluded.ms)",
                        (account, target, ms))
                    db.execute("COMMIT")
                except sqlite3.Error:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise MarkerError(f"the read-markers database failed: {exc}") from None
            with self._cache_lock:
                mine = self._cache.setdefault(account, {})
                if drop is not None:
                    mine.pop(drop, None)
                mine[target] = max(ms, mine.get(target, ms))
                return old, mine[target]

    def close(self) -> None:
        """Close the connection (again: nothing)."""
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None
