"""The history store: room events and room state in SQLite, durable before anyone sees them.

The durability contract (README): once any client has received an event, it survives a
``kill -9`` of the server.  It works in three steps, none of them under the registry lock
for longer than a list append:

* A handler, holding the registry lock, stamps an event, queues its lines to the members'
  buffers and calls :meth:`History.add` in the same hold: the row joins an in-memory
  queue and :attr:`History.appended` counts it.
* The writer thread, before it sends anything it took from a buffer, calls
  :meth:`History.wait_durable` with the count it read when it took the buffers (the same
  lock hold), so every event those bytes carry is committed first.  It commits them itself,
  everything queued in one transaction (a group commit: under load one covers hundreds of
  events), unless a commit is already running; then it waits for that one.
* This store's own thread commits what no writer asked for (events nobody receives) within
  :data:`UNASKED_COMMIT`, and prunes.

SQLite runs in WAL mode with ``synchronous=NORMAL``: a committed transaction is in the WAL
file before the commit returns, so it survives the process dying; after a power cut the
transactions since the last checkpoint may be lost, never the database's consistency.

Rows: ``events(target, ms, message, line, tags)``, keyed by (target, ms), where ``ms`` is
the event's ``time`` and, spelled in hex, its ``msgid`` (unique: the server's clock never
gives two events one millisecond, and starts past the newest stored one).  ``line`` is the
plain line as relayed; ``tags`` the sender's client-only tags.  ``rooms(target, state)``
holds each live room's topic and modes as JSON.

A store: it imports only shared modules.  Threads: :meth:`add`, :meth:`save_room` and
:attr:`appended` from any thread holding the registry lock; :meth:`wait_durable` from the
writer; :meth:`fetch`, :meth:`latest` from reader threads (a small pool of read
connections, so a query never waits for the writer's commit); the rest from the main thread.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

DB_NAME = "chat.sqlite3"
READERS = 4  # read connections: CHATHISTORY queries that may run at once
GROUP_MAX = 5000  # events per transaction at most (a bounded commit, a bounded wait)
PRUNE_EVERY = 3600.0  # seconds between retention passes
PRUNE_CHUNK = 5000  # rows deleted per transaction while pruning
# Events nobody has received yet (a room of one) are committed this soon even unasked.
UNASKED_COMMIT = 0.5  # seconds

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    target TEXT NOT NULL,        -- casefolded room name
    ms INTEGER NOT NULL,         -- time (ms since the epoch) and identity (msgid)
    message INTEGER NOT NULL,    -- 1 for PRIVMSG/NOTICE, 0 for other events (playback)
    line BLOB NOT NULL,          -- the plain line as relayed, CRLF included
    tags BLOB,                   -- the sender's client-only tags, escaped, or NULL
    PRIMARY KEY (target, ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clock (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    ms INTEGER NOT NULL          -- the newest event's ms: where the clock restarts
);
CREATE TABLE IF NOT EXISTS rooms (
    target TEXT PRIMARY KEY,     -- casefolded room name
    state TEXT NOT NULL          -- JSON: name, topic, topic_by, topic_at, modes, key, ...
);
"""


class HistoryError(Exception):
    """The data directory or its database can't be used (the reason is in the text)."""


@dataclass(frozen=True, slots=True)
class Stored:
    """One stored event, as a CHATHISTORY reply or a replay needs it."""

    ms: int
    message: bool  # PRIVMSG or NOTICE (the rest only for event-playback)
    line: bytes
    tags: bytes | None


