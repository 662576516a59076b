"""Start and stop the servers under test: ours, miniircd and ngIRCd, on loopback ports.

``ours`` keeps history (the default) in a temporary data directory; ``ours-nohistory`` is
the same server with ``--no-history``.  ``ours-tls`` is our server with TLS on, a throwaway self-signed certificate (made with the
``openssl`` command in the server's temporary directory, removed with it) and the
generator pointed at the TLS port, verifying against that certificate.

Each server runs as a child process in the foreground (so its pid is the one /proc is
read for), optionally pinned to a core with ``taskset``.  We stop only the processes we
started, by pid: SIGTERM, then SIGKILL if it does not go within a few seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NGIRCD = "/usr/sbin/ngircd"
NGIRCD_OPER = ("bench", "benchpw")  # an operator block, so senders can set user mode +F
# Options we would like to give our server; only those its --help lists are passed.
# No file host (its default port 1028 would be shared by every server started here);
# bench/files.py turns it on with an --files-port of its own, given later, which wins.
OUR_WISHES = [("--no-flood-control", None), ("--log-level", "WARNING"),
              ("--max-clients", "20000"), ("--files-port", "0")]


def free_port() -> int:
    """A loopback port that was free a moment ago (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Return once something accepts on 127.0.0.1:``port``; raise if the process died."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f} s")


@dataclass
class Running:
    """A server we started."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    notes: list[str] = field(default_factory=list)
    sender_setup: list[str] = field(default_factory=list)  # lines the generator's senders send
    # Registrations in flight at once: below the server's listen backlog (see Options).
    connect_concurrency: int = 8
    tmpdir: tempfile.TemporaryDirectory[str] | None = None
    tls_ca: str | None = None  # set when ``port`` is a TLS port: the certificate to trust

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM our child; SIGKILL it if it is still there after 5 s."""
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        if self.tmpdir is not None:
            self.tmpdir.cleanup()
            self.tmpdir = None


def _pin(cmd: list[str], core: int | None) -> list[str]:
    if core is None or shutil.which("taskset") is None:
        return cmd
    return ["taskset", "-c", str(core), *cmd]


def _spawn(name: str, cmd: list[str], port: int, core: int | None,
           tmp: tempfile.TemporaryDirectory[str], cwd: Path | None = None) -> Running:
    log_path = Path(tmp.name) / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(_pin(cmd, core), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=cwd)
    running = Running(name, port, proc, log_path, tmpdir=tmp)
    try:
        wait_for_port(port, proc)
    except RuntimeError as exc:
        tail = running.log_tail()
        running.stop()
        raise RuntimeError(f"{name}: {exc}\n{tail}") from None
    return running


def our_options(python: str = sys.executable) -> tuple[list[str], list[str]]:
    """The extra options our server accepts from OUR_WISHES, and notes on the missing."""
    helptext = subprocess.run([python, str(ROOT / "server.py"), "--help"], check=False,
                              capture_output=True, text=True, timeout=30).stdout
    args: list[str] = []
    notes: list[str] = []
    for flag, value in OUR_WISHES:
        if flag in helptext:
            args += [flag] + ([value] if value else [])
        else:
            notes.append(f"server.py has no {flag} option")
    return args, notes


def make_certificate(directory: str | Path) -> tuple[Path, Path]:
    """A self-signed P-256 certificate for localhost/127.0.0.1 in ``directory``:
    (cert.pem, key.pem).  For benchmarks and tests only; never commit them."""
    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl command is needed to make a test certificate")
    d = Path(directory)
    cert, key = d / "cert.pem", d / "key.pem"
    proc = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "30",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=False, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl req failed: {proc.stderr.strip()[-500:]}")
    return cert, key


def start_ours(port: int, core: int | None = None, extra: list[str] | None = None,
               tls: bool = False, data_dir: str | Path | None = None,
               name: str | None = None) -> Running:
    """``python server.py --host 127.0.0.1 --port P`` plus the benchmark options it has.

    With ``tls``, also ``--tls-port T --tls-cert C --tls-key K`` with a fresh self-signed
    certificate; the returned ``port`` is then T (the plaintext port P stays open) and
    ``tls_ca`` is the certificate.  ``data_dir``: keep history there (it is not removed
    by stop()) instead of in the server's temporary directory.
    """
    args, notes = our_options()
    tmp = tempfile.TemporaryDirectory(prefix="bench-ours-")
    # History (on by default) lives in a temporary data directory, as in every test.
    args += ["--data-dir", str(data_dir if data_dir is not None else Path(tmp.name) / "data")]
    if tls:
        try:
            cert, key = make_certificate(tmp.name)
        except (RuntimeError, OSError, subprocess.SubprocessError):
            tmp.cleanup()
            raise
        args += ["--port", str(free_port()), "--tls-port", str(port), "--tls-cert", str(cert),
                 "--tls-key", str(key)]
    else:
        args += ["--port", str(port)]
    cmd = [sys.executable, str(ROOT / "server.py"), "--host", "127.0.0.1",
           *args, *(extra or [])]
    running = _spawn(name or ("ours-tls" if tls else "ours"), cmd, port, core, tmp, cwd=ROOT)
    running.connect_concurrency = 100  # server.py listens with a backlog of 1024
    running.notes += notes
    if tls:
        running.tls_ca = str(cert)
        running.notes.append("ours-tls: every client over TLS, verified against a "
                             "self-signed P-256 certificate")
    return running


