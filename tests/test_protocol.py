"""protocol.py on its own: no sockets, no threads."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatroom import protocol as P
from chatroom.protocol import Message, ProtocolError


@pytest.mark.parametrize("line, expected", [
    (b"PING x\r\n", Message("PING", ("x",))),
    (b"ping x\n", Message("PING", ("x",))),
    (b":nick!u@h PRIVMSG #chat :hello world\r\n",
     Message("PRIVMSG", ("#chat", "hello world"), "nick!u@h")),
    (b"USER u 0 * :Real Name", Message("USER", ("u", "0", "*", "Real Name"))),
    (b"TOPIC #a :", Message("TOPIC", ("#a", ""))),
    (b"PRIVMSG #a ::-)", Message("PRIVMSG", ("#a", ":-)"))),
    (b"MODE  #a   +o   bob ", Message("MODE", ("#a", "+o", "bob"))),
    (b"@time=2020-01-01T00:00:00Z;+x=a\\sb\\:c :s 001 n :hi",
     Message("001", ("n", "hi"), "s", {"time": "2020-01-01T00:00:00Z", "+x": "a b;c"})),
    ("PRIVMSG #a :caf\u00e9 \U0001F600".encode(), Message("PRIVMSG", ("#a", "café 😀"))),
])
def test_parse(line: bytes, expected: Message) -> None:
    assert P.parse(line) == expected


@pytest.mark.parametrize("line, reason", [
    (b"", "no command"),
    (b"   ", "no command"),
    (b":src", "no command"),
    (b":only :trailing", "no command"),
    (b"PRIV\x00MSG x", "NUL"),
    (b"PRIVMSG #a :a\rb", "CR"),
    (b"PRIVMSG #a :\xff\xfe", "UTF-8"),
    (b"1234 x", "malformed"),
    (b"PRIV-MSG x", "malformed"),
    (b"@tags", "tags"),
    (b"PRIVMSG #a :" + b"x" * 500, "too long"),
])
def test_parse_rejects(line: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        P.parse(line)
    assert reason.lower() in info.value.reason.lower() or reason in str(info.value)


def test_512_limit_counts_crlf_not_tags() -> None:
    body = b"PRIVMSG #a :" + b"x" * (510 - len(b"PRIVMSG #a :"))
    assert len(body) == 510
    P.parse(body + b"\r\n")
    with pytest.raises(ProtocolError) as info:
        P.parse(body + b"y\r\n")
    assert info.value.too_long
    P.parse(b"@" + b"k=" + b"v" * 4000 + b" " + body)


def test_format_line() -> None:
    assert P.format_line("s", "001", "n", "Welcome home") == b":s 001 n :Welcome home\r\n"
    assert P.format_line(None, "PING", "tok") == b"PING tok\r\n"
    assert P.format_line(None, "TOPIC", "#a", "") == b"TOPIC #a :\r\n"
    assert P.format_line(None, "PRIVMSG", "#a", ":)") == b"PRIVMSG #a ::)\r\n"


@pytest.mark.parametrize("params", [("a\r\nQUIT",), ("#a", "x\ny"), ("#a", "nul\x00"),
                                    ("two words", "x"), ("", "x"), (":colon", "x")])
def test_format_refuses_injection(params: tuple[str, ...]) -> None:
    with pytest.raises(ProtocolError):
        P.format_line("s", "PRIVMSG", *params)


def test_format_truncates_on_character_boundary() -> None:
    text = "é" * 600
    line = P.format_line("nick!user@host", "PRIVMSG", "#chat", text, truncate=True)
    assert len(line) <= 512
    kept = P.parse(line).params[1]
    assert kept == "é" * len(kept) and len(line) >= 511
    with pytest.raises(ProtocolError):
        P.format_line("s", "PRIVMSG", "#chat", text)


@pytest.mark.parametrize("nick, ok", [
    ("alice", True), ("Bob_", True), ("[x]", True), ("a-1", True), ("`^{|}\\", True),
    ("1abc", False), ("-a", False), ("a b", False), ("a,b", False), ("#a", False),
    (":a", False), ("", False), ("a" * 30, True), ("a" * 31, False), ("é", False),
    ("a!b", False), ("a@b", False), ("*", False),
])
def test_nick_rules(nick: str, ok: bool) -> None:
    assert P.valid_nick(nick) is ok
    assert (P.nick_problem(nick) is None) is ok


@pytest.mark.parametrize("name, ok", [
    ("#chat", True), ("#", False), ("chat", False), ("#a b", False), ("#a,b", False),
    ("#a:b", False), ("#a\x07", False), ("#" + "x" * 49, True), ("#" + "x" * 50, False),
    ("#café", True), ("&a", False),
])
def test_channel_rules(name: str, ok: bool) -> None:
    assert P.valid_channel(name) is ok


def test_ascii_casemapping() -> None:
    assert P.casefold("NiCk[]\\~") == "nick[]\\~"  # ascii: brackets do not fold
    assert P.casefold("ÉA") == "Éa"


# --- properties ------------------------------------------------------------------------

_middle = st.text(st.characters(blacklist_characters="\r\n\x00 :",
                                blacklist_categories=("Cs",)), min_size=1, max_size=20)
_trailing = st.text(st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)),
                    max_size=100)
_command = st.one_of(st.from_regex(r"[A-Z]{1,10}", fullmatch=True),
                     st.from_regex(r"[0-9]{3}", fullmatch=True))
_source = st.none() | st.from_regex(r"[a-z][a-z0-9]{0,8}![a-z~]{1,5}@[a-z0-9.]{1,15}",
                                    fullmatch=True)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    middles = draw(st.lists(_middle.filter(lambda s: not s.startswith(":")), max_size=5))
    params = tuple(middles)
    if draw(st.booleans()):
        params += (draw(_trailing),)
    return Message(draw(_command), params, draw(_source))


@given(messages())
@settings(max_examples=300)
def test_parse_format_roundtrip(msg: Message) -> None:
    try:
        data = msg.to_bytes()
    except ProtocolError as exc:
        assert exc.too_long
        return
    assert P.parse(data) == msg


@given(st.binary(max_size=700))
@settings(max_examples=500)
def test_arbitrary_bytes_raise_only_protocol_error(data: bytes) -> None:
    try:
        msg = P.parse(data)
    except ProtocolError:
        return
    assert isinstance(msg, Message)
    assert msg.command


@given(st.lists(st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"")), max_size=20),
       st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=20))
@settings(max_examples=300)
def test_splitter_is_chunking_independent(lines: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    chunks, i, k = [], 0, 0
    while i < len(stream):
        n = cuts[k % len(cuts)]
        chunks.append(stream[i:i + n])
        i += n
        k += 1
    splitter = P.LineSplitter(limit=64)
    out: list[object] = []
    for chunk in chunks:
        out += splitter.feed(chunk)
    expected = [line if len(line) <= 64 else P.TOO_LONG for line in lines]
    assert out == expected
    assert not splitter.partial


def test_splitter_bounds_memory_on_endless_line() -> None:
    splitter = P.LineSplitter(limit=1000)
    for _ in range(1000):  # 10 MB without a newline
        assert splitter.feed(b"x" * 10_000) == []
        assert splitter.pending <= 1000
    assert splitter.feed(b"tail\nPING x\n") == [P.TOO_LONG, b"PING x"]


@given(st.text(max_size=40))
def test_name_rules_never_raise(name: str) -> None:
    assert isinstance(P.valid_nick(name), bool)
    assert isinstance(P.valid_channel(name), bool)
    problem = P.nick_problem(name)
    assert problem is None or isinstance(problem, str)
    assert P.casefold(P.casefold(name)) == P.casefold(name)


@given(st.text(max_size=300), st.integers(min_value=0, max_value=400))
def test_truncate_text_is_valid_utf8_prefix(text: str, limit: int) -> None:
    text = text.encode("utf-8", "replace").decode("utf-8", "replace")
    cut = P.truncate_text(text, limit)
    assert text.startswith(cut)
    assert len(cut.encode()) <= limit
