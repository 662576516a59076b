"""What the kernel says about a server process: CPU time, resident memory, threads, fds.

Everything is read from /proc, so it works for any server (ours, miniircd, ngIRCd) given
its pid, and costs the server nothing.  A missing or vanished process reads as ``None``
rather than raising: a benchmark of a server that crashed must still produce a report.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import asdict, dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class ProcSample:
    """One look at a process; fields are None when the process is gone."""

    at: float  # time.monotonic() of the sample
    cpu_s: float | None  # utime + stime of all threads, seconds
    rss_kb: int | None
    threads: int | None
    fds: int | None

    def as_dict(self) -> dict[str, float | int | None]:
        d = asdict(self)
        del d["at"]
        return d


def cpu_seconds(pid: int) -> float | None:
    """utime + stime from /proc/PID/stat (the whole thread group), in seconds."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    fields = data[data.rindex(b")") + 2:].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            return dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return {}


def fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def sample(pid: int | None) -> ProcSample:
    """CPU, VmRSS, Threads and open fds of ``pid`` (all None without a pid)."""
    now = time.monotonic()
    if pid is None:
        return ProcSample(now, None, None, None, None)
    status = _status(pid)
    rss = status.get("VmRSS")
    threads = status.get("Threads")
    return ProcSample(
        at=now,
        cpu_s=cpu_seconds(pid),
        rss_kb=int(rss.split()[0]) if rss else None,
        threads=int(threads) if threads else None,
        fds=fd_count(pid),
    )


def alive(pid: int | None) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    if pid is None:
        return True  # nothing to watch: assume the remote server is up
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rindex(b")") + 2:][:1] not in (b"Z", b"X")


def own_cpu_seconds() -> float:
    """CPU time of this process (user + system), for the generator's own load."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass  # keep the old limit; the many-clients scenario will report failures
    return soft
