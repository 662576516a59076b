"""Properties of the IRCv3 message-tags grammar in chatroom.protocol (issue 9).

The references below are written from the spec (ircv3.net/specs/extensions/message-tags),
not from the module: the escaping table, the unescaping rules (an unknown escape ``\\x``
gives ``x``, a lone trailing ``\\`` gives nothing), the last occurrence of a key winning.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from chatroom import protocol as P
from chatroom.protocol import Message, ProtocolError

_ESCAPES = {";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"}
_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}


def ref_escape(value: str) -> str:
    return "".join(_ESCAPES.get(ch, ch) for ch in value)


def ref_unescape(raw: str) -> str:
    out, i = [], 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\":
            if i + 1 < len(raw):
                out.append(_UNESCAPES.get(raw[i + 1], raw[i + 1]))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


# <key> ::= ['+'] [<vendor> '/'] <sequence of letters, digits, hyphens>
_LOWER = "abcdefghijklmnopqrstuvwxyz0123456789"
_name = st.text(_LOWER + "ABCDEFGHIJKLMNOPQRSTUVWXYZ-", min_size=1, max_size=12)
_vendor = st.lists(st.text(_LOWER, min_size=1, max_size=8), min_size=1, max_size=3).map(".".join)


@st.composite
def tag_keys(draw: st.DrawFn) -> str:
    plus = "+" if draw(st.booleans()) else ""
    vendor = draw(st.none() | _vendor)
    return plus + (vendor + "/" if vendor else "") + draw(_name)


# Any Unicode but NUL (and lone surrogates, which UTF-8 can't carry); escapable characters
# and backslashes on purpose.
_value_char = st.one_of(
    st.sampled_from(list(";  \\\r\n:srn=+,@é😀")),
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
)
_values = st.text(_value_char, max_size=40)
_tags = st.dictionaries(tag_keys(), _values, max_size=6)

# What may stand in an <escaped value> on the wire: anything but NUL, CR, LF, ';', SPACE.
_raw_char = st.one_of(
    st.sampled_from(list("\\\\\\:srnbx=+é😀")),
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r\n; "),
)
_raw_values = st.text(_raw_char, max_size=40)

_middle = st.text(st.characters(blacklist_characters="\r\n\x00 :",
                                blacklist_categories=("Cs",)), min_size=1, max_size=20)
_trailing = st.text(st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)),
                    max_size=100)
_command = st.one_of(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=10),
                     st.text("0123456789", min_size=3, max_size=3))
_source = st.none() | st.builds(
    lambda n, u, h: f"{n}!{u}@{h}", st.text("abcdefgh", min_size=1, max_size=9),
    st.text("abc~", min_size=1, max_size=5), st.text("abc0123.", min_size=1, max_size=15))


@st.composite
def tagged_messages(draw: st.DrawFn) -> Message:
    params = tuple(draw(st.lists(_middle, max_size=4)))
    if draw(st.booleans()):
        params += (draw(_trailing),)
    return Message(draw(_command), params, draw(_source), draw(_tags))


@given(tagged_messages())
@settings(max_examples=400)
@example(Message("PRIVMSG", ("#a", "hi"), "n!u@h", {"+example": "raw+:=,escaped; \\"}))
@example(Message("TAGMSG", ("#a",), None, {"+typing": "active", "+flag": "", "a/b": "\\"}))
def test_parse_format_roundtrip_with_tags(msg: Message) -> None:
    try:
        data = P.format_line(msg.source, msg.command, *msg.params, tags=msg.tags)
    except ProtocolError as exc:
        assert exc.too_long
        return
    assert data.endswith(b"\r\n") and b"\r" not in data[:-2] and b"\n" not in data[:-2]
    assert b"\x00" not in data
    parsed = P.parse(data)
    assert parsed == msg
    assert list(parsed.tags.items()) == list(msg.tags.items())  # order kept too
    assert P.parse(msg.to_bytes()) == msg


@given(_tags.filter(bool))
@settings(max_examples=300)
def test_format_escapes_exactly_as_the_spec_says(tags: dict[str, str]) -> None:
    data = P.format_line(None, "PING", "x", tags=tags)
    section, rest = data.split(b" ", 1)
    assert rest == b"PING x\r\n"
    assert section.startswith(b"@")
    items = section[1:].decode().split(";")
    assert len(items) == len(tags)
    for item, (key, value) in zip(items, tags.items()):
        # A key without a value may be sent as "k" or "k=" (the grammar allows both).
        if value == "":
            assert item in (key, key + "=")
        else:
            assert item == f"{key}={ref_escape(value)}"


@given(_raw_values)
@settings(max_examples=400)
@example("test\\")  # a lone trailing backslash gives nothing
@example("a\\b")  # an unknown escape gives the character itself
@example("\\\\s")  # an escaped backslash, then a plain 's'
@example("raw+:=,escaped\\:\\s\\\\")
def test_parse_unescapes_exactly_as_the_spec_says(raw: str) -> None:
    msg = P.parse(("@+k=" + raw + " PING x").encode())
    assert msg.tags == {"+k": ref_unescape(raw)}
    assert msg.command == "PING" and msg.params == ("x",)


@given(_values)
@settings(max_examples=400)
def test_escape_unescape_roundtrip(value: str) -> None:
    escaped = ref_escape(value)
    assert not set(escaped) & {"\x00", "\r", "\n", ";", " "}
    assert ref_unescape(escaped) == value
    line = P.format_line(None, "TAGMSG", "#a", tags={"+v": value})
    section = line.split(b" ", 1)[0]
    assert section == f"@+v={escaped}".encode() or (value == "" and section == b"@+v")
    assert P.parse(line).tags == {"+v": value}


@given(st.lists(st.tuples(st.sampled_from(["a", "+b", "x.org/c"]), _raw_values),
                min_size=1, max_size=6))
@settings(max_examples=200)
def test_last_occurrence_of_a_key_wins(pairs: list[tuple[str, str]]) -> None:
    raw = ";".join(f"{k}={v}" for k, v in pairs)
    msg = P.parse(f"@{raw} PING x".encode())
    expected: dict[str, str] = {}
    for k, v in pairs:
        expected[k] = ref_unescape(v)
    assert msg.tags == expected


@given(tag_keys())
def test_key_without_value_is_empty(key: str) -> None:
    assert P.parse(f"@{key} PING x".encode()).tags == {key: ""}
    assert P.parse(f"@{key}= PING x".encode()).tags == {key: ""}


@given(st.dictionaries(tag_keys(), st.text(max_size=10), max_size=4),
       st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=10))
@settings(max_examples=300)
def test_format_never_puts_nul_cr_lf_on_the_wire(tags: dict[str, str], nasty: str) -> None:
    """Whatever a tag value holds (NUL included), the line is one well-formed line or
    refused with ProtocolError: never a NUL, CR or LF inside it."""
    tags = dict(tags)
    tags["+n"] = nasty
    try:
        data = P.format_line("s", "PRIVMSG", "#a", "hi", tags=tags)
    except ProtocolError:
        return
    inner = data[:-2]
    assert data.endswith(b"\r\n")
    assert b"\x00" not in inner and b"\r" not in inner and b"\n" not in inner
    assert P.parse(data).tags["+n"] == nasty


# --- hostile input ----------------------------------------------------------------------

_hostile_text = st.text(st.sampled_from(list("@+;=\\ :/ab-\x00\r\n\x01é")), max_size=120)


@given(st.one_of(
    st.binary(max_size=300).map(lambda b: b"@" + b),
    st.binary(max_size=300).map(lambda b: b"@" + b + b" PRIVMSG #a :x"),
    _hostile_text.map(lambda s: ("@" + s).encode()),
    _hostile_text.map(lambda s: ("@" + s + " TAGMSG #a").encode()),
    st.binary(max_size=5000).map(lambda b: b"@+k=" + b.replace(b" ", b"") + b" PING x"),
), st.booleans())
@settings(max_examples=800)
def test_arbitrary_tag_bytes_raise_only_protocol_error(data: bytes, limits: bool) -> None:
    try:
        msg = P.parse(data, limits=limits)
    except ProtocolError:
        return
    assert isinstance(msg, Message) and msg.command
    for key, value in msg.tags.items():
        assert isinstance(key, str) and key
        assert isinstance(value, str)
        assert "\x00" not in key + value


@given(st.integers(min_value=0, max_value=40))
def test_client_tag_limit_is_bytes_of_the_section(extra: int) -> None:
    """Up to 4,096 bytes of tags ('@' and the space included) parse; more are too long."""
    size = 4096 - extra
    section = "@+k=" + "v" * (size - 5) + " "
    assert len(section) == size
    assert P.parse((section + "PING x").encode()).tags == {"+k": "v" * (size - 5)}
    over = "@+k=" + "v" * (4096 - 5 + 1 + extra) + " "
    with pytest.raises(ProtocolError) as info:
        P.parse((over + "PING x").encode())
    assert info.value.too_long


@pytest.mark.skipif(not hasattr(P, "client_tags"), reason="no protocol.client_tags")
@given(_tags)
def test_client_tags_keeps_only_plus_keys_in_order(tags: dict[str, str]) -> None:
    kept = P.client_tags(tags)
    assert list(kept.items()) == [(k, v) for k, v in tags.items() if k.startswith("+")]


def test_references_agree_with_the_spec_example() -> None:
    assert ref_escape("raw+:=,escaped; \\") == "raw+:=,escaped\\:\\s\\\\"
    assert ref_unescape("raw+:=,escaped\\:\\s\\\\") == "raw+:=,escaped; \\"
