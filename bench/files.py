"""File sharing under load: 200 MB up and down over loopback, server memory, chat meanwhile.

    python -m bench.files                         # 200 MB, four transfers at once
    python -m bench.files --size-mb 20 --idle 2 --json out.json   # a quicker run

Everything runs against the real server (``server.py``, started by bench/servers.py with
``--files-port`` on a free port, ``--max-upload`` just above the file, no quota, pinned to
core 0 with ``taskset -c 0``); this process pins itself to core 1.  The account is made
with the admin command line (password on stdin), at the server's default scrypt cost.

1. **One at a time.**  Three small uploads first (warm-up: threads, imports, and the
   password hashes' memory settling: see :data:`WARMUPS`).
   Then one ``--size-mb`` file of random bytes (from a temporary directory) is uploaded
   with the client's own module (``chatroom.transfer.upload``: http.client, 256 KiB
   chunks, Expect: 100-continue) while the server's VmRSS is sampled every 20 ms:
   reported are MB/s (MiB, wall time from the first byte to 201) and the RSS growth (peak
   during the upload minus just before it).  Then it is downloaded with
   ``chatroom.transfer.download`` (to a ``.part`` file, fsync, rename) and, to see the
   server's side without our client's costs, with ``curl -o /dev/null`` (and uploaded once
   more with ``curl -T``).  Each copy is compared byte for byte (SHA-256).
2. **Chat during transfers.**  ``--members`` members and ``--senders`` senders join
   ``#storm``; the senders chat at ``--rate`` messages/s each (a fixed schedule, the send
   time in the message) and every member times each delivery.  After ``--idle`` seconds
   of chat without transfers, ``--transfers`` curl processes (half uploads of the file,
   half downloads of it; at niceness 10, on this process's core) run at once, and the
   window lasts until the last one ends.  Reported: delivery p50/p99 idle and during,
   and their ratio (target: at most 2x), and the RSS peak.

Only processes started here are stopped, by pid.  Every loop is bounded by a count or a
deadline.  Temporary files are removed at the end.  The exit status is 1 if anything went
wrong (a transfer failed or came back different, a chat message was lost); the targets are
reported, not enforced.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import procstat, servers
from bench.history import pin_self, summary_ms
from bench.login import ROOM, Chat, ConnError, cpu_model, join_room, receive, rss_kb, send_chat
from chatroom import transfer

SERVER_CORE, CLIENT_CORE = 0, 1
ACCOUNT = "bencher"
MiB = 1 << 20
# Small uploads before the measured one.  Each checks a password: a scrypt hash of 16 MiB
# on one of the accounts store's hashing threads.  glibc serves the first from mmap and,
# once it is freed, raises its mmap threshold, so the next one lands in the thread's arena
# and stays there (+16 MiB once, whatever the upload).  Three are enough to get past that.
WARMUPS = 3


# The transfers' curl processes share the generator's core with the chat clients that
# time each delivery; at SCHED_IDLE they never delay a measurement (plain nice 10 still
# takes its share of the core while a delivery waits to be read).
CURL_PRIORITY = (["chrt", "--idle", "0"] if shutil.which("chrt") else ["nice", "-n", "19"])


def make_file(path: Path, size: int) -> str:
    """``size`` random bytes at ``path``; their SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 4 * MiB))
            f.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


def add_account(data_dir: Path, password: str) -> None:
    run = subprocess.run([sys.executable, str(servers.ROOT / "server.py"), "account", "add",
                          ACCOUNT, "--data-dir", str(data_dir)], input=password + "\n",
                         text=True, capture_output=True, timeout=60, check=False)
    if run.returncode != 0:
        raise RuntimeError(f"account add failed: {run.stderr.strip()}")


class RssSampler:
    """VmRSS of ``pid`` every ``every`` seconds on a thread, until stopped."""

    def __init__(self, pid: int, every: float = 0.02) -> None:
        self.pid, self.every = pid, every
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        for _ in range(1_000_000):
            rss, _ = rss_kb(self.pid)
            if rss is not None:
                self.samples.append(rss)
            if self._stop.wait(self.every):
                return


def mb_per_s(size: int, seconds: float) -> float:
    return round(size / MiB / seconds, 1) if seconds > 0 else 0.0


def curl(args: list[str], timeout: float) -> tuple[float, str]:
    """Run curl; (seconds, stdout)."""
    t0 = time.monotonic()
    out = subprocess.run(["curl", "-sS", "--fail", *args], capture_output=True, text=True,
                         timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"curl {args[:3]} failed: {out.stderr.strip()[:300]}")
    return time.monotonic() - t0, out.stdout


def curl_upload_args(path: Path, url: str, password: str) -> list[str]:
    return ["-X", "POST", "-T", str(path), "-u", f"{ACCOUNT}:{password}",
            "-H", "Content-Type: application/octet-stream",
            "-H", f"Content-Disposition: attachment; filename=\"{path.name}\"",
            "-o", "/dev/null", "-w", "%header{location}", url]


