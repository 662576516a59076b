"""The IRC message grammar, numerics and name rules: pure functions, no sockets, no threads.

A line on the wire is ``[@tags] [:source] COMMAND param* [:trailing]`` ending in ``\\r\\n``
(modern.ircdocs.horse, RFC 2812, IRCv3 message-tags).  Everything that can go wrong while
reading a line raises :class:`ProtocolError`, and nothing else, so the server turns bad input
into one error reply in one place.

The file host's few HTTP header rules (``Content-Disposition`` names, RFC 6266 and 8187)
are here too, so the server's file host and the client's transfers read them alike.

Limits: the part of a line after the tags is at most 512 bytes including ``\\r\\n``; the tags
section at most 8191 bytes.  Text is UTF-8.  Names use the ``ascii`` casemapping.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_LINE = 512  # bytes, with the CRLF, tags not counted
MAX_TAGS = 8191  # bytes of the tags section, with its '@' and trailing space
MAX_CLIENT_TAGS = 4096  # the part of that a client may send (IRCv3 message-tags)
# The most a single line may hold before its newline arrives: tags + body.
MAX_FRAME = MAX_TAGS + MAX_LINE

# Numerics, named as in modern.ircdocs.horse.
RPL_WELCOME = "001"
RPL_YOURHOST = "002"
RPL_CREATED = "003"
RPL_MYINFO = "004"
RPL_ISUPPORT = "005"
RPL_UMODEIS = "221"
RPL_LUSERCLIENT = "251"
RPL_LUSEROP = "252"
RPL_LUSERUNKNOWN = "253"
RPL_LUSERCHANNELS = "254"
RPL_LUSERME = "255"
RPL_LOCALUSERS = "265"
RPL_GLOBALUSERS = "266"
RPL_AWAY = "301"
RPL_USERHOST = "302"
RPL_ISON = "303"
RPL_UNAWAY = "305"
RPL_NOWAWAY = "306"
RPL_WHOISUSER = "311"
RPL_WHOISSERVER = "312"
RPL_ENDOFWHO = "315"
RPL_WHOISIDLE = "317"
RPL_ENDOFWHOIS = "318"
RPL_WHOISCHANNELS = "319"
RPL_LISTSTART = "321"
RPL_LIST = "322"
RPL_LISTEND = "323"
RPL_CHANNELMODEIS = "324"
RPL_CREATIONTIME = "329"
RPL_NOTOPIC = "331"
RPL_TOPIC = "332"
RPL_TOPICWHOTIME = "333"
RPL_INVITING = "341"
RPL_INVITELIST = "336"
RPL_ENDOFINVITELIST = "337"
RPL_EXCEPTLIST = "348"
RPL_ENDOFEXCEPTLIST = "349"
RPL_INVEXLIST = "346"
RPL_ENDOFINVEXLIST = "347"
RPL_VERSION = "351"
RPL_WHOREPLY = "352"
RPL_NAMREPLY = "353"
RPL_ENDOFNAMES = "366"
RPL_BANLIST = "367"
RPL_ENDOFBANLIST = "368"
RPL_WHOWASUSER = "314"
RPL_ENDOFWHOWAS = "369"
RPL_MOTD = "372"
RPL_MOTDSTART = "375"
RPL_ENDOFMOTD = "376"
RPL_TIME = "391"
ERR_UNKNOWNERROR = "400"
ERR_NOSUCHNICK = "401"
ERR_NOSUCHSERVER = "402"
ERR_NOSUCHCHANNEL = "403"
ERR_CANNOTSENDTOCHAN = "404"
ERR_TOOMANYCHANNELS = "405"
ERR_WASNOSUCHNICK = "406"
ERR_NORECIPIENT = "411"
ERR_NOTEXTTOSEND = "412"
ERR_INPUTTOOLONG = "417"
ERR_UNKNOWNCOMMAND = "421"
ERR_NOMOTD = "422"
ERR_NONICKNAMEGIVEN = "431"
ERR_ERRONEUSNICKNAME = "432"
ERR_NICKNAMEINUSE = "433"
ERR_USERNOTINCHANNEL = "441"
ERR_NOTONCHANNEL = "442"
ERR_USERONCHANNEL = "443"
ERR_NOTREGISTERED = "451"
ERR_NEEDMOREPARAMS = "461"
ERR_ALREADYREGISTERED = "462"
ERR_PASSWDMISMATCH = "464"
ERR_CHANNELISFULL = "471"
ERR_BANNEDFROMCHAN = "474"
ERR_BADCHANNELKEY = "475"
ERR_BANLISTFULL = "478"
ERR_INVALIDMODEPARAM = "696"
ERR_UNKNOWNMODE = "472"
ERR_INVITEONLYCHAN = "473"
ERR_BADCHANMASK = "476"
ERR_CHANOPRIVSNEEDED = "482"
ERR_UMODEUNKNOWNFLAG = "501"
ERR_USERSDONTMATCH = "502"
ERR_INVALIDCAPCMD = "410"
RPL_WHOISACCOUNT = "330"
# Server operators, server bans and the server's own information (Modern).
RPL_WHOISOPERATOR = "313"
RPL_YOUREOPER = "381"
ERR_YOUREBANNEDCREEP = "465"
ERR_NOPRIVILEGES = "481"
ERR_NOOPERHOST = "491"
RPL_STATSKLINE = "216"
RPL_ENDOFSTATS = "219"
RPL_ADMINME = "256"
RPL_ADMINLOC1 = "257"
RPL_ADMINLOC2 = "258"
RPL_ADMINEMAIL = "259"
RPL_INFO = "371"
RPL_ENDOFINFO = "374"
ERR_HELPNOTFOUND = "524"
RPL_HELPSTART = "704"
RPL_HELPTXT = "705"
RPL_ENDOFHELP = "706"
# MONITOR (IRCv3 monitor), bot mode (IRCv3 bot-mode), WHOX (IRCv3 whox).
RPL_MONONLINE = "730"
RPL_MONOFFLINE = "731"
RPL_MONLIST = "732"
RPL_ENDOFMONLIST = "733"
ERR_MONLISTFULL = "734"
RPL_WHOISBOT = "335"
RPL_WHOSPCRPL = "354"
# SASL (IRCv3 sasl-3.1), with the exact parameters the spec gives.
RPL_LOGGEDIN = "900"  # <nick> <nick>!<user>@<host> <account> :You are now logged in as <account>
RPL_LOGGEDOUT = "901"  # <nick> <nick>!<user>@<host> :You are now logged out
ERR_NICKLOCKED = "902"
RPL_SASLSUCCESS = "903"
ERR_SASLFAIL = "904"
ERR_SASLTOOLONG = "905"
ERR_SASLABORTED = "906"
ERR_SASLALREADY = "907"
RPL_SASLMECHS = "908"

# The usual text of an error numeric, for the numerics that always say the same thing.
ERROR_TEXT = {
    ERR_NOSUCHNICK: "No such nick/channel",
    ERR_NOSUCHCHANNEL: "No such channel",
    ERR_CANNOTSENDTOCHAN: "Cannot send to channel",
    ERR_INPUTTOOLONG: "Input line was too long",
    ERR_UNKNOWNCOMMAND: "Unknown command",
    ERR_NONICKNAMEGIVEN: "No nickname given",
    ERR_ERRONEUSNICKNAME: "Erroneous nickname",
    ERR_NICKNAMEINUSE: "Nickname is already in use",
    ERR_USERNOTINCHANNEL: "They aren't on that channel",
    ERR_NOTONCHANNEL: "You're not on that channel",
    ERR_USERONCHANNEL: "is already on channel",
    ERR_NOTREGISTERED: "You have not registered",
    ERR_NEEDMOREPARAMS: "Not enough parameters",
    ERR_ALREADYREGISTERED: "You may not reregister",
    ERR_CHANOPRIVSNEEDED: "You're not channel operator",
    ERR_TOOMANYCHANNELS: "You have joined too many channels",
    ERR_CHANNELISFULL: "Cannot join channel (+l)",
    ERR_INVITEONLYCHAN: "Cannot join channel (+i)",
    ERR_BANNEDFROMCHAN: "Cannot join channel (+b)",
    ERR_BADCHANNELKEY: "Cannot join channel (+k)",
}


class ProtocolError(ValueError):
    """A line or name that breaks the grammar.  ``reason`` is short and human-readable."""

    def __init__(self, reason: str, *, too_long: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.too_long = too_long


@dataclass(frozen=True, slots=True)
class Message:
    """One IRC message.  ``params`` holds every parameter; the last may contain spaces."""

    command: str
    params: tuple[str, ...] = ()
    source: str | None = None
    tags: dict[str, str] = field(default_factory=dict, compare=True, hash=False)

    def to_bytes(self, *, truncate: bool = False) -> bytes:
        return format_message(self, truncate=truncate)


# --- casemapping and names -------------------------------------------------------------

_FOLDS = {
    "ascii": str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"),
    "rfc1459": str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ[]\\~", "abcdefghijklmnopqrstuvwxyz{}|^"),
    "strict-rfc1459": str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ[]\\",
                                    "abcdefghijklmnopqrstuvwxyz{}|"),
}


def isupport_value(value: str) -> str:
    """``value`` escaped for an ISUPPORT token (``\\xHH`` for backslash, space and ``=``)."""
    return value.replace("\\", "\\x5C").replace(" ", "\\x20").replace("=", "\\x3D")


def casefold(name: str, casemapping: str = "ascii") -> str:
    """Fold a nick or channel name for comparison.

    Our server uses ``ascii`` (only A-Z change); a client talking to another server folds
    with what its ISUPPORT ``CASEMAPPING`` names.  An unknown mapping (``rfc7613``, say) is
    Unicode-aware, so Python's ``lower`` is the closest match.
    """
    table = _FOLDS.get(casemapping)
    return name.translate(table) if table is not None else name.lower()


NICKLEN = 30
CHANNELLEN = 50
TOPICLEN = 390
USERLEN = 10
KICKLEN = 255
AWAYLEN = 200
CHANTYPES = "#"

# RFC 2812 nick grammar: a letter or special first, then letters, digits, specials, '-'.
_NICK_RE = re.compile(r"[A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}-]*\Z")
# A channel is '#' then anything but NUL, BELL, CR, LF, space, comma and colon.
_CHANNEL_RE = re.compile(r"#[^\x00\x07\r\n ,:]+\Z")
_USER_RE = re.compile(r"[^\x00\r\n @]+\Z")


def valid_nick(nick: str, nicklen: int = NICKLEN) -> bool:
    return 0 < len(nick) <= nicklen and _NICK_RE.match(nick) is not None


def nick_problem(nick: str, nicklen: int = NICKLEN) -> str | None:
    """Explain in words why ``nick`` is not a valid nickname, or None if it is."""
    if not nick:
        return "a name is required"
    if len(nick) > nicklen:
        return f"a name is at most {nicklen} characters"
    if " " in nick:
        return "a name cannot contain spaces"
    if nick[0].isdigit() or nick[0] == "-":
        return "a name cannot start with a digit or '-'"
    if not valid_nick(nick, nicklen):
        return "a name may use only letters A-Z, digits, '-' and []\\`_^{|}"
    return None


def valid_channel(name: str, channellen: int = CHANNELLEN) -> bool:
    return 1 < len(name) <= channellen and _CHANNEL_RE.match(name) is not None


def is_channel(target: str) -> bool:
    return target[:1] in CHANTYPES


def mask_matcher(mask: str) -> Callable[[str], bool]:
    """A matcher for an IRC wildcard mask: only '*' and '?' are special ('\\' escapes)."""
    out, escaped = [], False
    for ch in mask:
        if escaped:
            out.append(re.escape(ch))
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        else:
            out.append(re.escape(ch))
    pattern = re.compile("".join(out) + r"\Z", re.DOTALL)
    return lambda name: pattern.match(name) is not None


def sanitize_user(user: str, userlen: int = USERLEN) -> str:
    """Make a USER name safe for ``nick!user@host``: drop what the grammar forbids."""
    cleaned = "".join(ch for ch in user if ch.isascii() and ch.isprintable() and ch not in " @!")
    return cleaned[:userlen]


# --- parsing ---------------------------------------------------------------------------

_TAG_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_TAG_ESCAPES = str.maketrans({";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"})
_COMMAND_RE = re.compile(r"(?:[A-Za-z]+|[0-9]{3})\Z")


def _unescape_tag(value: str) -> str:
    out = []
    it = iter(value)
    for ch in it:
        if ch == "\\":
            nxt = next(it, "")
            out.append(_TAG_UNESCAPES.get(nxt, nxt))
        else:
            out.append(ch)
    return "".join(out)


def _parse_tags(raw: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in raw.split(";"):
        if not item:
            continue
        key, _, value = item.partition("=")
        if not key:
            raise ProtocolError("empty tag key")
        tags[key] = _unescape_tag(value)
    return tags


def parse(line: bytes | str, *, limits: bool = True) -> Message:
    """Parse one line (with or without its line ending) into a :class:`Message`.

    Raises :class:`ProtocolError` for anything that is not a well-formed message: invalid
    UTF-8, NUL or CR/LF inside the line, a body over 512 bytes, no command.  ``limits=False``
    skips the length limits (a client reading a server it trusts more than the grammar).
    """
    if isinstance(line, str):
        raw = line.encode("utf-8", "surrogatepass")
    else:
        raw = bytes(line)
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    body_start = 0
    if raw.startswith(b"@"):
        space = raw.find(b" ")
        if space < 0:
            raise ProtocolError("tags without a command")
        if limits and space + 1 > MAX_CLIENT_TAGS:
            raise ProtocolError("tags too long", too_long=True)
        body_start = space + 1
    if limits and len(raw) - body_start + 2 > MAX_LINE:
        raise ProtocolError("line too long", too_long=True)
    if b"\x00" in raw or b"\r" in raw or b"\n" in raw:
        raise ProtocolError("NUL, CR or LF inside the line")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("not valid UTF-8") from None

    tags: dict[str, str] = {}
    rest = text
    if rest.startswith("@"):
        raw_tags, _, rest = rest[1:].partition(" ")
        tags = _parse_tags(raw_tags)
    rest = rest.lstrip(" ")
    source = None
    if rest.startswith(":"):
        source, _, rest = rest[1:].partition(" ")
        if not source:
            raise ProtocolError("empty source")
        rest = rest.lstrip(" ")
    head, sep, trailing = rest.partition(" :")
    # Only ASCII space separates parameters (str.split() would also split on \x1f etc.).
    words = [w for w in head.split(" ") if w]
    if rest.startswith(":"):
        # No command at all, just a trailing parameter.
        raise ProtocolError("no command")
    if not words:
        raise ProtocolError("no command")
    command = words[0]
    if not _COMMAND_RE.match(command):
        raise ProtocolError("malformed command")
    params = words[1:]
    if sep:
        params.append(trailing)
    return Message(command.upper(), tuple(params), source, tags)


# --- formatting ------------------------------------------------------------------------


def _check_middle(param: str) -> None:
    if not param or param.startswith(":") or " " in param:
        raise ProtocolError(f"parameter {param!r} must be last")


def _truncate_utf8(data: bytes, limit: int) -> bytes:
    """Cut ``data`` to at most ``limit`` bytes without splitting a UTF-8 character."""
    if len(data) <= limit:
        return data
    cut = data[:limit]
    # Step back over continuation bytes (10xxxxxx) to the start of the cut character.
    end = len(cut)
    i = end - 1
    while i >= 0 and (cut[i] & 0xC0) == 0x80:
        i -= 1
    if i >= 0:
        lead = cut[i]
        need = 1 if lead < 0x80 else 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4
        if end - i < need:
            cut = cut[:i]
    return cut


def format_line(
    source: str | None,
    command: str,
    *params: str,
    tags: dict[str, str] | None = None,
    truncate: bool = False,
    trailing: bool = False,
) -> bytes:
    """Build one wire line (with CRLF).

    Every parameter but the last must be a non-empty word with no leading ':'.  No parameter
    may hold CR, LF or NUL: such a line could be read as two messages, so it is refused.
    With ``truncate`` an over-long last parameter is cut (on a character boundary) to fit
    512 bytes; without it an over-long line raises :class:`ProtocolError`.  ``trailing``
    always marks the last parameter with ':' (free text: clients that split on " :" for
    the text of a message then get one-word messages right too).
    """
    parts: list[str] = []
    if source:
        parts.append(":" + source)
    parts.append(command)
    if params:
        for p in params[:-1]:
            _check_middle(p)
        parts.extend(params[:-1])
        last = params[-1]
        if trailing or not last or last.startswith(":") or " " in last:
            last = ":" + last
        parts.append(last)
    body = " ".join(parts)
    if "\r" in body or "\n" in body or "\x00" in body:
        raise ProtocolError("CR, LF or NUL in an outgoing parameter")
    data = body.encode("utf-8")
    if len(data) + 2 > MAX_LINE:
        if not truncate or not params:
            raise ProtocolError("outgoing line too long", too_long=True)
        data = _truncate_utf8(data, MAX_LINE - 2)
    return (tag_section(tags) if tags else b"") + data + b"\r\n"


def tag_section(tags: dict[str, str]) -> bytes:
    """``@k=v;k2 `` (escaped, with its trailing space) to put in front of a line.

    A NUL has no escape in the tag grammar, so a value holding one is refused.
    """
    if any("\x00" in v for v in tags.values()):
        raise ProtocolError("NUL in an outgoing tag value")
    return ("@" + ";".join(
        k if v == "" else f"{k}={v.translate(_TAG_ESCAPES)}" for k, v in tags.items()
    ) + " ").encode("utf-8")


_CLIENT_TAG_RE = re.compile(r"\+(?:[A-Za-z0-9.-]+/)?[A-Za-z0-9-]+\Z")


def client_tags(tags: dict[str, str]) -> dict[str, str]:
    """The client-only tags (``+key``, well formed) of ``tags``: the ones a server relays.

    Anything else a client sends (``time``, ``msgid``, ``account``...) is the server's to
    say, so it is never passed on.
    """
    return {k: v for k, v in tags.items() if k[:1] == "+" and _CLIENT_TAG_RE.match(k)}


class EventClock:
    """The identity of each storable event: its ``time``, which also names it (``msgid``).

    Times are UTC milliseconds and strictly increasing (two events in one millisecond get
    consecutive ones), so a time is unique server-wide and a stream sorted by time is the
    order events happened; under a sustained load above 1,000 events a second they run
    ahead of the clock until the load eases.  The ``msgid`` is the time in hex, so a store
    needs one key for both kinds of reference; :meth:`start_after` keeps ids from
    repeating across restarts.  :meth:`stamp` only counts (it is on the hot path of every
    message); :meth:`msgid` and :meth:`time_text` spell a stamp out when a recipient or a
    store needs it.  Not thread-safe: the server calls it with its registry lock held,
    which also makes the order of stamps the order in which everyone sees the events.
    """

    __slots__ = ("_last_ms", "_second", "_second_text")

    def __init__(self) -> None:
        self._last_ms = 0
        self._second = -1
        self._second_text = ""

    def start_after(self, ms: int) -> None:
        """Never stamp at or before ``ms`` (the newest stored event's time)."""
        self._last_ms = max(self._last_ms, ms)

    def stamp(self, now: float) -> int:
        """The time (milliseconds since the epoch) of one event at ``now`` (seconds)."""
        ms = int(now * 1000)
        if ms <= self._last_ms:
            ms = self._last_ms + 1
        self._last_ms = ms
        return ms

    @staticmethod
    def msgid(ms: int) -> str:
        return f"{ms:x}"

    def time_text(self, ms: int) -> str:
        """``2026-12-02T05:18:54.926Z`` (strftime once a second, not once an event)."""
        second = ms // 1000
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{ms % 1000:03d}Z"


def format_time(ms: int) -> str:
    """A server-time value, from any thread (:meth:`EventClock.time_text` caches)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


_HEX = frozenset("0123456789abcdef")
_TIME_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?Z\Z")


def parse_msgid(text: str) -> int | None:
    """The time an ``msgid`` of this server names, or None if it is not one of ours."""
    if not 0 < len(text) <= 13 or not _HEX.issuperset(text):
        return None
    return int(text, 16)


def parse_time(text: str) -> int | None:
    """Milliseconds since the epoch of a server-time ``YYYY-MM-DDThh:mm:ss.sssZ``, or None."""
    m = _TIME_RE.match(text)
    if not m:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac = (m.group(7) or "0").ljust(3, "0")[:3]
    try:
        when = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
        real = time.gmtime(when)[:6]
    except (OverflowError, ValueError, OSError):
        return None
    if real != (year, month, day, hour, minute, second):  # 2026-02-30, 25:00 and the like
        return None
    return when * 1000 + int(frac)


def format_message(msg: Message, *, truncate: bool = False) -> bytes:
    return format_line(msg.source, msg.command, *msg.params, tags=msg.tags, truncate=truncate)


def strip_bad(text: str) -> str:
    """Replace the characters that can never appear inside a parameter (CR, LF, NUL)."""
    if "\r" in text or "\n" in text or "\x00" in text:
        return text.replace("\r", " ").replace("\n", " ").replace("\x00", "")
    return text


def echo_param(text: str, limit: int = 64) -> str:
    """Make client-supplied text safe to echo back as a middle parameter of a reply.

    It becomes one word (up to the first space, no CR/LF/NUL), at most ``limit``
    characters, never empty and never starting with ':'; '*' stands in for nothing left.
    """
    word = strip_bad(text).split(" ", 1)[0][:limit]
    return word if word and not word.startswith(":") else "*"


def truncate_text(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` UTF-8 bytes on a character boundary."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return _truncate_utf8(data, limit).decode("utf-8")


# --- framing ---------------------------------------------------------------------------

TOO_LONG = object()  # marker yielded by LineSplitter in place of an over-long line


class LineSplitter:
    """Split a byte stream into lines, however it is chunked, with a hard bound on memory.

    ``feed`` returns complete lines (without their ``\\n``; a trailing ``\\r`` is kept for
    :func:`parse` to strip).  A line longer than ``limit`` bytes is discarded as it arrives
    and reported once as :data:`TOO_LONG` when its newline comes, so 10 MB without a
    newline costs at most ``limit`` bytes of buffer.
    """

    __slots__ = ("limit", "_buf", "_discarding")

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self.limit = limit
        self._buf = b""
        self._discarding = False

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held (0 while discarding an over-long one)."""
        return len(self._buf)

    @property
    def partial(self) -> bool:
        """True while a line has started but its newline has not arrived."""
        return bool(self._buf) or self._discarding

    def feed(self, data: bytes) -> list[bytes | object]:
        out: list[bytes | object] = []
        if self._buf:
            data = self._buf + data
            self._buf = b""
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            if self._discarding:
                self._discarding = False
                out.append(TOO_LONG)
            elif nl - start > self.limit:
                out.append(TOO_LONG)
            else:
                out.append(data[start:nl])
            start = nl + 1
        rest = len(data) - start
        if rest:
            if self._discarding or rest > self.limit:
                self._discarding = True
            else:
                self._buf = data[start:] if start else data
        return out


# --- flood control ---------------------------------------------------------------------


class TokenBucket:
    """A burst of ``burst`` actions, then ``rate`` per second: the one rate limiter.

    Pure arithmetic on the ``now`` it is given (a monotonic clock), so both sides share it:
    the server paces and cuts flooding clients with it, the client paces its CTCP replies.
    Not thread-safe: each bucket belongs to one thread.
    """

    __slots__ = ("burst", "rate", "tokens", "stamp")

    def __init__(self, burst: float, rate: float, now: float) -> None:
        self.burst = float(burst)
        self.rate = rate
        self.tokens = self.burst
        self.stamp = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def debt_after(self, n: int, now: float) -> float:
        """How far below empty ``n`` more actions would take the bucket (0 if they fit)."""
        self._refill(now)
        return max(0.0, n - self.tokens)

    def take(self, now: float) -> float:
        """Spend one token, going into debt if need be; return how long to wait first."""
        self._refill(now)
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def try_take(self, now: float) -> bool:
        """Spend one token if one is there; False (and nothing spent) if not."""
        self._refill(now)
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


# --- SASL (IRCv3 sasl-3.1/3.2) -----------------------------------------------------------

SASL_CHUNK = 400  # base64 bytes per AUTHENTICATE line; a full chunk means more follows
SASL_LIMIT = 2000  # base64 bytes of one whole response (PLAIN with the longest password: ~560)


class SaslResponse:
    """The chunks of one client response as they arrive (``AUTHENTICATE <400 bytes>`` means
    more follow; a shorter chunk or ``+`` ends it)."""

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0

    def feed(self, chunk: str) -> bytes | None:
        """Take one chunk; the decoded response once complete, else None.  Raises
        :class:`ProtocolError` (``too_long`` for an oversized chunk or response)."""
        if len(chunk) > SASL_CHUNK:
            raise ProtocolError("SASL message too long", too_long=True)
        if chunk != "+":
            self.size += len(chunk)
            if self.size > SASL_LIMIT:
                raise ProtocolError("SASL response too long", too_long=True)
            self.parts.append(chunk)
            if len(chunk) == SASL_CHUNK:
                return None
        try:
            return base64.b64decode("".join(self.parts), validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("SASL response is not valid base64") from None


def sasl_plain(response: bytes) -> tuple[str, str, str]:
    """(authzid, authcid, password) of a PLAIN response (RFC 4616), or ProtocolError."""
    fields = response.split(b"\0")
    if len(fields) != 3:
        raise ProtocolError("PLAIN wants authzid NUL authcid NUL password")
    try:
        authzid, authcid, password = (f.decode("utf-8") for f in fields)
    except UnicodeDecodeError:
        raise ProtocolError("PLAIN credentials must be UTF-8") from None
    if not authcid or not password:
        raise ProtocolError("PLAIN needs a name and a password")
    return authzid, authcid, password


# --- file host headers (soju.im/FILEHOST over HTTP: RFC 6266 and RFC 8187) ----------------

HTTP_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
HTTP_QUOTED = r'"(?:[^"\\]|\\.)*"'
_DISPOSITION_TYPE = re.compile(rf"\s*{HTTP_TOKEN}")
_DISPOSITION_PARAM = re.compile(rf"\s*;\s*({HTTP_TOKEN})\s*=\s*({HTTP_TOKEN}|{HTTP_QUOTED})",
                                re.DOTALL)


def http_unquote(value: str) -> str:
    """A header parameter's value: a quoted-string unescaped, a token as it is."""
    if value.startswith('"'):
        return re.sub(r"\\(.)", r"\1", value[1:-1], flags=re.DOTALL)
    return value


def _ext_value(value: str) -> str | None:
    """RFC 8187 (5987) ``charset'lang'pct-encoded``; None if it is not one we can read."""
    charset, sep1, rest = value.partition("'")
    _lang, sep2, encoded = rest.partition("'")
    if not (sep1 and sep2) or charset.lower() not in ("utf-8", "iso-8859-1"):
        return None
    if not re.fullmatch(r"(?:[!#$&+\-.^_`|~0-9A-Za-z]|%[0-9A-Fa-f]{2})*", encoded):
        return None
    try:
        return urllib.parse.unquote(encoded, encoding=charset.lower(), errors="strict")
    except UnicodeDecodeError:
        return None


def _latin1_as_utf8(text: str) -> str:
    """Python's HTTP modules read headers as Latin-1; a raw UTF-8 name (browsers send
    them) is read back as the UTF-8 it was."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def disposition_filename(header: str | None) -> str | None:
    """The filename a ``Content-Disposition`` gives (RFC 6266): ``filename*`` first, then
    ``filename``; None without one.  Nothing here is ever used as a path."""
    if not header:
        return None
    match = _DISPOSITION_TYPE.match(header)
    pos = match.end() if match else 0
    params: dict[str, str] = {}
    while (param := _DISPOSITION_PARAM.match(header, pos)) is not None:
        params.setdefault(param.group(1).lower(), param.group(2))
        pos = param.end()
    if "filename*" in params:
        extended = _ext_value(params["filename*"])
        if extended:
            return extended
    if "filename" in params:
        return _latin1_as_utf8(http_unquote(params["filename"]))
    return None


def content_disposition(kind: str, name: str) -> str:
    """``kind`` (``attachment``, ``inline``) with ``name`` twice (RFC 6266): an ASCII
    fallback in ``filename`` and the exact name in ``filename*`` (RFC 8187, UTF-8)."""
    fallback = "".join(ch if " " <= ch <= "~" and ch not in '"\\%' else "_" for ch in name)
    exact = urllib.parse.quote(name, safe="")
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{exact}"