def start_ours_tls(port: int, core: int | None = None) -> Running:
    return start_ours(port, core, tls=True)


def start_ours_nohistory(port: int, core: int | None = None) -> Running:
    """Ours with ``--no-history``: nothing stored, no CHATHISTORY (the history baseline)."""
    running = start_ours(port, core, extra=["--no-history"], name="ours-nohistory")
    running.notes.append("ours-nohistory: --no-history (nothing stored)")
    return running


def start_miniircd(port: int, core: int | None = None) -> Running:
    """miniircd in the foreground; it has no flood control and no send-queue limit."""
    tmp = tempfile.TemporaryDirectory(prefix="bench-miniircd-")
    try:
        import miniircd  # type: ignore[import-untyped]  # noqa: F401  (run it with our interpreter so the pid is python's)
        cmd = [sys.executable, "-c", ("import sys, miniircd; sys.argv[0] = 'miniircd'; "
                                      "sys.exit(miniircd.main())")]
    except ImportError:
        exe = shutil.which("miniircd")
        if exe is None:
            raise RuntimeError("miniircd is not installed (pip install miniircd)") from None
        cmd = [exe]
    cmd += ["--listen", "127.0.0.1", "--ports", str(port)]
    if os.geteuid() == 0:
        cmd += ["--setuid", "root"]  # it refuses to run as root unless told so explicitly
    running = _spawn("miniircd", cmd, port, core, tmp)
    running.connect_concurrency = 4
    running.notes.append("miniircd: no flood control to turn off; listen backlog 5; "
                         "select() limits it to 1,024 descriptors")
    return running


NGIRCD_CONF = """\
[Global]
Name = bench.ngircd
Info = benchmark
AdminInfo1 = benchmark
AdminInfo2 = benchmark
AdminEMail = bench@localhost
Listen = 127.0.0.1
Ports = {port}
MotdPhrase = benchmark

[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxNickLength = 30
MaxPenaltyTime = 0
PingTimeout = 600
PongTimeout = 600

[Options]
DNS = no
Ident = no
PAM = no
IncludeDir = {dir}/conf.d

[Operator]
Name = {oper}
Password = {password}
"""


def start_ngircd(port: int, core: int | None = None) -> Running:
    """ngIRCd in the foreground (-n) from a generated config with limits opened up."""
    if not os.access(NGIRCD, os.X_OK):
        raise RuntimeError(f"{NGIRCD} is not installed (apt-get install ngircd)")
    tmp = tempfile.TemporaryDirectory(prefix="bench-ngircd-")
    d = Path(tmp.name)
    (d / "conf.d").mkdir()
    os.chmod(d, 0o755)  # ngIRCd drops to 'nobody' and must still read its files
    conf = d / "ngircd.conf"
    conf.write_text(NGIRCD_CONF.format(port=port, dir=d, oper=NGIRCD_OPER[0],
                                       password=NGIRCD_OPER[1]))
    running = _spawn("ngircd", [NGIRCD, "-n", "-f", str(conf)], port, core, tmp)
    running.connect_concurrency = 8
    running.sender_setup = [f"OPER {NGIRCD_OPER[0]} {NGIRCD_OPER[1]}", "MODE {nick} +F"]
    running.notes.append(
        "ngircd: MaxPenaltyTime=0 turns penalties off; senders OPER and set user mode +F "
        "(relaxed flood protection: 10 commands per loop instead of 3); the read buffer "
        "(2 KB) and write buffer (32 KB sendq) per client are compile-time constants")
    return running


STARTERS = {"ours": start_ours, "ours-nohistory": start_ours_nohistory,
            "ours-tls": start_ours_tls, "miniircd": start_miniircd, "ngircd": start_ngircd}


def start(name: str, port: int | None = None, core: int | None = None) -> Running:
    """Start server ``name`` (ours, ours-nohistory, ours-tls, miniircd, ngircd) on ``port`` (a free one by
    default)."""
    return STARTERS[name](port or free_port(), core)
