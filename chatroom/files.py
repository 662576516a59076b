"""The files store: uploaded files on disk and their records in SQLite.

Bytes live in ``<data-dir>/files/<id>``, where ``id`` is 128 random bits spelled in URL-safe
base64 (22 characters of ``A-Z a-z 0-9 - _``).  The name the uploader gave is a column of
the record and nothing else: no path on disk is ever made from anything a request says.
Records live in the data directory's database (``chat.sqlite3``, shared with the history
and accounts stores, WAL mode) in ``files(id, owner, owner_name, name, size, type,
created)``, through this store's own connection.

An upload is written under a temporary name (``.part-<random>``; a leading dot, which no
id has) in the same directory, fsynced, renamed to its id, the directory fsynced, and only
then is its record inserted.  So a record always has its bytes, and a half upload never
appears: whatever a crash (``kill -9``) leaves behind -- a temporary file, or a renamed one
whose record was never written -- has no record, is never served, and is removed when the
store next opens.  A record whose bytes are gone (deleted by hand) is dropped then too.

Limits: a per-account quota (the bytes of its stored files plus its uploads in progress,
reserved before the first byte is read, so two parallel uploads can't both slip under it),
a floor of free disk space, and retention (:meth:`Files.purge`, from the housekeeper's
timer): records older than ``retention_days`` are deleted first, then their bytes.

A store: it imports only shared modules, never the registry or the handlers, and takes
plain strings (an account's key and name), never a client.  Threads: every method from any
thread (the file host's handler threads, the housekeeper's purge, the main thread at start
and stop); one lock guards the connection and the reservations, held for SQL and
arithmetic only, never while bytes are written.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import sqlite3
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatroom.storage import open_db

log = logging.getLogger(__name__)

DB_NAME = "chat.sqlite3"  # the same file as the history and accounts stores'
FILES_DIR = "files"
PART_PREFIX = ".part-"  # temporary names: a leading dot, which no id has
ID_BYTES = 16  # 128 random bits
ID_RE = re.compile(r"[A-Za-z0-9_-]{22}\Z")
NAME_MAX = 255  # bytes of UTF-8 kept of an uploaded file's name
MIN_FREE = 64 << 20  # free disk space an upload must leave behind
PURGE_CHUNK = 500  # records deleted per pass (the housekeeper's thread has other work)
# An upload is flushed to disk every this many bytes as it arrives.  One fsync of a whole
# 200 MB file at the end held up the history store's commits (and so every chat line)
# behind it for 100+ ms (bench/files.py, four uploads at once: chat p99 169 ms against
# 4.4 ms idle); flushed as it goes, each wait is short and nothing piles up.
FLUSH_EVERY = 8 << 20

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,         -- 128 random bits, URL-safe base64: the name on disk
    owner TEXT NOT NULL,         -- the uploader's account key (casefolded)
    owner_name TEXT NOT NULL,    -- the account as registered
    name TEXT NOT NULL,          -- the uploader's filename, cleaned; display only
    size INTEGER NOT NULL,       -- bytes
    type TEXT NOT NULL,          -- media type as it will be served
    created REAL NOT NULL        -- unix seconds
);
CREATE INDEX IF NOT EXISTS files_by_owner ON files (owner);
CREATE INDEX IF NOT EXISTS files_by_age ON files (created);
"""


class FilesError(Exception):
    """The store can't do what was asked; the message says why in plain words."""


class QuotaExceeded(FilesError):
    """The account's files (with this one) would take more than its quota."""


class NoSpace(FilesError):
    """The disk is too full to take the file."""


@dataclass(frozen=True)
class FileRecord:
    """One stored file, as the file host serves it."""

    id: str
    owner: str  # account as registered
    name: str  # display only, never a path
    size: int
    type: str
    created: float  # unix seconds


def new_id() -> str:
    return secrets.token_urlsafe(ID_BYTES)


def valid_id(text: str) -> bool:
    return ID_RE.match(text) is not None


def clean_name(name: str) -> str:
    """A name safe to show and to offer as a download's name: its last path component (a
    client may send a whole path, in either slash), no control characters, no leading dots
    or spaces, at most :data:`NAME_MAX` bytes; ``file`` if nothing is left."""
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = name.strip().lstrip(". ").rstrip(". ")
    raw = name.encode("utf-8")
    if len(raw) > NAME_MAX:
        stem, dot, ext = name.rpartition(".")
        keep = ("." + ext) if dot and 0 < len(ext.encode()) <= 16 else ""
        budget = NAME_MAX - len(keep.encode())
        base = (stem if keep else name).encode("utf-8")[:budget].decode("utf-8", "ignore")
        name = base + keep
    return name or "file"