def one_at_a_time(srv: servers.Running, url: str, source: Path, digest: str, size: int,
                  password: str, tmp: Path, timeout: float) -> dict[str, Any]:
    """Phase 1 (see the module's docstring)."""
    out: dict[str, Any] = {"failures": []}
    warm = tmp / "warm.txt"
    warm.write_bytes(b"warm-up\n")
    for _ in range(WARMUPS):
        transfer.upload(url, warm, ACCOUNT, password, timeout=timeout)
    before = rss_kb(srv.pid)[0] or 0
    with RssSampler(srv.pid) as rss:
        t0 = time.monotonic()
        location = transfer.upload(url, source, ACCOUNT, password, timeout=timeout)
        up = time.monotonic() - t0
    peak = max(rss.samples, default=before)
    out["upload"] = {"client": "chatroom.transfer", "seconds": round(up, 2),
                     "MB_per_s": mb_per_s(size, up), "rss_before_kb": before,
                     "rss_peak_kb": peak, "rss_growth_MB": round((peak - before) / 1024, 1),
                     "rss_samples": len(rss.samples)}
    dest = tmp / "copy.bin"
    t0 = time.monotonic()
    transfer.download(location, dest, timeout=timeout)
    down = time.monotonic() - t0
    if sha256_of(dest) != digest:
        out["failures"].append("the downloaded copy differs")
    dest.unlink()
    out["download"] = {"client": "chatroom.transfer (to disk, fsync)", "seconds": round(down, 2),
                       "MB_per_s": mb_per_s(size, down)}
    seconds, _ = curl(["-o", "/dev/null", location], timeout)
    out["download_curl"] = {"client": "curl -o /dev/null", "seconds": round(seconds, 2),
                            "MB_per_s": mb_per_s(size, seconds)}
    seconds, second = curl(curl_upload_args(source, url, password), timeout)
    out["upload_curl"] = {"client": "curl -T", "seconds": round(seconds, 2),
                          "MB_per_s": mb_per_s(size, seconds)}
    if not second.startswith("http"):
        out["failures"].append(f"curl's upload gave no Location: {second[:100]!r}")
    out["location"] = location
    return out