class History:
    """The event log and room state of one data directory."""

    def __init__(self, data_dir: str, retention_days: float = 0.0) -> None:
        self.path = os.path.join(data_dir, DB_NAME)
        self.retention_ms = int(retention_days * 86400_000)
        self._readers: queue.Queue[sqlite3.Connection] = queue.Queue()
        try:
            os.makedirs(data_dir, exist_ok=True)
            self._db = self._connect()
            self._db.executescript(SCHEMA)
            for _ in range(READERS):
                self._readers.put(self._connect())
        except OSError as exc:
            raise HistoryError(f"{data_dir}: {exc.strerror or exc}") from None
        except sqlite3.Error as exc:
            raise HistoryError(f"{self.path}: {exc}") from None
        # Written under the registry lock (add, save_room), drained by this store's thread:
        # deque.append and popleft are atomic, so the two never need one lock.
        self._pending: deque[tuple[Any, ...]] = deque()
        self.appended = 0  # rows ever added (registry lock)
        self.durable = 0  # rows ever committed (or given up on: see _commit)
        # Two conditions on one lock: ``_cond`` wakes this store's thread (asked, stopping),
        # ``_done`` wakes those waiting for commits or prunes.  Told apart, a commit the
        # writer made itself does not wake the idle thread for nothing.
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        self._done = threading.Condition(lock)
        # One commit at a time, by this store's thread or by a writer that would otherwise
        # wait for it (wait_durable).  Rows leave ``_pending`` in order under it, so
        # ``durable`` always counts a prefix of what was added.
        self._commit_lock = threading.Lock()
        self._asked = False
        self._stopping = False
        self._next_prune = time.monotonic()
        self._prunes = 0  # retention passes done (prune_now waits for the next one)
        self._thread = threading.Thread(target=self._run, name="history", daemon=True)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        return db

    # --- startup (main thread) ----------------------------------------------------------

    def last_ms(self) -> int:
        """The newest stored event's time: the clock starts past it, so ids never repeat."""
        row = self._db.execute("SELECT ms FROM clock WHERE id = 0").fetchone()
        if row is None:  # a database from before the clock row: one scan, once
            row = self._db.execute("SELECT max(ms) FROM events").fetchone()
        return int(row[0] or 0)

    def rooms(self) -> dict[str, dict[str, Any]]:
        """The saved state of every room that existed when the server last stopped."""
        out: dict[str, dict[str, Any]] = {}
        for target, state in self._db.execute("SELECT target, state FROM rooms"):
            try:
                out[target] = json.loads(state)
            except ValueError:
                log.warning("history: unreadable saved state of room %s, ignored", target)
        return out

    def start(self) -> None:
        self._thread.start()

    # --- with the registry lock held ----------------------------------------------------

    def add(self, target: str, ms: int, message: bool, line: bytes,
            tags: bytes | None) -> None:
        """Queue one event for the next group commit (no I/O)."""
        self._pending.append((target, ms, message, line, tags))
        self.appended += 1

    def save_room(self, target: str, state: dict[str, Any] | None) -> None:
        """Queue a room's state (None: the room is gone) for the next commit (no I/O)."""
        self._pending.append((target, None if state is None else json.dumps(state)))
        self.appended += 1

    # --- the writer ---------------------------------------------------------------------

    def wait_durable(self, mark: int) -> None:
        """Return once the first ``mark`` rows added are committed.

        The caller (the writer) commits them itself when no commit is running: a hand-off
        to this store's thread and back would cost two thread switches per group, more
        than the commit.  If one is running, it waits for that thread instead."""
        while self.durable < mark:
            if self._commit_lock.acquire(blocking=False):
                try:
                    if self.durable < mark:
                        self._commit_locked()
                finally:
                    self._commit_lock.release()
                continue
            with self._cond:
                self._asked = True
                self._cond.notify_all()
                self._done.wait_for(lambda: self.durable >= mark or not self._thread.is_alive(),
                                    timeout=UNASKED_COMMIT)
                if not self._thread.is_alive():
                    return

    def flush(self) -> None:
        """Wait until everything added so far is committed (stop, tests)."""
        self.wait_durable(self.appended)

    # --- readers ------------------------------------------------------------------------

    def fetch(self, target: str, *, after: int | None = None, before: int | None = None,
              limit: int, newest: bool, messages_only: bool) -> list[Stored]:
        """Up to ``limit`` events of ``target`` strictly between ``after`` and ``before``
        (ms; None for no bound), the newest ones if ``newest`` else the oldest ones, in
        ascending time order.  One index range scan."""
        where = ["target = ?"]
        args: list[Any] = [target]
        if after is not None:
            where.append("ms > ?")
            args.append(after)
        if before is not None:
            where.append("ms < ?")
            args.append(before)
        if messages_only:
            where.append("message = 1")
        sql = (f"SELECT ms, message, line, tags FROM events WHERE {' AND '.join(where)} "
               f"ORDER BY ms {'DESC' if newest else 'ASC'} LIMIT ?")
        args.append(limit)
        rows = self._read(sql, args)
        if newest:
            rows.reverse()
        return [Stored(ms, bool(msg), bytes(line), None if tags is None else bytes(tags))
                for ms, msg, line, tags in rows]

    def latest(self, target: str, messages_only: bool) -> int | None:
        """The time of ``target``'s newest stored event (for CHATHISTORY TARGETS)."""
        sql = ("SELECT ms FROM events WHERE target = ?" + (" AND message = 1" if messages_only
                                                            else "") +
               " ORDER BY ms DESC LIMIT 1")
        rows = self._read(sql, [target])
        return int(rows[0][0]) if rows else None

    def _read(self, sql: str, args: list[Any]) -> list[Any]:
        db = self._readers.get()
        try:
            return db.execute(sql, args).fetchall()
        finally:
            self._readers.put(db)

    # --- the store's thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._asked or self._stopping,
                                    timeout=self._wait_time())
                self._asked = False
                stopping = self._stopping
            with self._commit_lock:
                self._commit_locked()
            with self._cond:
                if self._pending:
                    self._asked = True  # more came in meanwhile: commit it without being asked
            if stopping and not self._pending:
                break
            if self.retention_ms and time.monotonic() >= self._next_prune:
                self._prune()

    def _commit(self) -> int:
        """Write up to GROUP_MAX queued rows in one transaction; how many were taken."""
        rows: list[tuple[Any, ...]] = []
        pending = self._pending
        while pending and len(rows) < GROUP_MAX:
            rows.append(pending.popleft())
        if not rows:
            return 0
        try:
            db = self._db
            db.execute("BEGIN")
            events: list[tuple[Any, ...]] = []
            newest = None
            for row in rows:
                if len(row) == 5:
                    events.append(row)
                    newest = row[1]  # stamped in order under the registry lock: the newest
                    continue
                if events:
                    db.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?)", events)
                    events = []
                if row[1] is None:
                    db.execute("DELETE FROM rooms WHERE target = ?", (row[0],))
                else:
                    db.execute("INSERT OR REPLACE INTO rooms VALUES (?, ?)", row)
            if events:
                db.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?)", events)
            if newest is not None:
                db.execute("INSERT INTO clock VALUES (0, ?) ON CONFLICT(id) DO UPDATE SET "
                           "ms = max(ms, excluded.ms)", (newest,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            # Disk full, say.  The chat goes on (nobody is held back by a broken disk), but
            # these rows are not stored, and the log says so.
            log.error("history: could not store %d events: %s", len(rows), exc)
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        return len(rows)

    def _wait_time(self) -> float:
        """How long the thread sleeps unasked: until the next prune, and never longer than
        :data:`UNASKED_COMMIT`, so rows no writer asks for (nobody received them: a room
        of one) are committed that soon.  add() never wakes it: that would cost the hot
        path a lock and a wake-up per group."""
        if not self.retention_ms:
            return UNASKED_COMMIT
        return max(0.0, min(UNASKED_COMMIT, self._next_prune - time.monotonic()))

    def _prune(self) -> None:
        """Delete events older than the retention, a chunk per transaction per room, so the
        commits of new events are never held back for long."""
        self._next_prune = time.monotonic() + PRUNE_EVERY
        cutoff = int(time.time() * 1000) - self.retention_ms
        removed = 0
        try:
            target = ""
            while True:
                # The next room name in the key order: an index seek, not a table scan.
                row = self._db.execute("SELECT min(target) FROM events WHERE target > ?",
                                       (target,)).fetchone()
                if row[0] is None:
                    break
                target = row[0]
                while True:
                    cur = self._db.execute(
                        "DELETE FROM events WHERE target = ? AND ms IN (SELECT ms FROM events "
                        "WHERE target = ? AND ms < ? ORDER BY ms LIMIT ?)",
                        (target, target, cutoff, PRUNE_CHUNK))
                    removed += cur.rowcount
                    if cur.rowcount < PRUNE_CHUNK:
                        break
                    if self._pending:  # new events wait for no prune
                        self._commit_now()
        except sqlite3.Error as exc:
            log.error("history: pruning failed: %s", exc)
        with self._done:
            self._prunes += 1
            self._done.notify_all()
        if removed:
            log.info("history: pruned %d events older than %s", removed,
                     time.strftime("%Y-%m-%d %H:%M", time.gmtime(cutoff / 1000)))

    def prune_now(self) -> None:
        """Run a retention pass at once and wait for it (the thread runs one hourly)."""
        with self._cond:
            done = self._prunes
            self._next_prune = time.monotonic()
            self._asked = True
            self._cond.notify_all()
            self._done.wait_for(lambda: self._prunes > done or not self._thread.is_alive(),
                                timeout=30)

    def _commit_now(self) -> None:
        with self._commit_lock:
            self._commit_locked()

    def _commit_locked(self) -> None:
        """One group commit, and waiters told (``_commit_lock`` held)."""
        done = self._commit()
        if done:
            with self._done:
                self.durable += done
                self._done.notify_all()

    # --- stop (main thread) -------------------------------------------------------------

    def close(self) -> None:
        """Commit everything queued, stop the thread, close every connection."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        else:
            self._commit_now()
        self._db.close()
        while True:
            try:
                self._readers.get_nowait().close()
            except queue.Empty:
                break
