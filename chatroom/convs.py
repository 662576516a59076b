"""The conversations of one chat window: rooms and private talks, their unread counts and
mentions.  No Tk.

A :class:`Conversation` is what the window keeps of one entry of its list: a room we are
in (or were removed from) or a private conversation with one person, with what the side
panel shows of it (members, topic) and what the list shows (unread lines, mentions).
:class:`Conversations` keeps them in the order they were opened, by name folded with the
server's casemapping, and knows which one is on screen.

Tk thread only (the app's); nothing here locks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from chatroom.lines import Day


@dataclass
class Conversation:
    """One entry of the window's list: a room (``private`` False) or a person."""

    name: str  # as shown: "#chat", or the other person's nick
    private: bool = False
    pane: str = ""  # the key of its log in the chat view (stable across renames)
    members: tuple[str, ...] = ()  # a room's, as the session's last snapshot had them
    topic: str = ""
    joined: bool = False  # a room we are in now (False: connecting, removed, or a person)
    unread: int = 0  # lines that came while it was not in view
    mentioned: int = 0  # of those, lines that name us (or any line of a private talk)
    top_day: Day | None = None  # local date of the oldest history line shown
    bottom_day: Day | None = None  # local date of the newest dated line
    missed_shown: bool = False  # "While you were disconnected:" is up for this return
    lost: bool = False  # the connection dropped since we were last in it
    last_time: float = 0.0  # server time of the newest line in it (read markers)
    read_sent: float = 0.0  # the read marker we last told the server (or it told us)

    @property
    def label(self) -> str:
        """How the list shows it: the name, then what is unread."""
        if self.mentioned:
            return f"{self.name}  ({self.unread}!)"
        if self.unread:
            return f"{self.name}  ({self.unread})"
        return self.name


@dataclass
class Conversations:
    """The window's conversations in the order opened, and the one in view.

    ``fold`` compares names the way the server does (its casemapping), so "#Chat" and
    "#chat" are one entry.
    """

    fold: Callable[[str], str] = str.lower
    _by_key: dict[str, Conversation] = field(default_factory=dict)
    current: Conversation | None = None
    _made: int = 0

    def __iter__(self) -> Iterator[Conversation]:
        return iter(list(self._by_key.values()))

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, name: str) -> Conversation | None:
        return self._by_key.get(self.fold(name))

    def open(self, name: str, private: bool = False) -> Conversation:
        """The conversation called ``name``, made (at the end of the list) if new."""
        conv = self.get(name)
        if conv is None:
            self._made += 1
            conv = Conversation(name, private, pane=f"c{self._made}")
            self._by_key[self.fold(name)] = conv
        return conv

    def close(self, name: str) -> Conversation | None:
        """Take ``name`` off the list; the one in view moves to its neighbour."""
        conv = self._by_key.pop(self.fold(name), None)
        if conv is not None and conv is self.current:
            self.current = next(iter(self._by_key.values()), None)
        return conv

    def rename(self, old: str, new: str) -> Conversation | None:
        """A person changed name: their private conversation follows (same place)."""
        conv = self.get(old)
        if conv is None or not conv.private or self.get(new) not in (None, conv):
            return None
        items = [(self.fold(new) if c is conv else k, c) for k, c in self._by_key.items()]
        self._by_key = dict(items)
        conv.name = new
        return conv

    def totals(self) -> tuple[int, int]:
        """Unread lines and mentions over every conversation."""
        return (sum(c.unread for c in self._by_key.values()),
                sum(c.mentioned for c in self._by_key.values()))
