"""Side-by-side run: start each server, run each scenario against it, print one table.

    python -m bench.compare                       # all servers, all scenarios (~10 min)
    python -m bench.compare --servers ours,ngircd --scenarios fanout-50,slow
    python -m bench.compare --stretch --json bench-results.json --markdown table.md
    python -m bench.compare --servers ours,ours-tls --scenarios fanout-50,handshakes,many-2000
    python -m bench.compare --servers ours,ours-nohistory,miniircd --scenarios fanout-50-x10

Every (server, scenario) pair gets a fresh server process, pinned to core 0 with
``taskset -c 0``, and a fresh generator process pinned to core 1, so one scenario's
leftovers (memory, half-closed sockets) cannot bias the next.  Only the processes
started here are stopped, by pid, also on Ctrl+C.  Repeated runs are interleaved across
servers (A, B, A, B, ...), so a disturbance on the machine hits both columns alike.
``ours-tls`` is our server with every client on TLS, ``ours-nohistory`` our server with
``--no-history`` (``ours`` keeps history, the default, in a temporary data directory); see
bench/servers.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report, servers

SERVER_CORE = 0
GENERATOR_CORE = 1

# name -> loadgen arguments; the targets.
SCENARIOS: dict[str, list[str]] = {
    "fanout-50": ["--scenario", "fanout", "--clients", "50", "--senders", "5",
                  "--messages", "2000"],
    "fanout-200": ["--scenario", "fanout", "--clients", "200", "--senders", "10",
                   "--messages", "500"],
    "many-5000": ["--scenario", "many", "--clients", "5000", "--deadline", "600"],
    "slow": ["--scenario", "slow"],
    "churn": ["--scenario", "churn", "--cycles", "1000", "--parallel", "10"],
}
STRETCH = {"many-10000": ["--scenario", "many", "--clients", "10000", "--deadline", "600"]}
# Only when named in --scenarios: the TLS issue's numbers (docs/PERFORMANCE.md, "TLS").
# The fan-outs send 10x the messages of the ones above, so that a run lasts seconds and
# its CPU figures are not a handful of 10 ms ticks.
EXTRA: dict[str, list[str]] = {
    "fanout-50-x10": ["--scenario", "fanout", "--clients", "50", "--senders", "5",
                      "--messages", "20000"],
    "fanout-200-x10": ["--scenario", "fanout", "--clients", "200", "--senders", "10",
                       "--messages", "5000"],
    "handshakes": ["--scenario", "handshakes", "--clients", "2000", "--parallel", "10"],
    "many-2000": ["--scenario", "many", "--clients", "2000"],
}
# Tiny versions, to check the harness end to end in a few seconds.
QUICK: dict[str, list[str]] = {
    "fanout-50": ["--scenario", "fanout", "--clients", "10", "--senders", "2",
                  "--messages", "200"],
    "many-5000": ["--scenario", "many", "--clients", "100"],
    "slow": ["--scenario", "slow", "--duration", "4"],
    "churn": ["--scenario", "churn", "--cycles", "50", "--parallel", "5"],
    "handshakes": ["--scenario", "handshakes", "--clients", "50", "--parallel", "5"],
}
SERVER_NAMES = ["ours", "miniircd", "ngircd"]  # and ours-tls, ours-nohistory, on request
# Short scenarios worth repeating; the table shows the median run by this metric.
MEDIAN_BY = {"fanout": "deliveries_per_s", "churn": "cycles_per_s",
             "handshakes": "handshakes_per_s", "many": "rss_kb_per_connection"}
# Per-run values kept next to the median run's, for medians of more than the headline.
ALSO_KEPT = ("server_cpu_us_per_delivery", "server_cpu_us_per_handshake")
REPEATED = {"fanout", "churn", "handshakes"}  # repeated by default; the rest with --repeat-all


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median headline metric (failed runs sort first)."""
    key = MEDIAN_BY.get(str(runs[0].get("scenario")), "")
    ordered = sorted(runs, key=lambda r: (r.get("ok", False), r.get(key) or 0))
    chosen = dict(ordered[len(ordered) // 2])
    if len(runs) > 1:
        chosen["runs"] = len(runs)
        for k in (key, *ALSO_KEPT):
            if any(k in r for r in runs):
                chosen[f"{k}_all_runs"] = [r.get(k) for r in runs]
    return chosen


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = "?"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "ngircd": _first_line([servers.NGIRCD, "--version"]),
        "miniircd": _first_line([sys.executable, "-m", "pip", "show", "miniircd"], "Version"),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def our_revision() -> dict[str, Any]:
    """Which server a run measured: the commit, and a hash of its code as it was."""
    files = [servers.ROOT / "server.py", *sorted((servers.ROOT / "chatroom").glob("*.py"))]
    h = hashlib.sha256()
    try:
        for path in files:
            h.update(path.name.encode() + b"\0" + path.read_bytes())
        digest: str | None = h.hexdigest()[:12]
    except OSError:
        digest = None
    head = _first_line(["git", "-C", str(servers.ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _first_line(["git", "-C", str(servers.ROOT), "status", "--porcelain", "server.py",
                         "chatroom"])
    return {"commit": head, "server_code_modified": bool(dirty), "server_code_sha256": digest}


def _first_line(cmd: list[str], prefix: str = "") -> str | None:
    try:
        out = subprocess.run(cmd, check=False, capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.startswith(prefix):
            return line.strip()
    return None


def loadgen_command(srv: servers.Running, args: list[str], json_path: str) -> list[str]:
    """The generator, pinned to its own core, pointed at ``srv``."""
    cmd = ["taskset", "-c", str(GENERATOR_CORE), sys.executable, "-m", "bench.loadgen",
           "--host", "127.0.0.1", "--port", str(srv.port), "--server-pid", str(srv.pid),
           "--label", srv.name, "--json", json_path,
           "--connect-concurrency", str(srv.connect_concurrency), *args]
    for line in srv.sender_setup:
        cmd += ["--sender-setup", line]
    if srv.tls_ca is not None:
        cmd += ["--tls", "--tls-ca", srv.tls_ca]
    return cmd


def run_one(server: str, name: str, args: list[str], time_limit: float) -> dict[str, Any]:
    """Fresh server, one scenario, server stopped; always returns a result dict."""
    failed: dict[str, Any] = {"scenario": args[1], "label": server, "name": name, "ok": False,
                              "params": {}, "failures": [], "checks": {}}
    revision = our_revision() if server.startswith("ours") else None  # before it changes
    try:
        srv = servers.start(server, core=SERVER_CORE)
    except RuntimeError as exc:
        failed["failures"].append(f"could not start: {exc}")
        return failed
    try:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
            json_path = tmp.name
        proc = subprocess.run(loadgen_command(srv, args, json_path), check=False,
                              cwd=servers.ROOT, capture_output=True, text=True,
                              timeout=time_limit)
        try:
            with open(json_path, encoding="utf-8") as f:
                result: dict[str, Any] = json.load(f)
        except (OSError, ValueError):
            failed["failures"].append(f"generator exited {proc.returncode}: "
                                      f"{proc.stderr.strip()[-500:]}")
            result = failed
        finally:
            os.unlink(json_path)
    except subprocess.TimeoutExpired:
        failed["failures"].append(f"generator did not finish within {time_limit:.0f} s")
        result = failed
    finally:
        crashed = srv.proc.poll() is not None
        log_tail = srv.log_tail(8)  # before stop(), which removes the log's directory
        srv.stop()
    result["name"] = name
    result["server_notes"] = srv.notes
    if revision is not None:
        result["revision"] = revision
    if crashed or not result.get("ok"):
        result["server_log_tail"] = log_tail
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", default=",".join(SERVER_NAMES),
                   help="comma-separated: " + ", ".join(servers.STARTERS))
    p.add_argument("--scenarios", help="comma-separated names (default: all of the issue's)")
    p.add_argument("--stretch", action="store_true", help="also run many-10000")
    p.add_argument("--quick", action="store_true", help="tiny parameters: a harness check")
    p.add_argument("--repeat", type=int, default=3,
                   help="runs of each fanout, churn and handshakes scenario; the table "
                        "shows the median")
    p.add_argument("--repeat-all", action="store_true",
                   help="repeat every scenario (many too), not only the short ones")
    p.add_argument("--time-limit", type=float, default=1200.0,
                   help="seconds one generator run may take before it is stopped")
    p.add_argument("--json", metavar="FILE", help="write every result and the machine here")
    p.add_argument("--markdown", metavar="FILE", help="write the side-by-side tables here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    table = dict(QUICK if a.quick else SCENARIOS)
    if a.stretch and not a.quick:
        table.update(STRETCH)
    names = a.scenarios.split(",") if a.scenarios else list(table)
    if not a.quick:
        table.update({**STRETCH, **EXTRA})  # any of them by name
    unknown = [n for n in names if n not in table]
    if unknown:
        print(f"unknown scenarios: {unknown}; choose from {list(table)}", file=sys.stderr)
        return 2
    info = machine_info()
    results: list[dict[str, Any]] = []
    try:
        for name in names:
            repeat = a.repeat if a.repeat_all or table[name][1] in REPEATED else 1
            server_names = a.servers.split(",")
            runs: dict[str, list[dict[str, Any]]] = {s: [] for s in server_names}
            try:
                for i in range(repeat):
                    for server in server_names:  # interleaved: A, B, A, B, ...
                        print(f"== {name} on {server} ({i + 1}/{repeat})", file=sys.stderr,
                              flush=True)
                        runs[server].append(run_one(server, name, table[name],
                                                    a.time_limit))
                        print(report.format_result(runs[server][-1]), file=sys.stderr,
                              flush=True)
            finally:
                results += [median_run(r) for r in runs.values() if r]
    except KeyboardInterrupt:
        print("interrupted: reporting what finished", file=sys.stderr)
    text = report.side_by_side(results)
    print(text)
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": info, "results": results}, indent=2)
                                + "\n")
    if a.markdown:
        Path(a.markdown).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