async def chat_during(srv: servers.Running, url: str, location: str, source: Path,
                      password: str, a: argparse.Namespace) -> dict[str, Any]:
    """Phase 2 (see the module's docstring)."""
    deadline = time.monotonic() + a.deadline
    out: dict[str, Any] = {"failures": []}
    chat = Chat()
    stop = asyncio.Event()
    members = [await join_room(srv.port, f"m{i}", a.timeout) for i in range(a.members)]
    senders = [await join_room(srv.port, f"s{i}", a.timeout) for i in range(a.senders)]
    loop = asyncio.get_running_loop()
    receivers = [asyncio.create_task(receive(m, chat, stop, deadline)) for m in members]
    start = loop.time() + 0.5
    talkers = [asyncio.create_task(send_chat(s, i, a.rate, start, stop, 1_000_000, chat))
               for i, s in enumerate(senders)]
    await asyncio.sleep(0.5 + a.warmup)
    idle_lo = time.perf_counter_ns()
    await asyncio.sleep(a.idle)
    busy_lo = time.perf_counter_ns()
    procs: list[subprocess.Popen[bytes]] = []
    uploads = a.transfers // 2 if a.uploads is None else min(a.uploads, a.transfers)
    with RssSampler(srv.pid, 0.05) as rss:
        for i in range(a.transfers):
            args = (curl_upload_args(source, url, password) if i < uploads
                    else ["-o", "/dev/null", location])
            procs.append(subprocess.Popen([*CURL_PRIORITY, "curl", "-sS", "--fail", *args],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        for p in procs:
            left = deadline - time.monotonic()
            code = await loop.run_in_executor(None, p.wait, max(1.0, left))
            if code != 0:
                assert p.stderr is not None
                out["failures"].append(f"a transfer failed: {p.stderr.read()[:200]!r}")
        busy_hi = time.perf_counter_ns()
        await asyncio.sleep(a.after)
    stop.set()
    for t in talkers + receivers:
        t.cancel()
    for c in members + senders:
        c.abort()
    idle = summary_ms([r - s for s, r in chat.deliveries if idle_lo <= s < busy_lo])
    busy = summary_ms([r - s for s, r in chat.deliveries if busy_lo <= s < busy_hi])
    out["transfers"] = {"count": a.transfers, "uploads": uploads,
                        "downloads": a.transfers - uploads,
                        "seconds": round((busy_hi - busy_lo) / 1e9, 2),
                        "MB_per_s_total": mb_per_s(a.transfers * a.size_mb * MiB,
                                                   (busy_hi - busy_lo) / 1e9)}
    out["chat_idle_ms"], out["chat_during_ms"] = idle, busy
    if idle["p99"] and busy["p99"]:
        out["p99_ratio"] = round(busy["p99"] / idle["p99"], 2)
    out["rss_peak_kb"] = max(rss.samples, default=None)
    out["lost"], out["out_of_order"] = chat.lost, chat.out_of_order
    if chat.lost:
        out["failures"].append(f"{chat.lost} chat deliveries lost")
    return out


def run(a: argparse.Namespace) -> dict[str, Any]:
    password = "bench-" + secrets.token_urlsafe(12)
    tmp = Path(tempfile.mkdtemp(prefix="bench-files-"))
    data_dir = tmp / "data"
    size = a.size_mb * MiB
    result: dict[str, Any] = {"params": {k: v for k, v in vars(a).items() if k != "json"},
                              "failures": []}
    srv: servers.Running | None = None
    try:
        result["machine"] = {"nproc": os.cpu_count(), "client": pin_self(CLIENT_CORE),
                             "server": f"taskset -c {SERVER_CORE}", "cpu": cpu_model()}
        print(f"making a {a.size_mb} MiB file and the account", file=sys.stderr, flush=True)
        source = tmp / "big.bin"
        digest = make_file(source, size)
        add_account(data_dir, password)
        files_port = servers.free_port()
        srv = servers.start_ours(servers.free_port(), SERVER_CORE, data_dir=data_dir,
                                 name="ours-files",
                                 extra=["--files-port", str(files_port), "--max-upload",
                                        str(size + MiB), "--files-quota", "0",
                                        *a.server_arg])
        url = f"http://127.0.0.1:{files_port}/upload"
        result["server_command"] = " ".join(str(x) for x in srv.proc.args)  # type: ignore[union-attr]
        print(f"one at a time (server pid {srv.pid})", file=sys.stderr, flush=True)
        single = one_at_a_time(srv, url, source, digest, size, password, tmp, a.timeout)
        result["single"] = single
        print(f"chat with {a.transfers} transfers at once", file=sys.stderr, flush=True)
        try:
            result["concurrent"] = asyncio.run(chat_during(srv, url, single["location"],
                                                           source, password, a))
        except ConnError as exc:
            result["failures"].append(f"chat: {exc}")
        result["server_alive"] = procstat.alive(srv.pid)
        result["failures"] += single["failures"] + result.get("concurrent", {}).get(
            "failures", [])
        srv.stop()
        srv = None
        result["ok"] = not result["failures"]
    finally:
        if srv is not None:
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def format_report(r: dict[str, Any]) -> str:
    lines = [f"machine: {r['machine']}"]
    single = r.get("single", {})
    for key in ("upload", "download", "upload_curl", "download_curl"):
        if key in single:
            s = single[key]
            lines.append(f"{key:14} {s['MB_per_s']:>8} MB/s  ({s['seconds']} s, {s['client']})")
    if "upload" in single:
        u = single["upload"]
        lines.append(f"server RSS during the upload: {u['rss_before_kb'] / 1024:.1f} MB -> peak "
                     f"{u['rss_peak_kb'] / 1024:.1f} MB (+{u['rss_growth_MB']} MB; target "
                     "<= 16 MB)")
    c = r.get("concurrent")
    if c:
        i, b = c["chat_idle_ms"], c["chat_during_ms"]
        lines.append(f"chat p50/p99 idle {i['p50']}/{i['p99']} ms ({i['count']} deliveries), "
                     f"during {c['transfers']['count']} transfers {b['p50']}/{b['p99']} ms "
                     f"({b['count']}): {c.get('p99_ratio')}x (target <= 2x)")
        t = c["transfers"]
        lines.append(f"the {t['count']} transfers took {t['seconds']} s "
                     f"({t['MB_per_s_total']} MB/s together); RSS peak "
                     f"{(c['rss_peak_kb'] or 0) / 1024:.1f} MB")
    lines.append("ok" if r.get("ok") else f"FAILED: {r.get('failures')}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--size-mb", type=int, default=200, help="MiB per file")
    p.add_argument("--transfers", type=int, default=4, help="transfers at once in phase 2")
    p.add_argument("--uploads", type=int, default=None,
                   help="how many of them are uploads (default: half; the rest download)")
    p.add_argument("--members", type=int, default=20)
    p.add_argument("--senders", type=int, default=2)
    p.add_argument("--rate", type=float, default=20.0, help="messages/s per sender")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of chat not counted")
    p.add_argument("--idle", type=float, default=5.0, help="seconds of chat before transfers")
    p.add_argument("--after", type=float, default=0.5)
    p.add_argument("--timeout", type=float, default=120.0, help="per transfer")
    p.add_argument("--deadline", type=float, default=600.0, help="for phase 2")
    p.add_argument("--json", metavar="FILE", help="write everything measured here")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="one more option for the server (repeatable), to see what a setting "
                        "changes, e.g. --server-arg=--no-history")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if shutil.which("curl") is None:
        print("bench.files needs the curl command", file=sys.stderr)
        return 1
    r = run(a)
    print(format_report(r))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=2))
    return 0 if r.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
