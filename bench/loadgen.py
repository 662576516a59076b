"""Load generator for any IRC server on a host:port: runs one scenario, reports JSON + table.

    python -m bench.loadgen --port 6667 --server-pid 1234 --scenario fanout \\
        --clients 50 --senders 5 --messages 2000 --json out.json

Scenarios (defaults in brackets; see bench/scenarios.py):
  fanout  N clients [50] in #bench, S senders [5] x M messages [2000], W in flight [50]
  many    N clients [5000] joined, then one message must reach all within 600 ms
  slow    N clients [20], one stops reading, the rest send 100 msg/s of 450 B for 10 s
  churn   connect-register-join-quit cycles [1000] from parallel clients [10]
  handshakes  N connections [1000], P at once [--parallel 10]: connect (TLS handshake
          with --tls), QUIT, closed by the server; connections/s and server CPU each

With --tls every client of the scenario connects over TLS (point --port at the server's
TLS port).  --tls-ca FILE verifies the server's certificate against FILE (its own
certificate, if self-signed); without it nothing is verified: the traffic is encrypted but
the server is not authenticated, which is fine on loopback and costs the same.

With --server-pid, server CPU, memory, threads and fds come from /proc/PID.  The
generator reports its own CPU use: at 90 % of a core or more it may be the bottleneck,
and the report says so.  It runs in one process, single-threaded on asyncio; pin it with
``taskset -c 1`` so it does not share the server's core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from bench import report
from bench.scenarios import SCENARIOS, Options, run


def run_scenario(opts: Options) -> dict[str, Any]:
    """Run one scenario to completion and return its report (the library entry point)."""
    return asyncio.run(run(opts))


def parse_args(argv: list[str] | None = None) -> tuple[Options, str | None]:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen",
                                description=__doc__.split("\n\n")[0] if __doc__ else None,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="server address (loopback only)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--server-pid", type=int, help="read CPU/RSS/threads/fds of this pid")
    p.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    p.add_argument("--label", default="", help="name of the server in the report")
    p.add_argument("--clients", type=int)
    p.add_argument("--senders", type=int)
    p.add_argument("--messages", type=int, help="fanout: messages per sender")
    p.add_argument("--window", type=int, default=50, help="fanout: unacknowledged per sender")
    p.add_argument("--size", type=int, help="bytes of message text")
    p.add_argument("--rate", type=float, default=100.0, help="slow: messages/s per sender")
    p.add_argument("--duration", type=float, default=10.0, help="slow: seconds of sending")
    p.add_argument("--cycles", type=int, default=1000, help="churn: cycles in all")
    p.add_argument("--parallel", type=int, default=10,
                   help="churn, handshakes: clients at once")
    p.add_argument("--rounds", type=int, default=3, help="many: messages, one at a time")
    p.add_argument("--target-ms", type=float, default=600.0, help="many: delivery bound")
    p.add_argument("--connect-concurrency", type=int, default=8,
                   help="connections registering at once (keep below the listen backlog)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds one step may take")
    p.add_argument("--deadline", type=float, default=900.0, help="seconds for the scenario")
    p.add_argument("--sender-setup", action="append", default=[], metavar="LINE",
                   help="raw line senders send after registering ({nick} is replaced), "
                        "e.g. 'OPER name pw' for a server whose flood limit opers escape")
    p.add_argument("--client-setup", action="append", default=[], metavar="LINE",
                   help="raw line every client sends after registering")
    p.add_argument("--tls", action="store_true", help="every client connects over TLS")
    p.add_argument("--tls-ca", metavar="FILE",
                   help="with --tls: verify the server's certificate against this PEM file "
                        "(default: no verification)")
    p.add_argument("--json", metavar="FILE", help="write the report here ('-': stdout)")
    a = p.parse_args(argv)
    if a.host not in ("127.0.0.1", "localhost", "::1") and not a.host.startswith("127."):
        p.error("--host must be a loopback address: this tool generates heavy load")
    if a.tls_ca and not a.tls:
        p.error("--tls-ca needs --tls")
    opts = Options(
        scenario=a.scenario, host=a.host, port=a.port, server_pid=a.server_pid,
        label=a.label, clients=a.clients, senders=a.senders, messages=a.messages,
        window=a.window, size=a.size, rate=a.rate, duration=a.duration, cycles=a.cycles,
        parallel=a.parallel, rounds=a.rounds, target_ms=a.target_ms,
        connect_concurrency=a.connect_concurrency, timeout=a.timeout, deadline=a.deadline,
        sender_setup=a.sender_setup, client_setup=a.client_setup, tls=a.tls,
        tls_ca=a.tls_ca)
    return opts, a.json


def main(argv: list[str] | None = None) -> int:
    opts, json_path = parse_args(argv)
    try:
        result = run_scenario(opts)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    text = json.dumps(result, indent=2)
    if json_path == "-":
        print(text)
    else:
        if json_path:
            with open(json_path, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        print(report.format_result(result))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
