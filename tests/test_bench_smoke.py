"""Smoke run of the benchmark harness against our server, with tiny parameters.

Not a timed test: it checks that every scenario still runs end to end, that deliveries
are exactly-once and in order, and that the JSON report keeps its keys, so the harness
in bench/ cannot rot between the (long) real benchmark runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import report, servers  # noqa: E402
from bench.loadgen import run_scenario  # noqa: E402
from bench.scenarios import Options  # noqa: E402

pytestmark = pytest.mark.skipif(not (ROOT / "server.py").exists(),
                                reason="server.py does not exist yet")

COMMON_KEYS = {"scenario", "label", "target", "server_pid", "params", "ok", "failures",
               "checks", "server_alive"}
MEASURED_KEYS = {"wall_s", "server", "generator", "short_run"}


@pytest.fixture(scope="module")
def ours() -> Iterator[servers.Running]:
    srv = servers.start("ours")
    try:
        yield srv
    finally:
        srv.stop()


def run(srv: servers.Running, **kw: object) -> dict:
    kw = {"timeout": 10.0, **kw}
    opts = Options(port=srv.port, server_pid=srv.pid, label=srv.name, deadline=60.0,
                   **kw)  # type: ignore[arg-type]
    result = run_scenario(opts)
    assert set(result) >= COMMON_KEYS
    assert result["server_alive"], result
    return result


def test_fanout_exactly_once_in_order(ours: servers.Running) -> None:
    r = run(ours, scenario="fanout", clients=5, senders=2, messages=20)
    assert r["failures"] == []
    assert set(r) >= MEASURED_KEYS | {"deliveries", "deliveries_expected", "lost",
                                      "duplicates", "reordered", "unexpected",
                                      "deliveries_per_s", "latency_ms",
                                      "server_cpu_us_per_delivery"}
    assert r["deliveries_expected"] == 2 * 20 * 4
    assert r["deliveries"] == r["deliveries_expected"]
    assert (r["lost"], r["duplicates"], r["reordered"], r["unexpected"]) == (0, 0, 0, 0)
    assert set(r["latency_ms"]) == {"count", "p50", "p99", "max"}
    assert r["server"]["cpu_s"] is not None  # /proc was readable for the pid
    assert set(r["generator"]) == {"cpu_s", "cpu_util", "saturated"}
    assert r["ok"], r["checks"]


def test_many_reaches_everyone(ours: servers.Running) -> None:
    r = run(ours, scenario="many", clients=20, rounds=2)
    assert r["failures"] == []
    assert r["connected"] == 20
    assert r["join_lines"]["seen"] == r["join_lines"]["expected"] == 20 * 19 // 2
    assert [x["reached"] for x in r["rounds"]] == [19, 19]
    assert {"rss_kb_per_connection", "server_before", "server_after",
            "worst_all_reached_ms"} <= set(r)
    assert r["checks"]["all_reached"]


def test_slow_consumer_does_not_hurt_the_others(ours: servers.Running) -> None:
    r = run(ours, scenario="slow", clients=4, rate=20.0, duration=1.0)
    assert r["failures"] == []
    assert (r["lost"], r["duplicates"], r["reordered"], r["unexpected"]) == (0, 0, 0, 0)
    assert r["deliveries"] == r["deliveries_expected"] == 3 * 20 * 2
    assert {"p99_first_3s_ms", "p99_last_3s_ms", "stalled", "memory"} <= set(r)
    assert set(r["stalled"]) >= {"disconnected", "after_s", "reason"}


def test_churn_leaves_nothing_behind(ours: servers.Running) -> None:
    r = run(ours, scenario="churn", cycles=20, parallel=4)
    assert r["failures"] == []
    assert r["cycles_done"] == 20
    assert r["observer"]["joins_seen"] == 20
    assert r["observer"]["quits_seen"] == 20
    assert {"threads", "fds", "rss_kb"} <= set(r["server_after"])
    assert r["checks"]["no_thread_leak"] and r["checks"]["no_fd_leak"], r["checks"]
    assert r["ok"], r


def test_cli_writes_json_and_table(ours: servers.Running, tmp_path: Path) -> None:
    out = tmp_path / "fanout.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "--port", str(ours.port), "--server-pid",
         str(ours.pid), "--scenario", "fanout", "--clients", "3", "--senders", "1",
         "--messages", "5", "--label", "ours", "--json", str(out), "--timeout", "10"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "deliveries/s" in proc.stdout and "PASS" in proc.stdout
    result = json.loads(out.read_text())
    assert result["deliveries"] == 10
    assert "deliveries/s" in report.side_by_side([result, dict(result, label="other")])


@pytest.fixture(scope="module")
def ours_tls() -> Iterator[servers.Running]:
    """Ours with a TLS port and a throwaway certificate (openssl, in the server's temporary
    directory, removed by stop())."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    srv = servers.start("ours-tls")
    assert srv.tls_ca is not None
    cert_dir = Path(srv.tls_ca).parent
    try:
        yield srv
    finally:
        srv.stop()
    assert not cert_dir.exists()