class Upload:
    """One upload in progress: write the bytes, then :meth:`commit` or :meth:`abort`.

    Used by the one thread that receives the body; the store's lock is taken only to
    release the quota reservation and to insert the record.
    """

    def __init__(self, store: Files, owner_key: str, owner_name: str, name: str,
                 media_type: str, size: int) -> None:
        self.store = store
        self.owner_key, self.owner_name = owner_key, owner_name
        self.name, self.type, self.size = clean_name(name), media_type, size
        self.received = 0
        self._unflushed = 0
        self.temp = store.directory / f"{PART_PREFIX}{secrets.token_hex(8)}"
        self._fd: int | None = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                       | getattr(os, "O_CLOEXEC", 0), 0o600)
        self._done = False

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data``; :class:`FilesError` past the declared size (never written)."""
        assert self._fd is not None, "the upload is finished"
        if self.received + len(data) > self.size:
            raise FilesError("more bytes than the upload declared")
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
                self.received += n
                self._unflushed += n
            if self._unflushed >= FLUSH_EVERY:
                os.fdatasync(self._fd)
                self._unflushed = 0
        except OSError as exc:  # a full disk, say: the caller answers, the part goes
            raise FilesError(f"the file could not be stored: {exc.strerror or exc}") from None

    def commit(self) -> FileRecord:
        """Make the file durable and visible; :class:`FilesError` if it is short."""
        if self.received != self.size:
            self.abort()
            raise FilesError(f"the upload ended after {self.received} of {self.size} bytes")
        assert self._fd is not None
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            record = FileRecord(new_id(), self.owner_name, self.name, self.size, self.type,
                                time.time())
            os.replace(self.temp, self.store.directory / record.id)
            self.store.sync_directory()
            self.store.insert(record, self.owner_key)
        except OSError as exc:
            self.abort()
            raise FilesError(f"the file could not be stored: {exc.strerror or exc}") from None
        finally:
            self._finish()
        return record

    def abort(self) -> None:
        """Throw the partial file away (again: nothing)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        try:
            os.unlink(self.temp)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("files: could not remove %s: %s", self.temp.name, exc)
        self._finish()

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self.store.release(self.owner_key, self.size)


