"""The package's shape: one import direction, read from the source with ``ast``, and an
install that puts nothing but the package (and its two commands) on the machine."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "chatroom"

# Bottom to top; a module may import what is before it on its own side, and the shared part.
SHARED = ["protocol", "transport"]
SERVER = ["config", "certs", "storage", "registry", "writer", "hub", "multiline", "playback",
          "login", "operators", "presence", "modes", "readmarker", "handlers", "connection",
          "housekeeper", "filehost", "admin", "server"]
CLIENT = ["events", "serverinfo", "wording", "pins", "secrets_store", "settings", "transfer",
          "session", "slash", "lines", "convs", "logview", "dialogs", "views", "app"]
TK = {"logview", "dialogs", "views"}  # the window's modules: the only ones that import tkinter
STORES = ["history", "accounts", "files", "moderation", "markers"]  # server side, below registry's users
FACES = {"server", "client", "protocol"}  # the checkout's top-level scripts


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, name) for every import in ``path``: ``chatroom.x`` as ``x``, others whole."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((node.lineno, alias.name))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .x import y
                base = "chatroom" + ("." + base if base else "")
            if base == "chatroom":
                found += [(node.lineno, "chatroom." + a.name) for a in node.names]
            else:
                found.append((node.lineno, base))
    return found


def violations(path: Path) -> list[str]:
    name = path.stem
    if name in SHARED:
        allowed = set(SHARED[:SHARED.index(name)])
    elif name in STORES:
        allowed = set(SHARED) | {m for m in SERVER[:SERVER.index("registry")]}
    elif name in SERVER:
        allowed = set(SHARED) | set(SERVER[:SERVER.index(name)]) | set(STORES)
    elif name in CLIENT:
        allowed = set(SHARED) | set(CLIENT[:CLIENT.index(name)])
    elif name == "__init__":
        allowed = set()
    else:
        return [(f"{path.name}: not placed in a layer (add it to tests/test_layout.py and "
                 f"to the package docstring)")]
    bad = []
    for line, imported in project_imports(path):
        top = imported.split(".")[0]
        if top == "chatroom":
            target = imported.split(".")[1] if "." in imported else ""
            if target not in allowed:
                bad.append(f"{path.name}:{line} imports chatroom.{target}")
        elif top in FACES:
            bad.append(f"{path.name}:{line} imports the face {top!r}")
        elif top == "tkinter" and name not in TK:
            bad.append(f"{path.name}:{line} imports tkinter (only {', '.join(sorted(TK))} may)")
    return bad


def modules() -> list[Path]:
    return sorted(PACKAGE.glob("*.py"))


def test_every_import_points_down_and_stays_on_its_side() -> None:
    problems = [v for path in modules() for v in violations(path)]
    assert not problems, "\n".join(problems)


def test_the_checker_catches_forbidden_imports(tmp_path: Path) -> None:
    """The rule is real: each kind of forbidden import is reported."""
    cases = {
        "protocol.py": "from chatroom import transport\n",
        "registry.py": "from chatroom.handlers import COMMANDS\n",  # upward
        "session.py": "import chatroom.registry\n",  # client side reaching the server side
        "writer.py": "from . import session\n",  # relative, across
        "events.py": "import tkinter\n",  # only views
        "hub.py": "import server\n",  # a face
        "history.py": "from chatroom import registry\n",  # a store reaching the registry
        "gadget.py": "import os\n",  # unplaced
    }
    for filename, source in cases.items():
        path = tmp_path / filename
        path.write_text(source, encoding="utf-8")
        assert violations(path), f"{filename}: {source!r} was allowed"
    ok = tmp_path / "views.py"
    ok.write_text("import tkinter\nfrom chatroom import events, protocol\n", encoding="utf-8")
    assert violations(ok) == []


def test_every_module_is_described() -> None:
    """Each module says what it is for; the package docstring names every module."""
    package_doc = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text())) or ""
    for path in modules():
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert doc, f"{path.name} has no docstring"
        if path.stem != "__init__":
            assert f"``{path.stem}``" in package_doc, f"chatroom/__init__.py omits {path.stem}"


def test_faces_are_thin_and_import_only_the_package() -> None:
    for face in FACES:
        imported = {n.split(".")[0] for _, n in project_imports(ROOT / f"{face}.py")}
        assert imported <= {"sys", "chatroom"}, (face, imported)


def test_install_ships_only_the_package(tmp_path: Path) -> None:
    """A wheel holds ``chatroom/`` and metadata, no top-level ``server``/``client``/
    ``protocol``; its commands point into the package and run from any directory."""
    # Built from a copy, so no build/ left over in the checkout can leak into the wheel.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"))
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
        capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("chatroom-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"chatroom"}, tops
    assert not any(n.endswith(".py") and "/" not in n for n in names)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"chat-server": "chatroom.server:main", "chat-client": "chatroom.app:main"}
    # Unpacked somewhere else and run from a third directory, the server's command works.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import chatroom; print(chatroom.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=30,
                           check=False)
    assert Path(where.stdout.strip()).is_relative_to(site), where
    for entry in scripts.values():
        mod, func = entry.split(":")
        run = subprocess.run(
            [sys.executable, "-c", f"import sys; from {mod} import {func}; sys.exit({func}())",
             "--help"],
            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=30,
                           check=False)
        assert run.returncode == 0, (entry, run.stderr)
        assert "usage:" in run.stdout
