"""The admin command line: ``account add|passwd|delete|list|oper|deoper`` on a data directory.

Reached as ``python server.py account ...`` or ``python -m chatroom.admin account ...``.
It opens the accounts store (:mod:`chatroom.accounts`) of ``--data-dir`` (default
``chat-data``, the server's default) through its own connection, so it works next to a
running server: WAL and a busy timeout share the file, and the server reads accounts at
each login, so a change counts from the next one.  ``oper`` and ``deoper`` make an account a
server operator or not (:mod:`chatroom.moderation`); the server reads that at each ``OPER``,
and ``deoper`` does not take ``+o`` from someone who already has it.

A password is never taken from the command line (other users can read it there): on a
terminal it is asked twice with :func:`getpass.getpass`; otherwise it is the first line of
standard input, without its line ending.  It is never printed.  Errors go to stderr in
plain words with exit status 1; success prints one line and exits 0.

Threads: only the main thread of its own process.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from chatroom import accounts as A
from chatroom import moderation as M
from chatroom import protocol as P

DEFAULT_DATA_DIR = "chat-data"
STDIN_LIMIT = 4096  # bytes read for a password from a pipe (the rules allow 300)


class Failed(Exception):
    """A command could not do what was asked; the message is for the user."""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=DEFAULT_DATA_DIR, metavar="DIR",
                        help=f"the server's data directory (default: {DEFAULT_DATA_DIR})")
    parser = argparse.ArgumentParser(
        description="Manage the chat server's accounts (also while it runs).")
    top = parser.add_subparsers(dest="area", required=True, metavar="account")
    account = top.add_parser("account", help="add, change, delete or list accounts",
                             description="Manage accounts.")
    sub = account.add_subparsers(dest="action", required=True,
                                 metavar="{add,passwd,delete,list,oper,deoper}")
    add = sub.add_parser("add", parents=[common], help="register an account",
                         description="Register NAME.  The password is asked twice on a "
                                     "terminal, else read as one line from stdin.")
    add.add_argument("name", metavar="NAME")
    passwd = sub.add_parser("passwd", parents=[common], help="set a new password",
                            description="Set a new password for NAME (same input as add).")
    passwd.add_argument("name", metavar="NAME")
    delete = sub.add_parser("delete", parents=[common], help="delete an account",
                            description="Delete NAME (asks first on a terminal).")
    delete.add_argument("name", metavar="NAME")
    delete.add_argument("--yes", action="store_true",
                        help="do not ask (required when stdin is not a terminal)")
    sub.add_parser("list", parents=[common], help="list the accounts",
                   description="Print every account's name, one per line.")
    oper = sub.add_parser("oper", parents=[common], help="make an account a server operator",
                          description="Let NAME become a server operator with OPER.")
    oper.add_argument("name", metavar="NAME")
    deoper = sub.add_parser("deoper", parents=[common], help="stop an account being one",
                            description="NAME may no longer become a server operator.")
    deoper.add_argument("name", metavar="NAME")
    return parser


def read_password(name: str) -> str:
    """The new password: asked twice on a terminal, else the first line of stdin."""
    if sys.stdin.isatty():
        first = getpass.getpass(f"Password for {name}: ")
        if getpass.getpass("Again: ") != first:
            raise Failed("the passwords do not match")
        return first
    line = sys.stdin.buffer.readline(STDIN_LIMIT)
    if line.endswith(b"\n"):
        line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise Failed("the password is not valid UTF-8 text") from None


def check_name(name: str) -> None:
    problem = P.nick_problem(name)
    if problem is not None:
        raise Failed(f"{name!r} can't be an account name: {problem}")


def confirm(question: str) -> bool:
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def cmd_add(store: A.Accounts, args: argparse.Namespace) -> str:
    check_name(args.name)
    existing = store.get(args.name)
    if existing is not None:  # before asking for a password in vain
        raise Failed(f"{existing.name} is already registered")
    account = store.register(args.name, read_password(args.name))
    return f"registered {account.name}"


def existing(store: A.Accounts, name: str) -> A.Account:
    """The account called ``name``, or the error a user reads."""
    check_name(name)
    account = store.get(name)
    if account is None:
        raise Failed(f"no account called {name}")
    return account


def cmd_passwd(store: A.Accounts, args: argparse.Namespace) -> str:
    account = existing(store, args.name)
    store.set_password(args.name, read_password(account.name))
    return f"changed the password of {account.name}"


def cmd_delete(store: A.Accounts, args: argparse.Namespace) -> str:
    account = existing(store, args.name)
    if not args.yes:
        if not sys.stdin.isatty():
            raise Failed(f"{account.name} not deleted: add --yes to delete without a prompt")
        if not confirm(f"Delete account {account.name}? [y/N] "):
            raise Failed(f"{account.name} not deleted")
    if not store.delete(args.name):
        raise Failed(f"no account called {args.name}")
    return f"deleted {account.name}"


def cmd_list(store: A.Accounts, args: argparse.Namespace) -> str:
    names = store.names()
    count = f"{len(names)} account{'' if len(names) == 1 else 's'}"
    return "\n".join([*names, count]) if names else "no accounts"


def cmd_oper(store: A.Accounts, args: argparse.Namespace) -> str:
    account = existing(store, args.name)
    with moderation_store(args.data_dir) as mod:
        mod.add_oper(account.name, account.created)
    return f"{account.name} may now become a server operator (OPER)"


def cmd_deoper(store: A.Accounts, args: argparse.Namespace) -> str:
    check_name(args.name)
    with moderation_store(args.data_dir) as mod:
        if not mod.remove_oper(args.name):
            raise Failed(f"{args.name} is not a server operator")
    return f"{args.name} may no longer become a server operator"


@contextmanager
def moderation_store(data_dir: str) -> Iterator[M.Moderation]:
    """The moderation store, open for one command."""
    store = M.Moderation(data_dir)
    try:
        yield store
    finally:
        store.close()


COMMANDS: dict[str, Callable[[A.Accounts, argparse.Namespace], str]] = {
    "add": cmd_add, "passwd": cmd_passwd, "delete": cmd_delete, "list": cmd_list,
    "oper": cmd_oper, "deoper": cmd_deoper,
}


def main(argv: list[str] | None = None) -> int:
    """Run one admin command; 0 on success, 1 with a message on stderr otherwise."""
    args = build_parser().parse_args(argv)
    if args.action != "add" and not (Path(args.data_dir) / A.DB_NAME).is_file():
        # A mistyped --data-dir would otherwise make an empty directory and list nothing.
        print(f"error: {args.data_dir} holds no chat database (is --data-dir right?)",
              file=sys.stderr)
        return 1
    try:
        store = A.Accounts(args.data_dir)
    except A.AccountError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        print(COMMANDS[args.action](store, args))
    except (Failed, A.AccountError, M.ModerationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ncancelled", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
