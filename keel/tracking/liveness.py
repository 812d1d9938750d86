"""Is the process that started a run still alive? How a SIGKILLed run is found and marked LOST.

A run records its host, its process id and the *process space* that id belongs to (this boot of
the machine and its PID namespace), and refreshes ``heartbeat_at`` while it is open. A RUNNING
run started in this process space whose process is gone (or whose pid now belongs to a younger
process) is lost at once. Any other run, from another host, from another container that happens
to share this host name, or from before a reboot, is lost when its heartbeat is older than the
timeout: its pid means nothing here.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from pathlib import Path

from keel.tracking.store import RunningRun

__all__ = ["HOST", "PROCESS_SPACE", "lost_runs", "process_alive", "process_space"]

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


def process_space() -> str | None:
    """This boot and PID namespace, as ``<boot id>:<pid namespace inode>`` (None off Linux)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return None
    return f"{boot}:{namespace.removeprefix('pid:[').rstrip(']')}"[:64]


PROCESS_SPACE = process_space()


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
    running: Iterable[RunningRun],
    *,
    now_ms: int,
    timeout_s: float,
    host: str = HOST,
    space: str | None = PROCESS_SPACE,
) -> list[str]:
    """The ids among ``running`` whose process is gone."""
    lost = []
    for run in running:
        # a run recorded before revision 0007 has no space: its host name has to do
        ours = run.process_space is None or run.process_space == space
        if run.host == host and run.pid is not None and ours:
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
