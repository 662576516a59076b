"""What the client remembers between starts: settings, rooms, profiles (no display)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from chatroom import app as A
from chatroom import pins
from chatroom.settings import RoomMemory, Saved, Settings


def test_settings_round_trip_private_and_atomic(tmp_path: Path) -> None:
    store = Settings(tmp_path / "cfg" / "settings.json")
    assert store.load() == Saved()
    store.save(host="chat.example", port=6697, name="zoe", tls=True, mode="login")
    store.save(geometry="900x600")  # a later save keeps the rest
    assert store.load() == Saved("chat.example", 6697, "zoe", True, "login", "900x600")
    mode = stat.S_IMODE(os.stat(tmp_path / "cfg" / "settings.json").st_mode)
    assert mode == 0o600
    assert not [p for p in (tmp_path / "cfg").iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(TypeError):
        store.save(password="never")  # there is no such setting: passwords live elsewhere


@pytest.mark.parametrize("text", [
    "{not json", '{"settings": 5}',
    '{"settings": {"port": 99999, "host": 7, "mode": "root", "tls": "yes"}}', "\xff"])
def test_damaged_settings_count_as_defaults(tmp_path: Path, text: str) -> None:
    path = tmp_path / "settings.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape") if text != "\xff" else b"\xff")
    assert Settings(path).load() == Saved()


def test_rooms_per_server_and_name(tmp_path: Path) -> None:
    memory = RoomMemory(tmp_path / "rooms.json")
    memory.set("Chat.Example", 1027, "Zoe", ["#a", "#b"])
    memory.set("chat.example", 6697, "zoe", ["#tls"])
    assert memory.get("chat.example", 1027, "zoe") == ["#a", "#b"]
    assert memory.get("chat.example", 6697, "ZOE") == ["#tls"]
    assert memory.get("chat.example", 1027, "bob") == []
    memory.set("chat.example", 1027, "zoe", [])
    assert memory.get("chat.example", 1027, "zoe") == []
    data = json.loads((tmp_path / "rooms.json").read_text())
    assert list(data["rooms"]) == ["chat.example:6697/zoe"]


def test_the_command_line_wins_over_what_was_saved() -> None:
    saved = Saved("saved.example", 7000, "zoe", True, "login")
    assert A.form_values(A.parse_args([]), saved) == ("saved.example", 7000, "zoe", True)
    # Another host: its own port and TLS defaults, not the saved server's.
    assert A.form_values(A.parse_args(["--host", "other"]), saved) == (
        "other", 1027, "zoe", None)
    assert A.form_values(A.parse_args(["--port", "1"]), saved)[1] == 1
    assert A.form_values(A.parse_args(["--name", "bob"]), saved)[2] == "bob"
    assert A.form_values(A.parse_args([]), Saved()) == ("127.0.0.1", 1027, "", None)


def test_profiles_keep_separate_sets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    try:
        assert pins.config_dir() == tmp_path / "chatroom"
        A.parse_args(["--profile", "work"])
        assert pins.config_dir() == tmp_path / "chatroom" / "profiles" / "work"
        Settings().save(name="at-work")
        pins.set_profile(None)
        assert Settings().load().name == ""
        pins.set_profile("work")
        assert Settings().load().name == "at-work"
        for bad in ("../x", ".hidden", "a/b", "", "x" * 41):
            with pytest.raises(SystemExit):
                A.parse_args(["--profile", bad])
    finally:
        pins.set_profile(None)
