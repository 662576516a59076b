"""What the client remembers for the next start, in the user's config directory.

* :class:`Settings` (``settings.json``): the server, port, name, whether to use TLS and
  how to log in that last worked, and the window's size, so the login form comes back
  filled in.  Never a password (:mod:`chatroom.secrets_store` keeps those, and only when
  asked).
* :class:`RoomMemory` (``rooms.json``): per server and name, the rooms that were open, so
  the next start joins them again; :class:`NotifyMemory` (``notify.json``), the same for
  the notify list (the people whose coming and going you asked to hear about).

``--profile NAME`` (:func:`chatroom.pins.set_profile`) keeps a separate set of these (and
of the pins and passwords) for each name.  Files are replaced atomically and readable by
the user only (:func:`~chatroom.pins.write_private`).  A file that cannot be read counts
as empty: losing these costs some typing, never a secret.

Tk thread (the app's) and ``main``; nothing here locks.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from chatroom.pins import config_dir, pin_key, write_private

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
ROOMS_FILE = "rooms.json"
NOTIFY_FILE = "notify.json"
MAX_REMEMBERED = 50  # rooms kept per server and name (a hand-edited file may list more)


@dataclass
class Saved:
    """The settings as last saved (None: never saved, take the program's default)."""

    host: str | None = None
    port: int | None = None
    name: str = ""
    tls: bool | None = None
    mode: str = "guest"  # guest or login (creating an account is done once: then login)
    geometry: str | None = None  # the window's size, "860x560"


class Settings:
    """The login form's last good values and the window size (``settings.json``)."""

    VERSION = 1

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else config_dir() / SETTINGS_FILE

    def load(self) -> Saved:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))["settings"]
        except FileNotFoundError:
            return Saved()
        except (OSError, UnicodeError, ValueError, KeyError, TypeError) as exc:
            log.warning("cannot read the settings in %s (%s); using the defaults",
                        self.path, type(exc).__name__)
            return Saved()
        saved = Saved()
        kinds = {"host": str, "port": int, "name": str, "tls": bool, "mode": str,
                 "geometry": str}
        for f in fields(Saved):
            value = raw.get(f.name) if isinstance(raw, dict) else None
            if isinstance(value, kinds[f.name]) and not (f.name == "port" and not
                                                         (isinstance(value, int)
                                                          and 0 < value < 65536)):
                setattr(saved, f.name, value)
        if saved.mode not in ("guest", "login"):
            saved.mode = "guest"
        return saved

    def save(self, **changes: object) -> None:
        """Keep ``changes`` (fields of :class:`Saved`) over what was saved.  Raises OSError."""
        saved = self.load()
        for key, value in changes.items():
            if not hasattr(saved, key):
                raise TypeError(f"no setting {key!r}")
            setattr(saved, key, value)
        body = json.dumps({"version": self.VERSION, "settings": asdict(saved)}, indent=2,
                          sort_keys=True, ensure_ascii=False)
        write_private(self.path, body + "\n")


class RoomMemory:
    """The rooms a window had open, per server and name, for the next start.

    ``path`` defaults to ``rooms.json`` in :func:`~chatroom.pins.config_dir` (read when
    used, so tests can point ``XDG_CONFIG_HOME`` elsewhere).  A file that cannot be read
    counts as empty: losing the list of rooms costs a /join, not a secret.
    """

    VERSION = 1

    FILE = ROOMS_FILE
    KEY = "rooms"

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else config_dir() / self.FILE

    @staticmethod
    def _key(host: str, port: int, name: str) -> str:
        return f"{pin_key(host, port)}/{name.lower()}"

    def get(self, host: str, port: int, name: str) -> list[str]:
        return list(self._load().get(self._key(host, port, name), []))

    def set(self, host: str, port: int, name: str, rooms: list[str]) -> None:
        """Remember ``rooms`` (an empty list forgets).  Raises OSError."""
        entries = self._load()
        key = self._key(host, port, name)
        if rooms:
            entries[key] = rooms[:MAX_REMEMBERED]
        elif entries.pop(key, None) is None:
            return
        body = json.dumps({"version": self.VERSION, self.KEY: entries}, indent=2,
                          sort_keys=True, ensure_ascii=False)
        write_private(self.path, body + "\n")

    def _load(self) -> dict[str, list[str]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeError) as exc:
            log.warning("cannot read the remembered rooms in %s: %s", self.path, exc)
            return {}
        try:
            raw = json.loads(text)[self.KEY]
            return {str(k): [str(r) for r in v][:MAX_REMEMBERED] for k, v in raw.items()
                    if isinstance(v, list)}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("%s is damaged (%s); it counts as empty", self.path,
                        type(exc).__name__)
            return {}


class NotifyMemory(RoomMemory):
    """The notify list, per server and name (``notify.json``), kept as the rooms are."""

    FILE = NOTIFY_FILE
    KEY = "people"
