"""Remembered passwords: the account passwords the user asked to keep, per host:port:name.

Only when the user ticks "Remember my password" on the login view, and only after the
server accepted the password.  Standard library only, so there is no system keyring here:
the passwords are kept as they are, in ``passwords.json`` in the user's config directory
(the one :mod:`chatroom.pins` uses: ``$XDG_CONFIG_HOME/chatroom`` or ``~/.config/chatroom``),
a file readable by the user only (0600, the directory 0700) and replaced atomically on every
change (:func:`chatroom.pins.write_private`).  The login view says so next to the box.

An entry goes when the user unticks the box, logs out, or the server says the password is
wrong; the file goes with its last entry.  A file that cannot be read or parsed counts as
holding nothing (a remembered password only saves typing it) and is replaced at the next
save.  Nothing here logs a password, and no exception carries one.

Threads: the Tk thread only (the app reads at start and when the login form's server or
name changes, writes after a successful login).  No Tk here.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from chatroom.pins import config_dir, pin_key, write_private

log = logging.getLogger(__name__)

PASSWORDS_FILE = "passwords.json"


def secret_key(host: str, port: int, name: str) -> str:
    """``host:port:name`` as entries are filed (host as pins file it, name in lower case)."""
    return f"{pin_key(host, port)}:{name.strip().lower()}"


class PasswordStore:
    """Remembered passwords by ``host:port:name``, in one JSON file.

    ``path`` defaults to ``passwords.json`` in :func:`~chatroom.pins.config_dir` (read when
    the store is made, so tests can point ``XDG_CONFIG_HOME`` elsewhere).  Every call reads
    the file afresh; writes raise OSError.
    """

    VERSION = 1

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else config_dir() / PASSWORDS_FILE

    def __repr__(self) -> str:
        return f"PasswordStore({str(self.path)!r})"

    def get(self, host: str, port: int, name: str) -> str | None:
        """The password remembered for ``name`` on ``host:port``, or None."""
        entry = self._load().get(secret_key(host, port, name))
        return entry["password"] if entry else None

    def latest(self, host: str, port: int) -> tuple[str, str] | None:
        """(name, password) last remembered for ``host:port``: what to fill in at start."""
        prefix = pin_key(host, port) + ":"
        found = [v for k, v in self._load().items() if k.startswith(prefix)]
        if not found:
            return None
        newest = max(found, key=lambda v: v["saved"])
        return newest["name"], newest["password"]

    def set(self, host: str, port: int, name: str, password: str) -> None:
        """Remember ``password`` for ``name`` on ``host:port`` (replacing what was there)."""
        entries = self._load()
        entries[secret_key(host, port, name)] = {
            "name": name.strip(), "password": password,
            "saved": datetime.now(UTC).isoformat(timespec="milliseconds")}
        self._save(entries)

    def remove(self, host: str, port: int, name: str) -> bool:
        """Forget the password for ``name`` on ``host:port``; False if none was kept."""
        entries = self._load()
        if entries.pop(secret_key(host, port, name), None) is None:
            return False
        self._save(entries)
        return True

    # --- the file ---------------------------------------------------------------------

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeError) as exc:
            log.warning("cannot read the remembered passwords in %s: %s", self.path,
                        getattr(exc, "strerror", None) or type(exc).__name__)
            return {}
        try:
            raw = json.loads(text)["passwords"]
            return {str(k): {"name": str(v["name"]), "password": str(v["password"]),
                             "saved": str(v.get("saved", ""))} for k, v in raw.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Only the kind of damage: the text may hold passwords.
            log.warning("%s is damaged (%s); it counts as empty", self.path,
                        type(exc).__name__)
            return {}

    def _save(self, entries: dict[str, dict[str, str]]) -> None:
        if not entries:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            return
        body = json.dumps({"version": self.VERSION, "passwords": entries}, indent=2,
                          sort_keys=True)
        write_private(self.path, body + "\n")
