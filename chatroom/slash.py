"""The slash commands: one table (name, usage, help, handler), the text it parses, no Tk.

Each command is declared once, in :data:`COMMANDS`; ``/help`` (:data:`HELP`) is derived
from it, and the app runs a command by the handler name the table gives it, a method of
the controller (``ChatApp``) called as ``handler(rest, line) -> bool``: True when the
text was taken, False when it was refused (the message field keeps it).  The controller
checks ``needs_room`` in one place before any handler runs.

Pure data and functions: any thread may use them (the app does, on the Tk thread).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One slash command as the user sees it and as the controller runs it."""

    name: str  # what follows the slash, lower case
    usage: str  # shown by /help
    help: str  # shown by /help
    handler: str  # the controller's method: handler(rest, line) -> bool
    needs_room: bool = True  # refused unless we are in the room (checked before handler)


COMMANDS: tuple[Command, ...] = (
    Command("me", "/me <action>", "say what you are doing (shown in italics)", "slash_me"),
    Command("msg", "/msg <name> <text>", "send a private message", "slash_msg"),
    Command("nick", "/nick <name>", "change your name", "slash_nick"),
    Command("topic", "/topic [text]", "show the room topic, or set it", "slash_topic"),
    Command("names", "/names", "list who is in the room", "slash_names"),
    Command("away", "/away [text]", "say you are away (others see the text when they "
            "write to you); /away alone: you are back", "slash_away", needs_room=False),
    Command("whois", "/whois <name>", "show who someone is: address, rooms, account, idle "
            "time", "slash_whois", needs_room=False),
    Command("join", "/join #room", "join a room (made if new) and show it; /join alone: "
            "the room in view, again", "slash_join", needs_room=False),
    Command("part", "/part [#room] [reason]", "leave a room (the one in view by default)",
            "slash_part", needs_room=False),
    Command("query", "/query <name> [text]", "talk with someone privately, in a "
            "conversation of its own", "slash_query", needs_room=False),
    Command("close", "/close", "close the private conversation in view (in a room: leave "
            "it)", "slash_close", needs_room=False),
    Command("list", "/list", "the server's rooms, to pick one to join (Ctrl+K)",
            "slash_list", needs_room=False),
    Command("notify", "/notify [name]", "be told when someone comes online or goes; "
            "/notify alone: the list; again: off the list", "slash_notify", needs_room=False),
    Command("oper", "/oper [name]", "become a server operator (the password is asked "
            "separately)", "slash_oper", needs_room=False),
    Command("quit", "/quit [reason]", "leave and close the program", "slash_quit",
            needs_room=False),
    Command("help", "/help", "this list", "slash_help", needs_room=False),
)
BY_NAME = {c.name: c for c in COMMANDS}
# The window's keys, for /help and the Help menu (the views bind them).
KEYS: tuple[tuple[str, str], ...] = (
    ("Enter", "send the message"),
    ("Shift+Enter", "a new line in the same message"),
    ("Ctrl+K", "join a room, or go to one you are in (type to filter the list)"),
    ("Alt+Up / Alt+Down", "the conversation above or below (also Ctrl+PgUp / Ctrl+PgDn)"),
    ("Ctrl+W", "leave the room in view, or close the private conversation"),
    ("Ctrl+F", "find in the conversation (Enter: older match, Shift+Enter: newer, Esc: "
               "close)"),
    ("Up / Down", "bring back lines you sent"),
    ("Tab", "complete a name in the room"),
    ("Page Up / Page Down", "scroll the conversation (at the top: older lines)"),
    ("Ctrl+A", "select the whole message"),
    ("Alt+L", "log in, when your name is registered to someone else"),
)
ESCAPE = ("//text", "send a message that starts with /")
HELP: tuple[tuple[str, str], ...] = tuple((c.usage, c.help) for c in COMMANDS) + (ESCAPE,)


@dataclass(frozen=True)
class Invocation:
    """A slash command as typed: ``command`` is None when no command has that name."""

    line: str  # the whole text, as typed
    word: str  # the name typed, lower case
    rest: str  # the arguments, stripped
    command: Command | None


def parse(text: str) -> Invocation | None:
    """``/word rest`` as an invocation; None for text to say (including ``//text``)."""
    if not text.startswith("/") or text.startswith("//"):
        return None
    word, _, rest = text[1:].partition(" ")
    word = word.lower()
    return Invocation(text, word, rest.strip(), BY_NAME.get(word))


def message_text(text: str) -> str:
    """What to say for text that is not a command: ``//text`` says ``/text``."""
    return text[1:] if text.startswith("//") else text
