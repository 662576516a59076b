"""The accounts store, its throttle and the admin command line: real SQLite files in a
temporary data directory, real threads, the command line as a subprocess.  Cheap scrypt
parameters everywhere but where the defaults themselves are the point."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT

from chatroom.accounts import (
    DB_NAME,
    Account,
    AccountError,
    AccountExists,
    Accounts,
    BadName,
    BadPassword,
    NoSuchAccount,
    ScryptParams,
    Throttle,
    check_password_rules,
    format_phc,
    parse_phc,
)

CHEAP = ScryptParams(ln=4, r=8, p=1)
SECRET = "correct horse battery staple"


@pytest.fixture
def store(tmp_path: Path) -> Accounts:
    accounts = Accounts(tmp_path / "data", params=CHEAP)
    yield accounts  # type: ignore[misc]
    accounts.close()


def stored_hash(data_dir: Path, name: str) -> str:
    db = sqlite3.connect(data_dir / DB_NAME)
    try:
        row = db.execute("SELECT hash FROM accounts WHERE key = ?", (name,)).fetchone()
        assert row is not None
        return str(row[0])
    finally:
        db.close()


def every_byte(data_dir: Path) -> bytes:
    """The database, its WAL and shared memory: whatever is on disk."""
    return b"".join(p.read_bytes() for p in sorted(data_dir.iterdir()) if p.is_file())


# --- register, verify, names --------------------------------------------------------------


def test_register_then_verify_in_any_case(store: Accounts) -> None:
    acc = store.register("Bob[x]", SECRET)
    assert acc.name == "Bob[x]" and acc.key == "bob[x]"
    assert abs(acc.created - time.time()) < 60
    assert store.verify("Bob[x]", SECRET) == acc
    assert store.verify("BOB[X]", SECRET) == acc
    assert store.get("bob[x]") == acc
    assert store.names() == ["Bob[x]"]


def test_wrong_password_and_unknown_account_give_none(store: Accounts) -> None:
    store.register("bob", SECRET)
    assert store.verify("bob", SECRET + "!") is None
    assert store.verify("bob", SECRET.upper()) is None
    assert store.verify("alice", SECRET) is None
    assert store.get("alice") is None
    assert store.verify("bob", "") is None  # breaks the rules: matches nothing
    assert store.verify("bob", "x" * 1000) is None


def test_a_name_is_taken_in_any_case(store: Accounts) -> None:
    store.register("bob", SECRET)
    with pytest.raises(AccountExists, match="^bob is already registered$"):
        store.register("BOB", "other")
    assert store.names() == ["bob"]


def test_an_account_name_must_be_a_nick(store: Accounts) -> None:
    for bad in ["", "1abc", "a b", "#room", "x" * 31]:
        with pytest.raises(BadName):
            store.register(bad, SECRET)
    assert store.names() == []


class Rendezvous(Accounts):
    """Every hash waits until ``parties`` hashes have started: registrations that have all
    passed the existence check before any of them inserts."""

    def __init__(self, data_dir: Path, parties: int) -> None:
        super().__init__(data_dir, params=CHEAP, hashing_slots=parties)
        self.barrier: threading.Barrier | None = threading.Barrier(parties, timeout=5)

    def _derive(self, password: bytes, salt: bytes, params: ScryptParams, dklen: int) -> bytes:
        if self.barrier is not None:
            self.barrier.wait()
        return super()._derive(password, salt, params, dklen)


def test_two_registrations_at_once_exactly_one_wins(tmp_path: Path) -> None:
    store = Rendezvous(tmp_path, 2)
    results: list[object] = []

    def register(name: str, password: str) -> None:
        try:
            results.append(store.register(name, password))
        except AccountExists as exc:
            results.append(exc)

    threads = [threading.Thread(target=register, args=args)
               for args in (("bob", "first"), ("BOB", "second"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    store.barrier = None
    won = [r for r in results if isinstance(r, Account)]
    lost = [r for r in results if isinstance(r, AccountExists)]
    assert len(won) == 1 and len(lost) == 1, results
    winner = won[0]
    password = "first" if winner.name == "bob" else "second"
    assert store.verify("bob", password) == winner
    assert store.verify("bob", {"first": "second", "second": "first"}[password]) is None
    store.close()


def test_set_password_and_delete(store: Accounts) -> None:
    store.register("bob", SECRET)
    store.set_password("BOB", "new one")
    assert store.verify("bob", SECRET) is None
    assert store.verify("bob", "new one") is not None
    with pytest.raises(NoSuchAccount, match="no account called alice"):
        store.set_password("alice", "x")
    with pytest.raises(BadPassword):
        store.set_password("bob", "")
    assert store.delete("Bob") is True
    assert store.delete("bob") is False
    assert store.get("bob") is None and store.verify("bob", "new one") is None
    store.register("bob", "again")  # the name is free again
    assert store.verify("bob", "again") is not None


def test_names_in_key_order(store: Accounts) -> None:
    for name in ["carol", "Alice", "bob"]:
        store.register(name, SECRET)
    assert store.names() == ["Alice", "bob", "carol"]


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = Accounts(tmp_path, params=CHEAP)
    store.close()
    store.close()
    with pytest.raises(AccountError, match="closed"):
        store.get("bob")


# --- password rules ---------------------------------------------------------------------


def test_password_rules_count_bytes_of_utf8(store: Accounts) -> None:
    for good in ["x", "x" * 300, "é" * 150, "€" * 100, "\U0001F600" * 75, " spaces ok "]:
        check_password_rules(good)
    for bad in ["", "x" * 301, "é" * 150 + "x", "€" * 101, "a\0b", "\udc80"]:
        with pytest.raises(BadPassword):
            check_password_rules(bad)
        with pytest.raises(BadPassword):
            store.register("bob", bad)
    with pytest.raises(BadPassword, match="the password must be 1 to 300 bytes"):
        check_password_rules("")
    store.register("bob", "é" * 150)
    assert store.verify("bob", "é" * 150) is not None
    assert store.names() == ["bob"]


def test_no_password_in_messages_or_reprs(store: Accounts) -> None:
    long = "s3cr3t-" * 50
    for bad in [long, "s3cr3t\0"]:
        with pytest.raises(BadPassword) as info:
            check_password_rules(bad)
        assert "s3cr3t" not in str(info.value) and "s3cr3t" not in repr(info.value)
    acc = store.register("bob", "s3cr3t")
    with pytest.raises(AccountExists) as exists:
        store.register("bob", "s3cr3t")
    for text in [repr(acc), repr(store), str(exists.value), repr(store.get("bob"))]:
        assert "s3cr3t" not in text


# --- the stored hash ----------------------------------------------------------------------


def test_phc_round_trip() -> None:
    params = ScryptParams(ln=12, r=4, p=2)
    salt, digest = bytes(range(16)), bytes(range(100, 132))
    text = format_phc(params, salt, digest)
    assert text == "$scrypt$ln=12,r=4,p=2$AAECAwQFBgcICQoLDA0ODw$" \
                   "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM"
    assert "=" not in text.split("$")[-1]
    assert parse_phc(text) == (params, salt, digest)


@pytest.mark.parametrize("text", [
    "",
    "scrypt",
    "$scrypt$",
    "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
    "$scrypt$ln=14,r=8$AAECAwQFBgcICQoLDA0ODw$ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM",
    "$scrypt$r=8,ln=14,p=1$AAECAwQFBgcICQoLDA0ODw$ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM",
    "$scrypt$ln=x,r=8,p=1$AAECAwQFBgcICQoLDA0ODw$ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM",
    "$scrypt$ln=0,r=8,p=1$AAECAwQFBgcICQoLDA0ODw$ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM",
    "$scrypt$ln=30,r=8,p=1$AAECAwQFBgcICQoLDA0ODw$ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM",
    "$scrypt$ln=20,r=8,p=1$AAECAwQFBgcICQoLDA0ODw$ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM",
    "$scrypt$ln=14,r=8,p=1$AAECAwQFBgcICQoLDA0ODw==$ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM",
    "$scrypt$ln=14,r=8,p=1$A$ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM",  # impossible b64
    "$scrypt$ln=14,r=8,p=1$AAEC$ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM",  # short salt
    "$scrypt$ln=14,r=8,p=1$AAECAwQFBgcICQoLDA0ODw$ZGVm",  # short digest
    "$scrypt$ln=14,r=8,p=1$AAECAwQFBgcICQoLDA0ODw$ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM$",
    "$scrypt$ln=14,r=8,p=1$AAECAwQFBgcICQoLDA0ODw$ZGVm-2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM",
    "$scrypt$ln=14,r=8,p=1$AAECAwQFBgcICQoLDA0ODw$ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM\n",
    "$scrypt$ln=١٤,r=8,p=1$AAECAwQFBgcICQoLDA0ODw$ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM",
])
def test_malformed_phc_strings_are_refused(text: str) -> None:
    with pytest.raises(AccountError):
        parse_phc(text)


def test_the_row_holds_no_password_and_every_account_its_own_salt(tmp_path: Path) -> None:
    store = Accounts(tmp_path, params=CHEAP)
    store.register("bob", SECRET)
    store.register("alice", SECRET)
    bob, alice = stored_hash(tmp_path, "bob"), stored_hash(tmp_path, "alice")
    assert SECRET not in bob
    (p1, salt1, digest1), (p2, salt2, digest2) = parse_phc(bob), parse_phc(alice)
    assert p1 == p2 == CHEAP
    assert len(salt1) == 16 and len(digest1) == 32
    assert salt1 != salt2 and digest1 != digest2
    store.set_password("bob", SECRET)  # the same password again: a new salt
    assert parse_phc(stored_hash(tmp_path, "bob"))[1] not in (salt1, salt2)
    store.close()
    assert SECRET.encode() not in every_byte(tmp_path)


def test_default_parameters() -> None:
    assert ScryptParams() == ScryptParams(ln=14, r=8, p=1)
    assert ScryptParams().memory <= 32 << 20


def test_the_default_hash_string(tmp_path: Path) -> None:
    store = Accounts(tmp_path)
    store.register("bob", SECRET)
    text = stored_hash(tmp_path, "bob")
    assert text.startswith("$scrypt$ln=14,r=8,p=1$")
    _, salt, digest = parse_phc(text)
    assert len(salt) == 16 and len(digest) == 32
    assert len(text.split("$")[3]) == 22 and len(text.split("$")[4]) == 43  # no padding
    assert store.verify("bob", SECRET) is not None
    store.close()


def test_weaker_hashes_are_redone_at_a_successful_login(tmp_path: Path) -> None:
    old = Accounts(tmp_path, params=CHEAP)
    old.register("bob", SECRET)
    old.close()
    before = stored_hash(tmp_path, "bob")
    stronger = ScryptParams(ln=5, r=8, p=1)
    new = Accounts(tmp_path, params=stronger)
    assert new.verify("bob", "wrong") is None
    assert stored_hash(tmp_path, "bob") == before  # not on a failure
    assert new.verify("bob", SECRET) is not None
    after = stored_hash(tmp_path, "bob")
    assert after.startswith("$scrypt$ln=5,r=8,p=1$")
    assert parse_phc(after)[1] != parse_phc(before)[1]
    assert new.verify("bob", SECRET) is not None
    assert stored_hash(tmp_path, "bob") == after  # once is enough
    new.close()
    # Weaker current parameters never downgrade a stored hash.
    weaker = Accounts(tmp_path, params=CHEAP)
    assert weaker.verify("bob", SECRET) is not None
    assert stored_hash(tmp_path, "bob") == after
    weaker.close()
    assert ScryptParams(ln=5, r=8, p=1).weaker_than(ScryptParams(ln=5, r=8, p=2))
    assert ScryptParams(ln=5, r=4, p=4).weaker_than(ScryptParams(ln=5, r=8, p=1))
    assert not ScryptParams(ln=6, r=8, p=1).weaker_than(ScryptParams(ln=5, r=8, p=2))


def test_an_unreadable_stored_hash_refuses_the_login(tmp_path: Path) -> None:
    store = Accounts(tmp_path, params=CHEAP)
    store.register("bob", SECRET)
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute("UPDATE accounts SET hash = 'garbage' WHERE key = 'bob'")
    db.commit()
    db.close()
    assert store.verify("bob", SECRET) is None
    assert store.get("bob") is not None
    store.close()


# --- hashing: the slots, and no lock held -----------------------------------------------


class Probe(Accounts):
    """Counts hashes running at once; each one takes ``hold`` seconds at least."""

    def __init__(self, data_dir: Path, slots: int) -> None:
        super().__init__(data_dir, params=CHEAP, hashing_slots=slots)
        self.running = 0
        self.most = 0
        self.count = 0
        self.gate = threading.Event()  # cleared: hashes wait here
        self.gate.set()
        self.started = threading.Event()  # a hash has begun
        # When set, each hash waits for a second one to run beside it: proof that two run
        # at once (a third never joins: the barrier is for two).
        self.pairs: threading.Barrier | None = None
        self._probe = threading.Lock()

    def _derive(self, password: bytes, salt: bytes, params: ScryptParams, dklen: int) -> bytes:
        with self._probe:
            self.running += 1
            self.count += 1
            self.most = max(self.most, self.running)
        self.started.set()
        try:
            assert self.gate.wait(10)
            if self.pairs is not None:
                self.pairs.wait()
            return super()._derive(password, salt, params, dklen)
        finally:
            with self._probe:
                self.running -= 1


def test_at_most_hashing_slots_hashes_at_once(tmp_path: Path) -> None:
    store = Probe(tmp_path, slots=2)
    store.register("bob", SECRET)
    store.pairs = threading.Barrier(2, timeout=5)  # from now on, hashes go in pairs
    store.count = store.most = 0
    results: list[object] = []
    threads = [threading.Thread(target=lambda i=i: results.append(
        store.verify("bob" if i % 2 else f"nobody{i}", SECRET))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert store.count == 8  # unknown names spend a hash too
    assert store.most == 2
    assert sum(r is not None for r in results) == 4
    store.close()


def test_no_lock_of_ours_is_held_while_hashing(tmp_path: Path) -> None:
    store = Probe(tmp_path, slots=1)
    store.register("alice", SECRET)
    store.gate.clear()
    store.started.clear()
    worker = threading.Thread(target=store.register, args=("bob", SECRET))
    worker.start()
    assert store.started.wait(5)
    assert store.running == 1  # bob is being hashed, and stays so
    assert store.get("alice") is not None
    assert store.names() == ["alice"]
    assert store.delete("alice") is True
    store.gate.set()
    worker.join(10)
    assert store.names() == ["bob"]
    store.close()


# --- the file -------------------------------------------------------------------------------


def test_the_data_dir_is_made_private(tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    Accounts(data, params=CHEAP).close()
    assert stat.S_IMODE(os.stat(data).st_mode) & 0o077 == 0
    assert (data / DB_NAME).is_file()


def test_accounts_persist_across_stores(tmp_path: Path) -> None:
    first = Accounts(str(tmp_path), params=CHEAP)
    acc = first.register("bob", SECRET)
    first.close()
    second = Accounts(tmp_path, params=CHEAP)
    assert second.get("BOB") == acc
    assert second.verify("bob", SECRET) == acc
    second.close()


def test_two_stores_on_one_file_see_each_others_changes(tmp_path: Path) -> None:
    server = Accounts(tmp_path, params=CHEAP)
    admin = Accounts(tmp_path, params=CHEAP)
    admin.register("bob", SECRET)
    assert server.verify("bob", SECRET) is not None
    admin.set_password("bob", "changed")
    assert server.verify("bob", SECRET) is None
    assert server.verify("bob", "changed") is not None
    server.register("alice", SECRET)
    assert admin.names() == ["alice", "bob"]
    with pytest.raises(AccountExists):
        admin.register("ALICE", SECRET)
    assert admin.delete("bob")
    assert server.get("bob") is None
    server.close()
    admin.close()


def test_the_history_table_and_the_accounts_table_share_the_file(tmp_path: Path) -> None:
    from chatroom.history import History

    history = History(str(tmp_path))
    store = Accounts(tmp_path, params=CHEAP)
    store.register("bob", SECRET)
    assert history.last_ms() == 0
    history.close()
    store.close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    assert {"events", "rooms", "accounts"} <= tables


# --- the throttle -------------------------------------------------------------------------


def failures(throttle: Throttle, key: str, times: list[float]) -> None:
    for t in times:
        throttle.failed(key, t)


def test_throttle_free_attempts_then_doubling_delays_up_to_the_cap() -> None:
    th = Throttle(free=3, base_delay=2.0, max_delay=60.0, refuse_after=100, window=10_000)
    waits = []
    for n in range(1, 11):
        th.failed("bob", 100.0)
        waits.append(th.wait("bob", 100.0))
    assert waits == [0.0, 0.0, 0.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert th.wait("bob", 130.0) == 30.0  # measured from the last failure
    assert th.wait("bob", 160.0) == 0.0
    assert th.wait("alice", 100.0) == 0.0  # per key


def test_throttle_delay_counts_from_the_last_failure() -> None:
    th = Throttle(free=1, base_delay=2.0)
    failures(th, "k", [0.0, 10.0])
    assert th.wait("k", 10.0) == 2.0
    assert th.wait("k", 11.5) == 0.5
    assert th.wait("k", 12.0) == 0.0
    th.failed("k", 12.0)
    assert th.wait("k", 12.0) == 4.0


def test_throttle_refuses_after_n_until_the_oldest_expires() -> None:
    th = Throttle(free=3, base_delay=1.0, max_delay=4.0, refuse_after=5, window=100.0)
    failures(th, "k", [0.0, 1.0, 2.0, 3.0])
    assert th.wait("k", 3.0) == 1.0  # the 4th: a delay
    th.failed("k", 10.0)  # the 5th within the window: refused
    assert th.wait("k", 10.0) == 90.0  # until the failure at 0.0 expires
    assert th.wait("k", 99.0) == 1.0
    assert th.wait("k", 100.0) == 0.0  # 4 left in the window; the delay has passed
    th.failed("k", 100.0)
    assert th.wait("k", 100.0) == 1.0  # refused again until the one at 1.0 expires


def test_throttle_forgets_failures_older_than_the_window() -> None:
    th = Throttle(free=0, base_delay=5.0, max_delay=5.0, refuse_after=2, window=50.0)
    th.failed("k", 0.0)
    assert th.wait("k", 0.0) == 5.0
    assert th.wait("k", 49.0) == 0.0
    th.failed("k", 49.0)
    # Two in the window: refused until 50.0; then one is left, whose delay runs to 54.0.
    assert th.wait("k", 49.0) == 5.0
    assert th.wait("k", 50.0) == 4.0
    assert th.wait("k", 99.0) == 0.0
    assert len(th) == 0  # an all-expired key is dropped
    th.failed("k", 200.0)
    assert th.wait("k", 200.0) == 5.0  # counted afresh: one failure


def test_throttle_successes_never_count_and_forget_drops_a_key() -> None:
    th = Throttle(free=2)
    # Successful attempts are only wait() calls: any number of them costs nothing.
    assert all(th.wait("k", float(t)) == 0.0 for t in range(100))
    failures(th, "k", [0.0, 0.0, 0.0])
    assert th.wait("k", 0.0) == 2.0
    th.forget("k")
    th.forget("never seen")
    assert th.wait("k", 0.0) == 0.0


def test_throttle_keeps_a_bounded_number_of_keys_and_never_drops_a_delaying_one() -> None:
    th = Throttle(free=1, base_delay=1.0, refuse_after=3, max_keys=3)
    th.failed("a", 0.0)  # free: a holds nobody back
    for key in ["b", "c"]:
        th.failed(key, 0.0)
        th.failed(key, 0.0)  # past the free one: b and c must wait
    th.failed("d", 0.5)  # full: a, the one not delaying, goes
    assert len(th) == 3
    assert th.wait("b", 0.5) > 0 and th.wait("c", 0.5) > 0
    assert th.wait("a", 0.5) == 0.0
    # A flood of junk keys can't flush a victim's delay out of the table.
    victim = Throttle(free=0, base_delay=60.0, refuse_after=2, max_keys=100)
    victim.failed("acct:victim", 0.0)
    for i in range(20_000):
        victim.failed(f"acct:junk{i}", 1.0)
    assert len(victim) <= 100
    assert victim.wait("acct:victim", 2.0) > 0
    for _ in range(100):
        victim.failed("same", 0.0)
    assert len(victim._failures.get("same", ())) <= 2  # at most refuse_after times per key


def test_throttle_attempt_counts_before_the_check_and_success_takes_it_back() -> None:
    th = Throttle(free=2, base_delay=10.0, refuse_after=5)
    keys = ("conn:1", "acct:bob")
    # Three parallel attempts: the first two go, the third must wait, even though none
    # of them has finished (failed) yet.
    assert th.attempt(keys, 0.0) == 0.0
    assert th.attempt(keys, 0.0) == 0.0
    assert th.attempt(keys, 0.0) == 0.0
    assert th.attempt(keys, 0.0) > 0
    for _ in range(3):
        th.succeeded(keys, 0.0)  # all three were right after all
    assert th.wait("acct:bob", 0.0) == 0.0 and len(th) == 0


def test_throttle_as_a_register_limit_per_address() -> None:
    """Every REGISTER counts, successful or not."""
    th = Throttle(free=3, base_delay=60.0, max_delay=600.0, refuse_after=5, window=3600.0)
    for t in [0.0, 1.0, 2.0]:
        assert th.wait("10.0.0.1", t) == 0.0
        th.failed("10.0.0.1", t)
    th.failed("10.0.0.1", 3.0)
    assert th.wait("10.0.0.1", 3.0) == 60.0
    th.failed("10.0.0.1", 63.0)
    assert th.wait("10.0.0.1", 63.0) == 3600.0 - 63.0
    assert th.wait("10.0.0.2", 63.0) == 0.0


def test_throttle_is_thread_safe() -> None:
    th = Throttle(free=0, refuse_after=1000, window=1e9, max_keys=50)

    def hammer(n: int) -> None:
        for i in range(2000):
            th.failed(f"k{(i * n) % 80}", float(i))
            th.wait(f"k{i % 80}", float(i))

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(th) == 50


# --- the admin command line --------------------------------------------------------------


def admin(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "chatroom.admin", *args], input=stdin,
                          capture_output=True, text=True, timeout=30, env=env, cwd=ROOT,
                          check=False)


def test_admin_add_passwd_delete_list(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    out = admin("account", "add", "Bob", "--data-dir", data, stdin="pa55 word\n")
    assert (out.returncode, out.stdout, out.stderr) == (0, "registered Bob\n", "")
    server = Accounts(data)  # a server's store, open all along
    assert server.verify("bob", "pa55 word") is not None
    out = admin("account", "add", "alice", "--data-dir", data, stdin="x\r\n")
    assert out.returncode == 0
    assert server.verify("alice", "x") is not None  # the line ending is not the password
    out = admin("account", "list", "--data-dir", data)
    assert (out.returncode, out.stdout) == (0, "alice\nBob\n2 accounts\n")
    out = admin("account", "passwd", "bob", "--data-dir", data, stdin="n3w-Pass")  # no newline
    assert (out.returncode, out.stdout) == (0, "changed the password of Bob\n")
    assert server.verify("bob", "pa55 word") is None
    assert server.verify("bob", "n3w-Pass") is not None
    out = admin("account", "delete", "BOB", "--yes", "--data-dir", data)
    assert (out.returncode, out.stdout) == (0, "deleted Bob\n")
    assert server.get("bob") is None
    assert server.names() == ["alice"]
    server.close()
    disk = every_byte(Path(data))
    assert b"pa55 word" not in disk and b"n3w-Pass" not in disk


def test_admin_errors(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    password = "Sup3r-Secret-Value"
    assert admin("account", "add", "bob", "--data-dir", data, stdin=password).returncode == 0
    cases = [
        (["add", "BOB"], password, "bob is already registered"),
        (["add", "carol"], "", "the password must be 1 to 300 bytes"),
        (["add", "carol"], "\n", "the password must be 1 to 300 bytes"),
        (["add", "carol"], "x" * 301, "the password must be 1 to 300 bytes"),
        (["add", "9lives"], password, "can't be an account name"),
        (["add", "a b"], password, "can't be an account name"),
        (["passwd", "alice"], password, "no account called alice"),
        (["passwd", "bob"], "", "the password must be 1 to 300 bytes"),
        (["delete", "alice", "--yes"], "", "no account called alice"),
        (["delete", "bob"], "y\n", "--yes"),  # not a terminal: --yes or nothing
    ]
    for args, stdin, message in cases:
        out = admin("account", *args, "--data-dir", data, stdin=stdin)
        assert out.returncode == 1, (args, out)
        assert message in out.stderr, (args, out.stderr)
        assert out.stdout == ""
        assert password not in out.stderr
    out = admin("account", "list", "--data-dir", str(tmp_path / "typo"))
    assert out.returncode == 1 and "no chat database" in out.stderr
    assert not (tmp_path / "typo").exists()
    store = Accounts(data, params=CHEAP)
    assert store.names() == ["bob"]  # nothing else was made
    assert store.verify("bob", password) is not None  # nor changed
    store.close()
    assert password.encode() not in every_byte(Path(data))
    assert admin("account").returncode == 2  # usage
    assert "usage:" in admin("account", "--help").stdout


def test_admin_list_of_none(tmp_path: Path) -> None:
    Accounts(tmp_path, params=CHEAP).close()
    out = admin("account", "list", "--data-dir", str(tmp_path))
    assert (out.returncode, out.stdout) == (0, "no accounts\n")
