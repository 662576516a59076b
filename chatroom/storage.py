"""How every store opens its SQLite database in the data directory: one place for it.

A store (accounts, files, read markers, server bans) owns one connection to
``chat.sqlite3``, made here: the directory created 0700 if missing, autocommit (each
store says where its transactions start), usable from any of the store's threads (it
serialises them with its own lock), WAL with ``synchronous=NORMAL`` (durable at each
commit of the history store's, which fsyncs), and a busy timeout for the moments another
connection (the history writer, the admin command line) holds the write lock.  The
store's schema runs once per open (``CREATE ... IF NOT EXISTS``).  Any failure becomes
the store's own error type, with the path and the reason in words.

Called by the stores' constructors, on whatever thread makes them (the main thread at
start, the admin command line).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

BUSY_TIMEOUT_MS = 10_000  # another connection writing (history, the admin command line)


def open_db(path: Path, data_dir: Path | str, schema: str,
            error: type[Exception]) -> sqlite3.Connection:
    """The store's connection to ``path`` (in ``data_dir``), with ``schema`` applied.
    Raises ``error`` (the store's own) for a directory or database that can't be used."""
    try:
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                             check_same_thread=False)
    except OSError as exc:
        raise error(f"{data_dir}: {exc.strerror or exc}") from None
    except sqlite3.Error as exc:
        raise error(f"{path}: {exc}") from None
    try:
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(schema)
    except sqlite3.Error as exc:
        db.close()
        raise error(f"{path}: {exc}") from None
    return db