def test_tls_fanout_and_handshakes(ours_tls: servers.Running) -> None:
    r = run(ours_tls, scenario="fanout", clients=4, senders=2, messages=20, tls=True,
            tls_ca=ours_tls.tls_ca)
    assert r["tls"]["on"] and r["tls"]["verified"] and r["tls"]["version"], r["tls"]
    assert r["deliveries"] == r["deliveries_expected"] == 2 * 20 * 3
    assert r["ok"], r
    r = run(ours_tls, scenario="handshakes", clients=10, parallel=3, tls=True,
            tls_ca=ours_tls.tls_ca)
    assert r["handshakes_done"] == 10 and r["failures"] == []
    assert {"handshakes_per_s", "handshake_ms", "server_cpu_us_per_handshake"} <= set(r)
    assert r["ok"], r
    # The generator really speaks TLS: a plaintext client on the TLS port gets nowhere.
    r = run(ours_tls, scenario="fanout", clients=2, senders=1, messages=1, timeout=2.0)
    assert not r["ok"] and r["failures"]


def test_tls_cli(ours_tls: servers.Running) -> None:
    assert ours_tls.tls_ca is not None
    proc = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "--port", str(ours_tls.port), "--server-pid",
         str(ours_tls.pid), "--scenario", "handshakes", "--clients", "5", "--parallel", "2",
         "--tls", "--tls-ca", ours_tls.tls_ca, "--label", "ours-tls", "--timeout", "10"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "handshakes/s" in proc.stdout and "TLSv1" in proc.stdout and "PASS" in proc.stdout


def test_history_bench_fills_restarts_and_checks_every_answer(tmp_path: Path) -> None:
    """bench.history end to end, tiny: fill through a real server, restart it on the
    data directory, CHATHISTORY BEFORE at random and at the extremes, answers checked."""
    out = tmp_path / "history.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.history", "--messages", "3000", "--requests", "20",
         "--extremes", "2", "--cold", "2", "--json", str(out), "--timeout", "10",
         "--fill-deadline", "60", "--query-deadline", "60"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    assert r["ok"] and r["query"]["failures"] == []
    assert r["fill"]["reader_got"] == 3000
    assert r["store"]["room_messages"] == 3000
    assert r["store"]["bytes_on_disk_per_event"] > r["store"]["avg_line_bytes"]
    assert r["query"]["random"]["count"] == 20 and r["query"]["random"]["p99"] is not None
    assert set(r["query"]["extremes"]) == {"oldest page", "before the oldest (empty)",
                                           "before the newest", "LATEST *"}
    assert "data_dir_kept" not in r  # the temporary data directory is gone
    assert "BEFORE msgid 100" in proc.stdout


def test_login_bench_logs_in_fails_and_storms(tmp_path: Path) -> None:
    """bench.login end to end, tiny: accounts from the admin command line, SASL PLAIN
    logins one at a time, wrong passwords and unknown names, and a small storm during chat,
    all with the default scrypt parameters."""
    out = tmp_path / "login.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.login", "--logins", "3", "--warmup", "1",
         "--failures", "2", "--unknown", "1", "--storm", "3", "--members", "2",
         "--warmup-s", "0.2", "--idle", "0.5", "--after", "0.3", "--hashes", "2",
         "--json", str(out), "--timeout", "10", "--deadline", "60", "--storm-deadline", "30"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    assert r["ok"] and r["failures"] == []
    assert r["accounts"]["stored"] == 5 and r["accounts"]["stored_params"] == ["ln=14,r=8,p=1"]
    seq = r["sequential"]
    assert seq["login"]["connect_to_903"]["count"] == seq["login"]["connect_to_001"]["count"] == 3
    assert seq["wrong_password"]["response_to_904"]["count"] == 2
    assert seq["unknown_account"]["response_to_904"]["count"] == 1
    assert seq["wrong_password"]["throttled"] == seq["unknown_account"]["throttled"] == 0
    st = r["storm"]
    assert st["storm"]["accepted"] == 3 and st["storm"]["duration_ms"] > 0
    chat = st["chat"]
    assert chat["deliveries"] == chat["deliveries_expected"] > 0 and chat["lost"] == 0
    assert chat["idle"]["count"] > 0
    assert st["rss"]["peak_kb"] >= st["rss"]["before_kb"] > 0
    assert set(st["targets"]) == {"chat_p99_storm_over_idle", "chat_p99_within_2x",
                                  "memory_within_100mb"}
    assert "storm: 3 responses at once" in proc.stdout
