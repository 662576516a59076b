"""Sending and saving files from the window, under Xvfb, against a real server with its
file host: the progress row, the posted link, Save…, and what a guest is told."""

from __future__ import annotations

import threading
import tkinter as tk
from collections.abc import Callable
from pathlib import Path

from conftest import RunningServer, eventually
from test_client_accounts import make_account
from test_gui import Factory, join, make_app, pump  # noqa: F401

from chatroom import app as A
from chatroom import lines as LN


def log_in(root: tk.Tk, app: A.ChatApp, name: str, password: str) -> None:
    app.login.name_var.set(name)
    app.login.set_mode("login")
    app.login.password_var.set(password)
    app.login.join_button.invoke()
    pump(root, lambda: app.phase == "chat" and app.current is not None
         and app.current.joined, what=f"{name} in")


def dora_and_guest(root: tk.Tk, make_app: Factory,
                   make_server: Callable[..., RunningServer]) -> tuple[A.ChatApp, A.ChatApp]:
    """A server with a file host; dora logged in to her account, a guest beside her."""
    srv = make_server(files_port=0)
    make_account(srv, "dora", "dora's pw")
    dora, guest = make_app(srv), make_app(srv)
    log_in(root, dora, "dora", "dora's pw")
    join(root, guest, "guest1")
    return dora, guest


def test_send_a_file_and_save_it(root: tk.Tk, make_app: Factory,
                                 make_server: Callable[..., RunningServer],
                                 tmp_path: Path) -> None:
    dora, guest = dora_and_guest(root, make_app, make_server)
    pump(root, lambda: dora.session is not None and dora.session.server_info.filehost,
         what="the file host advertised")
    body = bytes(range(256)) * 4096  # 1 MiB
    source = tmp_path / "report ü.bin"
    source.write_bytes(body)
    dora.choose_file = lambda: str(source)
    dora.chat.file_button.invoke()
    assert dora.chat.transfer_rows  # the progress row is up at once
    pump(root, lambda: "report ü.bin (1.0 MB) http" in guest.chat.contents(),
         what="the link in the room", timeout=15)
    pump(root, lambda: not dora.chat.transfer_rows, what="the row gone")
    pump(root, lambda: "report ü.bin (1.0 MB) http" in dora.chat.contents(), what="echo")
    # The guest sees a file line with Save…; it saves the file, byte for byte.
    t = guest.chat.text
    at = t.search(LN.SAVE, "1.0")
    assert at and "save" in t.tag_names(at)
    url_at = t.tag_prevrange("file", at)
    url = t.get(url_at[0], url_at[1])
    assert "/files/" in url
    dest = tmp_path / "saved.bin"
    asked: list[str] = []
    guest.choose_destination = lambda name: asked.append(name) or str(dest)
    t.see(at)
    root.update()
    box = t.bbox(f"{at}+1c")
    assert box is not None
    t.event_generate("<Motion>", x=box[0] + 1, y=box[1] + 1)
    t.event_generate("<ButtonRelease-1>", x=box[0] + 1, y=box[1] + 1)
    assert asked == ["report ü.bin"]
    pump(root, lambda: dest.exists() and not guest.chat.transfer_rows, what="saved",
         timeout=15)
    assert dest.read_bytes() == body
    assert "Saved saved.bin (1.0 MB)" in guest.chat.contents()
    # A guest can't send: said why, and how to.
    guest.choose_file = lambda: str(source)
    guest.chat.file_button.invoke()
    assert "Only an account can send files" in guest.chat.contents()
    assert not guest.chat.transfer_rows


def test_cancel_an_upload_and_a_server_without_files(
        root: tk.Tk, make_app: Factory, make_server: Callable[..., RunningServer],
        srv: RunningServer, tmp_path: Path) -> None:
    files = make_server(files_port=0)
    make_account(files, "dora", "dora's pw")
    dora = make_app(files)
    log_in(root, dora, "dora", "dora's pw")
    pump(root, lambda: dora.session is not None and dora.session.server_info.filehost,
         what="the file host advertised")
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (40 * 1024 * 1024))
    dora.choose_file = lambda: str(big)
    # The transfer thread blocks on this gate after its first chunk, so Cancel is sure to
    # be pressed while the upload is under way (not after a fast machine finished it).
    gate = threading.Event()
    report = dora._progress

    def progress(job: A._Job, done: int, total: int | None) -> None:
        report(job, done, total)
        if done:
            gate.wait(10)

    dora._progress = progress  # type: ignore[method-assign]
    dora.chat.file_button.invoke()
    (row,) = dora.chat.transfer_rows.values()
    row.cancel_button.invoke()
    gate.set()
    pump(root, lambda: not dora.chat.transfer_rows, what="cancelled", timeout=15)
    assert "Sending big.bin was cancelled." in dora.chat.contents()
    assert "big.bin (" not in dora.chat.contents()  # no link was posted
    store = files.server.files
    assert store is not None and eventually(lambda: store.used("dora") == 0)
    plain = make_app(srv)
    join(root, plain, "alice")
    plain.chat.file_button.invoke()
    assert "This server does not offer file sharing." in plain.chat.contents()


def png(width: int, height: int) -> bytes:
    """A valid RGB PNG, drawn with zlib alone."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    raw = b"".join(b"\x00" + b"".join(bytes((x % 256, y % 256, 128)) for x in range(width))
                   for y in range(height))  # each row: filter 0, then RGB pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def test_an_image_gets_a_small_preview(root: tk.Tk, make_app: Factory,
                                       make_server: Callable[..., RunningServer],
                                       tmp_path: Path) -> None:
    dora, guest = dora_and_guest(root, make_app, make_server)
    picture = tmp_path / "cat.png"
    picture.write_bytes(png(800, 400))
    dora.choose_file = lambda: str(picture)
    dora.chat.file_button.invoke()
    pump(root, lambda: "cat.png (" in guest.chat.contents(), what="the link", timeout=15)
    t = guest.chat.text
    pump(root, lambda: bool(t.image_names()), what="the preview", timeout=15)
    (name,) = t.image_names()
    image = guest.chat.pane().images[-1]
    assert image.width() <= 320 and image.height() <= 200  # fits the box: 800x400 / 4
    line = t.index(name)
    assert "cat.png" in t.get(f"{line} -1l linestart", f"{line} -1l lineend")
