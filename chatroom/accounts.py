"""The accounts store: registered names and their password hashes, in SQLite; and a throttle.

Accounts live in the data directory's database (``chat.sqlite3``, shared with the history
store) in their own table, through this store's own connection:
``accounts(key, name, hash, created)``, keyed by the casefolded name (the server's
``ascii`` casemapping, so an account's key is the key its nick has in the registry).
Nothing is cached: every call reads the file, so the admin command line
(:mod:`chatroom.admin`) can change accounts next to a running server and the server sees the
change at the next login.  WAL mode and a busy timeout let both, and the history store's
writer, share the file.

Passwords are hashed with :func:`hashlib.scrypt`, a random 16-byte salt per account, and the
parameters stored with the hash as a PHC string (``$scrypt$ln=14,r=8,p=1$<salt>$<hash>``,
base64 without padding).  A password is never stored, logged, or put in an exception or a
repr.  :meth:`Accounts.verify` spends one hash whether or not the account exists, and
rehashes a password stored with weaker parameters than the current ones.

Locks: one connection (``check_same_thread=False``) guarded by a lock held only for the
SQL, never while hashing.  Hashes run on ``hashing_slots`` dedicated threads (a small pool
the caller waits on), so a login storm queues instead of taking ``slots x 16 MiB`` at once,
and only those threads' malloc arenas ever hold a hash's 16 MiB: hashed on the callers'
own threads (one per connection), glibc kept a freed buffer in each thread's arena, and a
storm of 50 logins left the server 460 MiB larger.  The pool's threads run at a lower CPU
priority (niceness 10), so a storm slows logins more than the chat.  :class:`Throttle` is pure arithmetic on the
clock it is given, with its own small lock.

A store: it imports only shared modules, never the registry or the handlers.  Threads: every
method of :class:`Accounts` from any thread (reader threads on login and REGISTER, the
admin command line's main thread), but never under the registry lock: they do disk I/O,
and ``register``, ``verify`` and ``set_password`` hash.  :class:`Throttle` from any thread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatroom import protocol as P
from chatroom.storage import open_db

log = logging.getLogger(__name__)

DB_NAME = "chat.sqlite3"  # the same file as the history store's
CASEMAPPING = "ascii"  # the server's (ISUPPORT CASEMAPPING): account keys are nick keys
SCHEMA_VERSION = 1

PASSWORD_MAX = 300  # bytes of UTF-8
SALT_BYTES = 16
DKLEN = 32  # bytes of derived key stored
MAX_MEMORY = 64 << 20  # the most one hash may use, whatever a stored string asks for

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    key TEXT PRIMARY KEY,        -- casefolded name
    name TEXT NOT NULL,          -- as registered
    hash TEXT NOT NULL,          -- PHC string: $scrypt$ln=..,r=..,p=..$salt$hash
    created REAL NOT NULL        -- unix seconds
);
CREATE TABLE IF NOT EXISTS accounts_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


# --- records and errors -------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    """One registered account (no hash: a record that is safe to log or show)."""

    name: str  # as registered (display form)
    key: str  # casefolded: what lookups compare
    created: float  # unix seconds


class AccountError(Exception):
    """An account operation failed; the message says why in plain words (never a password)."""


class AccountExists(AccountError):
    """The name is already registered (in any case)."""


class NoSuchAccount(AccountError):
    """No account has that name."""


class BadName(AccountError):
    """The name can't be an account's name (it is not a valid nickname)."""


class BadPassword(AccountError):
    """The password breaks the rules: 1 to 300 bytes of UTF-8, no NUL."""


def check_password_rules(password: str) -> None:
    """Raise :class:`BadPassword` unless ``password`` is 1 to 300 bytes of UTF-8 with no NUL."""
    try:
        size = len(password.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadPassword("the password is not valid text") from None
    if not 0 < size <= PASSWORD_MAX:
        raise BadPassword(f"the password must be 1 to {PASSWORD_MAX} bytes")
    if "\0" in password:
        raise BadPassword("the password cannot contain a NUL character")


def name_key(name: str) -> str:
    """The key an account name is stored and looked up under (casefolded)."""
    return P.casefold(name, CASEMAPPING)


# --- the hash string ------------------------------------------------------------------------


@dataclass(frozen=True)
class ScryptParams:
    """scrypt's cost: ``n = 2**ln`` (memory and time), ``r`` (block size), ``p`` (passes).

    The default, ``ln=14,r=8,p=1``, takes about 38 ms and 16 MiB per hash where it was
    measured (``ln=15`` took 91 ms there, over a 30-80 ms budget for a login).  A stored
    hash with weaker parameters is redone at its next successful login.  Tests pass cheap
    ones (``ln=4``).
    """

    ln: int = 14
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        if not (1 <= self.ln <= 24 and 1 <= self.r <= 64 and 1 <= self.p <= 16):
            raise AccountError(f"scrypt parameters out of range: {self.describe()}")
        if self.memory > MAX_MEMORY:
            raise AccountError(f"scrypt parameters need too much memory: {self.describe()}")

    @property
    def n(self) -> int:
        return 1 << self.ln

    @property
    def memory(self) -> int:
        """The bytes one hash needs (OpenSSL's count: V plus the p B blocks)."""
        return 128 * self.r * (self.n + self.p + 2)

    def describe(self) -> str:
        return f"ln={self.ln},r={self.r},p={self.p}"

    def weaker_than(self, other: ScryptParams) -> bool:
        """Less memory or less work than ``other``: a hash worth redoing with ``other``."""
        mem, other_mem = self.n * self.r, other.n * other.r
        return mem < other_mem or mem * self.p < other_mem * other.p


_PHC_RE = re.compile(r"\$scrypt\$ln=([0-9]{1,2}),r=([0-9]{1,2}),p=([0-9]{1,2})"
                     r"\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)\Z")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    if len(text) % 4 == 1:
        raise ValueError("impossible length")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def format_phc(params: ScryptParams, salt: bytes, digest: bytes) -> str:
    """``$scrypt$ln=..,r=..,p=..$<salt>$<digest>``, base64 without padding."""
    return f"$scrypt${params.describe()}${_b64(salt)}${_b64(digest)}"


def parse_phc(text: str) -> tuple[ScryptParams, bytes, bytes]:
    """The parameters, salt and digest of a PHC scrypt string; :class:`AccountError` if it
    is not one (or asks for absurd parameters).  Never anything else."""
    match = _PHC_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise AccountError("not a stored scrypt hash")
    ln, r, p = (int(v) for v in match.group(1, 2, 3))
    try:
        salt, digest = _unb64(match.group(4)), _unb64(match.group(5))
    except (ValueError, binascii.Error):
        raise AccountError("a stored scrypt hash has bad base64") from None
    if not 8 <= len(salt) <= 64 or not 16 <= len(digest) <= 64:
        raise AccountError("a stored scrypt hash has a salt or digest of a bad length")
    return ScryptParams(ln, r, p), salt, digest


# --- the store --------------------------------------------------------------------------------


HASH_NICE = 10  # niceness of the hashing threads (Linux sets it per thread)
HASH_TIMEOUT = 30.0  # seconds a caller waits for its hash before giving up (server busy)


def _lowest_priority() -> None:
    """A hashing thread gives way to the chat's threads.  Not SCHED_IDLE: that starves
    logins outright (7-16 s each) whenever anything else keeps the CPU busy."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICE)
    except (AttributeError, OSError) as exc:
        log.debug("hashing threads keep their priority: %s", exc)


class Accounts:
    """The accounts of one data directory.

    For the caller: :meth:`get`, :meth:`register`, :meth:`verify`, :meth:`set_password`,
    :meth:`delete`, :meth:`names`, :meth:`close`.  Raises only :class:`AccountError` and
    its subclasses (a database that can't be opened or written, too).
    May be overridden (tests): :meth:`_derive`, the hash itself, run on a hashing thread.
    """

    def __init__(self, data_dir: Path | str, *, hashing_slots: int = 2,
                 params: ScryptParams | None = None) -> None:
        if hashing_slots < 1:
            raise ValueError("hashing_slots must be at least 1")
        self.path = Path(data_dir) / DB_NAME
        self.params = params if params is not None else ScryptParams()
        self._pool = ThreadPoolExecutor(max_workers=hashing_slots, thread_name_prefix="hash",
                                        initializer=_lowest_priority)
        self._lock = threading.Lock()  # the connection; held for SQL only, never a hash
        # What an unknown name is checked against: the same work as a real account, and a
        # random digest that no password produces.
        self._dummy = (self.params, secrets.token_bytes(SALT_BYTES), secrets.token_bytes(DKLEN))
        db = open_db(self.path, data_dir, SCHEMA, AccountError)
        self._db: sqlite3.Connection | None = db
        try:
            db.execute("INSERT OR IGNORE INTO accounts_meta VALUES ('schema', ?)",
                       (str(SCHEMA_VERSION),))
        except sqlite3.Error as exc:
            db.close()
            raise AccountError(f"{self.path}: {exc}") from None

    def __repr__(self) -> str:
        return f"<Accounts {str(self.path)!r} {self.params.describe()}>"

    # --- hashing (no lock of ours held) -----------------------------------------------------

    def _hash(self, password: str, salt: bytes, params: ScryptParams, dklen: int) -> bytes:
        try:
            job = self._pool.submit(self._derive, password.encode("utf-8"), salt, params,
                                    dklen)
        except RuntimeError:  # the pool is shut down: the server is stopping
            raise AccountError("the server is stopping") from None
        try:
            return job.result(timeout=HASH_TIMEOUT)
        except TimeoutError:
            job.cancel()
            raise AccountError("the server is too busy to check passwords now") from None

    def _derive(self, password: bytes, salt: bytes, params: ScryptParams, dklen: int) -> bytes:
        """One scrypt hash; runs with a hashing slot held."""
        return hashlib.scrypt(password, salt=salt, n=params.n, r=params.r, p=params.p,
                              maxmem=params.memory, dklen=dklen)

    def _new_hash(self, password: str) -> str:
        salt = secrets.token_bytes(SALT_BYTES)
        return format_phc(self.params, salt, self._hash(password, salt, self.params, DKLEN))

    # --- SQL (under the connection lock) ------------------------------------------------------

    def _sql(self, sql: str, args: tuple[object, ...] = ()) -> _Rows:
        """Run one statement; its rows and rowcount.  A broken database is an
        :class:`AccountError`; a constraint violation stays :class:`sqlite3.IntegrityError`
        for the caller to name."""
        with self._lock:
            if self._db is None:
                raise AccountError("the accounts store is closed")
            try:
                cur = self._db.execute(sql, args)
                return _Rows(cur.fetchall(), cur.rowcount)
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as exc:
                raise AccountError(f"the accounts database failed: {exc}") from None

    def _row(self, key: str) -> tuple[str, str, float] | None:
        rows = self._sql("SELECT name, hash, created FROM accounts WHERE key = ?", (key,)).rows
        return (str(rows[0][0]), str(rows[0][1]), float(rows[0][2])) if rows else None

    # --- for the caller ----------------------------------------------------------------------

    def get(self, name: str) -> Account | None:
        """The account called ``name`` in any case, or None."""
        key = name_key(name)
        row = self._row(key)
        return None if row is None else Account(row[0], key, row[2])

    def register(self, name: str, password: str) -> Account:
        """Create an account; :class:`AccountExists` if the name is taken (in any case, even
        by a registration that finished while this one was hashing), :class:`BadName`,
        :class:`BadPassword`."""
        problem = P.nick_problem(name)
        if problem is not None:
            raise BadName(f"{name!r} can't be an account name: {problem}")
        check_password_rules(password)
        key = name_key(name)
        row = self._row(key)
        if row is not None:  # saves a hash; the INSERT below decides
            raise AccountExists(f"{row[0]} is already registered")
        stored = self._new_hash(password)
        created = time.time()
        try:
            self._sql("INSERT INTO accounts (key, name, hash, created) VALUES (?, ?, ?, ?)",
                      (key, name, stored, created))
        except sqlite3.IntegrityError:
            raise AccountExists(f"{name} is already registered") from None
        log.info("accounts: registered %s", name)
        return Account(name, key, created)

    def verify(self, name: str, password: str) -> Account | None:
        """The account if ``password`` is its password; None for a wrong password or an
        unknown name alike (both spend one hash).  A password that breaks the rules matches
        nothing and spends none (its length says nothing about the name)."""
        try:
            check_password_rules(password)
        except BadPassword:
            return None
        key = name_key(name)
        row = self._row(key)
        parsed = self._dummy
        if row is not None:
            try:
                parsed = parse_phc(row[1])
            except AccountError:
                log.error("accounts: the stored hash of %s is unreadable; login refused", name)
                row = None
        params, salt, digest = parsed
        ok = hmac.compare_digest(self._hash(password, salt, params, len(digest)), digest)
        if row is None or not ok:
            return None
        if params.weaker_than(self.params) or len(digest) < DKLEN:
            # Only if the hash is still the one checked: a password changed meanwhile stays.
            self._sql("UPDATE accounts SET hash = ? WHERE key = ? AND hash = ?",
                      (self._new_hash(password), key, row[1]))
            log.info("accounts: rehashed the password of %s (%s -> %s)", row[0],
                     params.describe(), self.params.describe())
        return Account(row[0], key, row[2])

    def set_password(self, name: str, password: str) -> None:
        """Give an account a new password; :class:`NoSuchAccount`, :class:`BadPassword`."""
        check_password_rules(password)
        key = name_key(name)
        if self._row(key) is None:
            raise NoSuchAccount(f"no account called {name}")
        cur = self._sql("UPDATE accounts SET hash = ? WHERE key = ?",
                        (self._new_hash(password), key))
        if cur.rowcount == 0:  # deleted while we hashed
            raise NoSuchAccount(f"no account called {name}")
        log.info("accounts: changed the password of %s", name)

    def delete(self, name: str) -> bool:
        """Remove an account; False if there was none."""
        gone = self._sql("DELETE FROM accounts WHERE key = ?", (name_key(name),)).rowcount > 0
        if gone:
            log.info("accounts: deleted %s", name)
        return gone

    def names(self) -> list[str]:
        """Every account's name as registered, in key order."""
        return [str(r[0]) for r in self._sql("SELECT name FROM accounts ORDER BY key").rows]

    def close(self) -> None:
        """Close the connection and the hashing threads (again: nothing)."""
        self._pool.shutdown(wait=True)
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


# --- the throttle -------------------------------------------------------------------------------


EVICT_SCAN = 64  # keys looked at, oldest first, for one that can be dropped


class Throttle:
    """Failed attempts per key slow down, then refuse. Successes never count.

    A key is whatever is being protected: an account name, a peer address, a connection.
    Before an attempt the caller asks :meth:`wait` (0.0: go ahead; otherwise refuse and say
    how long); after a failed one it calls :meth:`failed`.  With the defaults:

    * the first ``free`` (3) failures cost nothing;
    * after the n-th failure (n > ``free``) the next attempt waits
      ``base_delay * 2 ** (n - free - 1)`` seconds from that failure, at most ``max_delay``:
      2, 4, 8, 16, 32, 60 s after failures 4 to 9;
    * with ``refuse_after`` (10) failures within the window, attempts are refused until the
      oldest of them expires (so fewer than ``refuse_after`` remain), and then for as long
      as the delay the remaining ones call for;
    * a failure is forgotten ``window`` (600) seconds after it happened.

    A success does not reset the count (one good password must not wipe out the failures on
    other names from the same address); :meth:`forget` drops a key (a closed connection).

    Another use, limiting REGISTER per address: count every attempt, e.g.
    ``Throttle(free=3, base_delay=60, max_delay=600, refuse_after=5, window=3600)`` with
    :meth:`failed` called on each REGISTER, successful or not.

    Memory is bounded: at most ``refuse_after`` times per key and ``max_keys`` keys; the
    key that failed least recently is dropped first.  Pure: ``now`` is the caller's clock
    (``time.monotonic()``), no I/O; thread-safe (one small lock).
    """

    def __init__(self, *, free: int = 3, base_delay: float = 2.0, max_delay: float = 60.0,
                 refuse_after: int = 10, window: float = 600.0,
                 max_keys: int = 10_000) -> None:
        if free < 0 or refuse_after < 1 or max_keys < 1 or window <= 0:
            raise ValueError("throttle limits must be positive")
        self.free = free
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.refuse_after = refuse_after
        self.window = window
        self.max_keys = max_keys
        self._lock = threading.Lock()
        # key -> times of its recent failures, oldest first; least recently failed key first
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        """Keys remembered (some may hold only expired failures)."""
        return len(self._failures)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] + self.window <= now:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def _delay(self, count: int) -> float:
        """The wait after the last of ``count`` failures (0 while they are free)."""
        if count <= self.free:
            return 0.0
        return min(self.base_delay * 2.0 ** (count - self.free - 1), self.max_delay)

    def _allowed(self, times: deque[float], t: float) -> bool:
        count = sum(1 for x in times if x + self.window > t)
        return count < self.refuse_after and t >= times[-1] + self._delay(count)

    def wait(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again (0.0: now), exactly: as failures expire
        the count falls and the delay with it, so the answer is the first moment, from
        ``now`` on, when both the refusal and the delay are over."""
        with self._lock:
            return self._wait(key, now)

    def _wait(self, key: str, now: float) -> float:
        times = self._recent(key, now)
        if times is None or self._allowed(times, now):
            return 0.0
        # Being allowed only changes when a failure expires or a delay runs out, and
        # once allowed a key stays so (until it fails again): try those moments in order.
        moments = {x + self.window for x in times}
        moments.update(times[-1] + self._delay(c) for c in range(1, len(times) + 1))
        for t in sorted(m for m in moments if m > now):
            if self._allowed(times, t):
                return t - now
        return times[-1] + self.window - now  # not reached: by then all have expired

    def failed(self, key: str, now: float) -> None:
        """Count a failed attempt of ``key`` at ``now``."""
        with self._lock:
            self._record(key, now)

    def attempt(self, keys: tuple[str, ...], now: float) -> float:
        """Check and count in one step: 0.0 and an attempt counted against every key (as
        if it failed: see :meth:`succeeded`), or the wait if any key must wait.  Attempts
        that run at once (in parallel) are counted before any of them is checked, so they
        can't all slip past the limit together."""
        with self._lock:
            wait = max(self._wait(k, now) for k in keys)
            if wait > 0:
                return wait
            for k in keys:
                self._record(k, now)
            return 0.0

    def succeeded(self, keys: tuple[str, ...], at: float) -> None:
        """Take back the attempt counted at ``at`` by :meth:`attempt`: it succeeded."""
        with self._lock:
            for k in keys:
                times = self._failures.get(k)
                if times is not None and at in times:
                    times.remove(at)
                    if not times:
                        del self._failures[k]

    def _record(self, key: str, now: float) -> None:
        times = self._recent(key, now)
        if times is None:
            times = self._failures[key] = deque(maxlen=self.refuse_after)
        times.append(now)
        self._failures.move_to_end(key)
        if len(self._failures) > self.max_keys:
            self._evict(now)

    def _evict(self, now: float) -> None:
        """Make room: drop the least recently failed key that no longer holds anyone back.
        A key that still delays is never dropped, or junk keys could flush a victim's."""
        for key in list(itertools.islice(self._failures, EVICT_SCAN)):
            if self._wait(key, now) == 0.0:
                del self._failures[key]
                return
        # Everything scanned still delays: the newest key (the one just added) is not
        # kept; the per-address and per-account keys of a flood are already tracked.
        self._failures.popitem(last=True)

    def forget(self, key: str) -> None:
        """Drop everything known about ``key``."""
        with self._lock:
            self._failures.pop(key, None)


@dataclass(frozen=True)
class _Rows:
    """What one statement gave: its rows (read under the lock) and rowcount."""

    rows: list[tuple[Any, ...]]
    rowcount: int
