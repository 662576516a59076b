"""Certificate pins: the fingerprints the user chose to trust, per ``host:port``, on disk.

Trust on first use: when a server's certificate cannot be checked against the system's
certificate authorities (a self-signed certificate on a LAN, say), the app shows its
SHA-256 fingerprint and asks once; if the user trusts it, the fingerprint is kept here and
from then on that certificate, and only that one, is accepted for that ``host:port``.

The pins live in ``pins.json`` in the user's config directory (``$XDG_CONFIG_HOME/chatroom``
or ``~/.config/chatroom``), readable by the user only (0600, the directory 0700).  A save
replaces the file atomically (temporary file, fsync, ``os.replace``), so a crash or a full
disk never leaves half a file.  A file that exists but cannot be read or parsed fails
closed: :class:`PinFileError` from every call, never "no pins" (which would turn a changed
certificate into a first-use question, and let the next save drop every other pin).

Threads: the session's network thread reads (:meth:`PinStore.get`) when it connects, the
Tk thread writes when the user says yes.  Every call re-reads the file, so a pin saved by
another window (or another process) counts at the next connection; a lock keeps one
process's read-modify-write whole.  No Tk here.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

APP_DIR = "chatroom"
PINS_FILE = "pins.json"


_profile: str | None = None  # set once at start (--profile): every store follows it
PROFILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}\Z")


def set_profile(name: str | None) -> None:
    """Keep everything (settings, rooms, pins, passwords) under profile ``name`` from now
    on; None: the default set.  Raises ValueError for a name that is not a plain word."""
    global _profile
    if name is not None and not PROFILE_RE.match(name):
        raise ValueError("a profile name is up to 40 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    _profile = name


def config_dir() -> Path:
    """The user's config directory for this app (created by whoever writes to it):
    ``$XDG_CONFIG_HOME/chatroom`` (``~/.config/chatroom``), or the platform's own place
    on Windows and macOS; a profile's is ``profiles/NAME`` in it."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    # The XDG spec says a relative value is to be ignored.
    if base and os.path.isabs(base):
        root = Path(base)
    elif sys.platform == "win32" and os.environ.get("APPDATA"):
        root = Path(os.environ["APPDATA"])
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Application Support"
    else:
        root = Path.home() / ".config"
    here = root / APP_DIR
    return here / "profiles" / _profile if _profile else here


def pin_key(host: str, port: int) -> str:
    """``host:port`` as pins are filed: host names in lower case, IPv6 in brackets."""
    host = host.strip().lower().rstrip(".")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def normalize(fingerprint: str) -> str:
    """``ab:cd...``, ``ABCD...`` or ``AB CD ...`` all as ``AB:CD:...`` (for a hand-edited file)."""
    digits = "".join(ch for ch in fingerprint.upper() if ch in "0123456789ABCDEF")
    return ":".join(digits[i:i + 2] for i in range(0, len(digits), 2))


class PinFileError(OSError):
    """The pin file is there but unreadable or damaged: nothing can be trusted from it."""


class PinStore:
    """Pinned SHA-256 fingerprints by ``host:port``, kept in one JSON file.

    ``path`` defaults to ``pins.json`` in :func:`config_dir` (read when the store is made,
    so tests can point ``XDG_CONFIG_HOME`` at a temporary directory).  Any thread.
    """

    VERSION = 1

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else config_dir() / PINS_FILE
        self._lock = threading.Lock()

    def get(self, host: str, port: int) -> str | None:
        """The pinned fingerprint for ``host:port`` (``AB:CD:...``), or None.  Raises
        :class:`PinFileError` if the file is damaged."""
        with self._lock:
            entry = self._load().get(pin_key(host, port))
        return normalize(entry["sha256"]) if entry else None

    def set(self, host: str, port: int, fingerprint: str) -> None:
        """Pin ``fingerprint`` for ``host:port`` (replacing any pin it had).  Raises OSError
        (:class:`PinFileError` rather than overwrite a damaged file), ValueError for
        anything but a SHA-256 fingerprint."""
        if len(normalize(fingerprint)) != 95:
            raise ValueError(f"not a SHA-256 fingerprint: {fingerprint!r}")
        with self._lock:
            pins = self._load()
            pins[pin_key(host, port)] = {"sha256": normalize(fingerprint),
                                         "since": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                time.gmtime())}
            self._save(pins)

    def remove(self, host: str, port: int) -> bool:
        """Forget the pin for ``host:port``; False if there was none.  Raises OSError."""
        with self._lock:
            pins = self._load()
            if pins.pop(pin_key(host, port), None) is None:
                return False
            self._save(pins)
            return True

    def all(self) -> dict[str, str]:
        """Every pin, ``host:port`` -> fingerprint."""
        with self._lock:
            return {k: normalize(v["sha256"]) for k, v in self._load().items()}

    # --- the file (caller holds _lock) ------------------------------------------------

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeError) as exc:
            raise PinFileError(f"cannot read {self.path}: {exc}") from None
        try:
            pins = json.loads(text)["pins"]
            loaded = {str(k): {"sha256": str(v["sha256"]), "since": str(v.get("since", ""))}
                      for k, v in pins.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PinFileError(f"{self.path} is damaged ({type(exc).__name__}: {exc})"
                               ) from None
        bad = [k for k, v in loaded.items() if len(normalize(v["sha256"])) != 95]
        if bad:
            raise PinFileError(f"{self.path} is damaged (the pin for {bad[0]} is not a "
                               f"SHA-256 fingerprint)")
        return loaded

    def _save(self, pins: dict[str, dict[str, str]]) -> None:
        body = json.dumps({"version": self.VERSION, "pins": pins}, indent=2, sort_keys=True)
        write_private(self.path, body + "\n")


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, atomically and readable by the user only.

    The directory is made 0700 if missing.  The text goes to a temporary file that
    ``mkstemp`` makes 0600 in the same directory (so it is never readable by others, not
    even for a moment), is flushed and fsynced, then renamed over ``path`` (``os.replace``
    is atomic: a crash or a full disk never leaves half a file), and the directory is
    fsynced so the rename itself is durable.  Raises OSError.
    """
    directory = path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