class Files:
    """The uploaded files of one data directory.

    For the caller: :meth:`begin` (an :class:`Upload`), :meth:`get`, :meth:`path`,
    :meth:`used`, :meth:`purge`, :meth:`close`.  Raises :class:`FilesError` and its
    subclasses for anything it refuses or can't do.
    """

    def __init__(self, data_dir: Path | str, *, quota: int = 0, retention_days: float = 0.0,
                 min_free: int = MIN_FREE) -> None:
        self.directory = Path(data_dir) / FILES_DIR
        self.db_path = Path(data_dir) / DB_NAME
        self.quota = quota  # bytes per account, 0 for no limit
        self.retention = retention_days * 86400.0  # seconds, 0 keeps everything
        self.min_free = min_free
        self._lock = threading.Lock()
        self._reserved: dict[str, int] = {}  # account key -> bytes of uploads in progress
        self._reserved_total = 0
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise FilesError(f"{self.directory}: {exc.strerror or exc}") from None
        self._db: sqlite3.Connection | None = open_db(self.db_path, data_dir, SCHEMA,
                                                      FilesError)
        self._sweep()

    def __repr__(self) -> str:
        return f"<Files {str(self.directory)!r}>"

    # --- SQL (under the lock) -------------------------------------------------------------

    def _sql(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._sql_locked(sql, args)

    def _sql_locked(self, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        if self._db is None:
            raise FilesError("the files store is closed")
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise FilesError(f"the files database failed: {exc}") from None

    # --- start: what a crash left behind ----------------------------------------------------

    def _sweep(self) -> None:
        """Remove temporary files and bytes without a record; drop records without bytes."""
        known = {str(r[0]) for r in self._sql("SELECT id FROM files")}
        on_disk: set[str] = set()
        removed = 0
        for entry in os.scandir(self.directory):
            if entry.name.startswith(PART_PREFIX) or (valid_id(entry.name)
                                                      and entry.name not in known):
                self._unlink(entry.name)
                removed += 1
            elif valid_id(entry.name):
                on_disk.add(entry.name)
        missing = known - on_disk
        for file_id in missing:
            self._sql("DELETE FROM files WHERE id = ?", (file_id,))
        if removed or missing:
            log.info("files: removed %d unfinished or unrecorded files, %d records without "
                     "their bytes", removed, len(missing))

    def _unlink(self, name: str) -> None:
        try:
            os.unlink(self.directory / name)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("files: could not remove %s: %s", name, exc)

    def sync_directory(self) -> None:
        """fsync the directory, so a rename in it survives a power cut."""
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # --- uploads ------------------------------------------------------------------------------

    def begin(self, owner_key: str, owner_name: str, name: str, media_type: str,
              size: int) -> Upload:
        """Start an upload of ``size`` bytes for an account: its quota and the disk are
        checked and the bytes reserved before anything is written."""
        if size < 0:
            raise FilesError("a negative size")
        with self._lock:
            if self.quota:
                rows = self._sql_locked("SELECT COALESCE(SUM(size), 0) FROM files "
                                        "WHERE owner = ?", (owner_key,))
                used = int(rows[0][0]) + self._reserved.get(owner_key, 0)
                if used + size > self.quota:
                    raise QuotaExceeded(
                        f"your files would take {megabytes(used + size)} of the "
                        f"{megabytes(self.quota)} each account may use")
            free = shutil.disk_usage(self.directory).free - self._reserved_total
            if free - size < self.min_free:
                raise NoSpace("the server's disk is too full for this file")
            self._reserved[owner_key] = self._reserved.get(owner_key, 0) + size
            self._reserved_total += size
        try:
            return Upload(self, owner_key, owner_name, name, media_type, size)
        except OSError as exc:
            self.release(owner_key, size)
            raise FilesError(f"the file could not be stored: {exc.strerror or exc}") from None

    def release(self, owner_key: str, size: int) -> None:
        """An upload is over (stored or not): its reservation goes."""
        with self._lock:
            left = self._reserved.get(owner_key, 0) - size
            if left > 0:
                self._reserved[owner_key] = left
            else:
                self._reserved.pop(owner_key, None)
            self._reserved_total -= size

    def insert(self, record: FileRecord, owner_key: str) -> None:
        self._sql("INSERT INTO files (id, owner, owner_name, name, size, type, created) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?)",
                  (record.id, owner_key, record.owner, record.name, record.size, record.type,
                   record.created))

    # --- reading --------------------------------------------------------------------------------

    def get(self, file_id: str) -> FileRecord | None:
        """The record of ``file_id``, or None (also for anything that is not an id)."""
        if not valid_id(file_id):
            return None
        rows = self._sql("SELECT id, owner_name, name, size, type, created FROM files "
                         "WHERE id = ?", (file_id,))
        if not rows:
            return None
        r = rows[0]
        return FileRecord(str(r[0]), str(r[1]), str(r[2]), int(r[3]),
                          str(r[4]), float(r[5]))

    def path(self, record: FileRecord) -> Path:
        """Where ``record``'s bytes are: always ``files/<id>``, the id checked."""
        if not valid_id(record.id):
            raise FilesError("not a file id")
        return self.directory / record.id

    def used(self, owner_key: str) -> int:
        """Bytes of the account's stored files."""
        rows = self._sql("SELECT COALESCE(SUM(size), 0) FROM files WHERE owner = ?",
                         (owner_key,))
        return int(rows[0][0])

    # --- retention ----------------------------------------------------------------------------

    def purge(self, now: float | None = None) -> int:
        """Delete files older than the retention (records first, so none is served half
        gone); how many went.  At most :data:`PURGE_CHUNK` per call: the caller calls again
        while it returns that many.  0 (nothing) without a retention."""
        if not self.retention:
            return 0
        cutoff = (time.time() if now is None else now) - self.retention
        with self._lock:
            rows = self._sql_locked("SELECT id FROM files WHERE created < ? ORDER BY created "
                                    "LIMIT ?", (cutoff, PURGE_CHUNK))
            ids = [str(r[0]) for r in rows]
            if ids:
                marks = ",".join("?" * len(ids))
                self._sql_locked(f"DELETE FROM files WHERE id IN ({marks})", tuple(ids))
        for file_id in ids:
            self._unlink(file_id)
        if ids:
            log.info("files: deleted %d files older than %g days", len(ids),
                     self.retention / 86400)
        return len(ids)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def megabytes(size: int) -> str:
    """``50 MB``: a size in words (MiB, as the options count them, but said as MB)."""
    if size >= 1 << 30 and size % (1 << 30) == 0:
        return f"{size >> 30} GB"
    if size >= 1 << 20:
        mb = size / (1 << 20)
        return f"{mb:.0f} MB" if mb >= 10 or mb == int(mb) else f"{mb:.1f} MB"
    if size >= 1 << 10:
        return f"{size / (1 << 10):.0f} KB"
    return f"{size} bytes"
