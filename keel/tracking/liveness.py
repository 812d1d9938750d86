"""Is the process that started a run still alive? How a SIGKILLed run is found and marked LOST.

A run records its host and process id and refreshes ``heartbeat_at`` while it is open. A RUNNING
run started on this host whose process is gone (or whose pid now belongs to a younger process)
is lost at once; a run from another host is lost when its heartbeat is older than the timeout.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from pathlib import Path

from keel.tracking.store import RunningRun

__all__ = ["HOST", "lost_runs", "process_alive"]

HOST = socket.gethostname()


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        return None
    return None


_BOOT = _boot_time()


def process_alive(pid: int, *, started_before_ms: int | None = None) -> bool:
    """True if ``pid`` runs (and is not a zombie) and, when known, started before the run did."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): the signal check is all we have
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return False
    if started_before_ms is not None and _BOOT is not None:
        started = _BOOT + int(fields[19]) / os.sysconf("SC_CLK_TCK")
        # a pid reused by a process born after the run started is not the run's process
        if started * 1000 > started_before_ms + 2000:
            return False
    return True


def lost_runs(
    running: Iterable[RunningRun], *, now_ms: int, timeout_s: float, host: str = HOST
) -> list[str]:
    """The ids among ``running`` whose process is gone."""
    lost = []
    for run in running:
        if run.host == host and run.pid is not None:
            # the run's own process started before its first heartbeat (the insert); a process
            # that reused the pid started after the run's last heartbeat
            last = run.start_time if run.heartbeat_at is None else run.heartbeat_at
            gone = not process_alive(run.pid, started_before_ms=last)
        else:
            last = run.start_time if run.heartbeat_at is None else run.heartbeat_at
            gone = now_ms - last > timeout_s * 1000
        if gone:
            lost.append(run.run_id)
    return lost
