"""What a server's RPL_ISUPPORT (005) says, and a room's member list in display order.

Pure data and arithmetic, no threads of their own.  A :class:`ServerInfo` is immutable:
the session's network thread replaces it as 005 lines arrive, and any thread may read the
one it holds.  A :class:`Members` is not thread-safe: the session keeps each room's under
its lock (see :mod:`chatroom.session`).
"""

from __future__ import annotations

import bisect
import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from chatroom import protocol as P

_PREFIX_RE = re.compile(r"\(([^)]*)\)(.*)\Z")


def _unescape(value: str) -> str:
    """An ISUPPORT value with its ``\\xHH`` escapes (space, ``=``, backslash) undone."""
    return re.sub(r"\\x([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), value)


@dataclass(frozen=True)
class ServerInfo:
    """What the server announced in RPL_ISUPPORT (005); the spec's defaults otherwise.

    ``prefix_modes``/``prefix_symbols`` pair up (``o`` with ``@``) from highest rank to
    lowest; ``chanmodes`` are CHANMODES' four groups (A list, B always a parameter, C a
    parameter when set, D never).  ``nicklen``/``topiclen``/``awaylen``/``channellen`` are
    None when not announced; ``chantypes`` are the characters a room's name starts with;
    ``filehost`` is where to upload files (soju.im/FILEHOST), if the server has a file host.
    ``chathistory`` is the most lines one CHATHISTORY request returns (0: no limit, None:
    not announced); ``msgreftypes`` the kinds of message reference it takes, most
    preferred first (None: not announced, so msgid and timestamp both may work).
    """

    prefix_modes: str = "ov"
    prefix_symbols: str = "@+"
    chanmodes: tuple[str, str, str, str] = ("beI", "k", "l", "imnpst")
    casemapping: str = "rfc1459"
    nicklen: int | None = None
    topiclen: int | None = None
    awaylen: int | None = None
    channellen: int | None = None
    chantypes: str = "#&"
    filehost: str | None = None  # soju.im/FILEHOST: the URL to upload files to
    chathistory: int | None = None
    msgreftypes: tuple[str, ...] | None = None

    def fold(self, name: str) -> str:
        """``name`` folded with the server's casemapping, for comparing nicks and rooms."""
        return P.casefold(name, self.casemapping)

    def updated(self, tokens: Iterable[str]) -> ServerInfo:
        """This info with the 005 ``tokens`` (``KEY=value``, ``KEY`` or ``-KEY``) applied."""
        default = ServerInfo()
        changes: dict[str, Any] = {}
        for token in tokens:
            negate = token.startswith("-")
            key, _, value = token.lstrip("-").partition("=")
            key = key.upper()
            if key == "PREFIX":
                modes, symbols = default.prefix_modes, default.prefix_symbols
                if not negate:
                    m = _PREFIX_RE.match(value)
                    if value == "":
                        modes = symbols = ""
                    elif m and len(m[1]) == len(m[2]):
                        modes, symbols = m[1], m[2]
                    else:
                        continue  # malformed: keep what we had
                changes["prefix_modes"], changes["prefix_symbols"] = modes, symbols
            elif key == "CHANMODES":
                groups = default.chanmodes
                if not negate and value:
                    parts = (value.split(",") + ["", "", "", ""])[:4]
                    groups = (parts[0], parts[1], parts[2], parts[3])
                changes["chanmodes"] = groups
            elif key == "CASEMAPPING":
                changes["casemapping"] = (value.lower() if value and not negate
                                          else default.casemapping)
            elif key == "SOJU.IM/FILEHOST":
                changes["filehost"] = None if negate or not value else _unescape(value)
            elif key == "CHANTYPES":
                changes["chantypes"] = (default.chantypes if negate
                                        else "".join(c for c in value if c in "#&+!"))
            elif key in ("NICKLEN", "TOPICLEN", "AWAYLEN", "CHANNELLEN"):
                number = int(value) if value.isdigit() and int(value) > 0 else None
                changes[key.lower()] = None if negate else number
            elif key == "CHATHISTORY":
                changes["chathistory"] = (int(value[:9]) if value.isdigit() and not negate
                                          else None)
            elif key == "MSGREFTYPES":
                changes["msgreftypes"] = None if negate else tuple(
                    t for t in value.lower().split(",") if t)
        return dataclasses.replace(self, **changes) if changes else self

    def page(self, wanted: int) -> int:
        """How many lines to ask for in one CHATHISTORY request: ``wanted``, or less if the
        server says it returns fewer (a larger limit would be cut to its maximum anyway,
        and a page that looks short would then seem to be the start of the room)."""
        if self.chathistory:
            return max(1, min(wanted, self.chathistory))
        return max(1, wanted)

    def reference(self, msgid: str | None, stamp: str | None) -> str | None:
        """A CHATHISTORY message reference to a line (``msgid=…`` preferred, else
        ``timestamp=…``) of a kind the server takes; None if it takes neither."""
        kinds = self.msgreftypes
        if msgid and (kinds is None or "msgid" in kinds):
            return f"msgid={msgid}"
        if stamp and (kinds is None or "timestamp" in kinds):
            return f"timestamp={stamp}"
        return None

    def split_member(self, entry: str) -> tuple[str, str]:
        """A NAMES entry '@+nick!user@host' -> ('nick', '@+')."""
        i = 0
        while i < len(entry) and entry[i] in self.prefix_symbols:
            i += 1
        return entry[i:].split("!", 1)[0], entry[:i]

    def rank(self, prefixes: str) -> int:
        """Sort position of a member: highest prefix first, no prefix last."""
        if prefixes and prefixes[0] in self.prefix_symbols:
            return self.prefix_symbols.index(prefixes[0])
        return len(self.prefix_symbols)

    def ordered(self, symbols: Iterable[str]) -> str:
        """``symbols`` as a prefix string, highest first (unknown ones dropped)."""
        have = set(symbols)
        return "".join(c for c in self.prefix_symbols if c in have)


class Members:
    """A room's members by folded nick, with their display order kept up to date.

    The order (highest prefix first, then by name) is updated in place for one change
    (a join, a quit, a rename), so a busy room of thousands does not cost a full sort
    per event; it is rebuilt only after a new NAMES list or a new casemapping.
    Not thread-safe: the owner serialises every call (the session holds its lock).
    """

    def __init__(self, info: ServerInfo) -> None:
        self.info = info
        self._by_key: dict[str, tuple[str, str]] = {}  # folded nick -> (nick, prefixes)
        self._order: list[tuple[int, str, str]] | None = []  # (rank, folded, shown)

    def __len__(self) -> int:
        return len(self._by_key)

    def _item(self, nick: str, prefixes: str) -> tuple[int, str, str]:
        return self.info.rank(prefixes), self.info.fold(nick), prefixes[:1] + nick

    def get(self, nick: str) -> tuple[str, str] | None:
        return self._by_key.get(self.info.fold(nick))

    def put(self, nick: str, prefixes: str) -> None:
        self.pop(nick)
        self._by_key[self.info.fold(nick)] = (nick, prefixes)
        if self._order is not None:
            bisect.insort(self._order, self._item(nick, prefixes))

    def pop(self, nick: str) -> tuple[str, str] | None:
        entry = self._by_key.pop(self.info.fold(nick), None)
        if entry is not None and self._order is not None:
            item = self._item(*entry)
            i = bisect.bisect_left(self._order, item)
            if i < len(self._order) and self._order[i] == item:
                del self._order[i]
            else:
                self._order = None
        return entry

    def replace(self, entries: Iterable[tuple[str, str]], info: ServerInfo | None = None
                ) -> None:
        """Start over with ``entries`` ((nick, prefixes) pairs), under ``info`` if given."""
        if info is not None:
            self.info = info
        self._by_key = {self.info.fold(n): (n, p) for n, p in entries}
        self._order = None

    def entries(self) -> list[tuple[str, str]]:
        return list(self._by_key.values())

    def snapshot(self) -> tuple[str, ...]:
        if self._order is None:
            self._order = sorted(self._item(n, p) for n, p in self._by_key.values())
        return tuple(shown for _, _, shown in self._order)

