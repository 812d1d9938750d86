"""Load generation and process accounting for benchmarks/serving_vs_peers.py.

- :func:`wrk` drives one server with ``wrk`` (a Lua script sets the POST body and prints the
  summary as JSON), pinned to its own CPUs with ``taskset``.
- :class:`Server` starts a command in its own session, waits for its first healthy answer,
  sums RSS and CPU time over every process it forked (found by session or by parent), and
  stops them all.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%s]==]

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, ' ..
    '"max_us": %%d, "mean_us": %%.1f, "errors": {"connect": %%d, "read": %%d, "write": %%d, ' ..
    '"status": %%d, "timeout": %%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status,
    e.timeout))
end
"""


def ensure_wrk() -> str:
    """The path of ``wrk``, installed with apt-get when missing (Debian packages it)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("Installing wrk (apt-get install -y wrk)", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False)
        found = shutil.which("wrk")
    if not found:
        sys.exit("wrk is needed as the load generator: apt-get install wrk (or brew install wrk)")
    return found


def lua_script(body: bytes, path: Path) -> Path:
    """A wrk script POSTing ``body`` as JSON and printing the summary as one JSON line."""
    text = body.decode()
    if "]==]" in text:
        raise ValueError("the body cannot hold ]==]")
    path.write_text(_LUA % text)
    return path


def wrk(url: str, script: Path, *, connections: int, seconds: float, cpus: str) -> dict[str, Any]:
    """One closed-loop wrk run: ``connections`` keep-alive connections on one thread, each
    sending its next request as soon as the previous answer arrives.

    Returns:
        requests, req_per_s, p50_ms, p90_ms, p99_ms, max_ms, mean_ms and errors (connect,
        read, write, status = non-2xx/3xx answers, timeout = over 10 s).
    """
    command = [
        "taskset", "-c", cpus, ensure_wrk(), "-t1", f"-c{connections}", f"-d{seconds:g}s",
        "--timeout", "10s", "-s", str(script), url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout} {done.stderr}")
    raw = json.loads(lines[-1])
    errors = raw["errors"]
    return {
        "requests": raw["requests"],
        "req_per_s": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "mean_ms": raw["mean_us"] / 1000,
        "errors": errors,
        "error_count": sum(errors.values()),
    }


def post_json(url: str, body: bytes, timeout: float = 30) -> tuple[int, Any]:
    """POST ``body`` as JSON; the status and the decoded answer (text when not JSON)."""
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status, text = answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


class ServerFailed(RuntimeError):
    """The server exited or never answered; carries the tail of its log."""


class Server:
    """A server command run in its own session, pinned to ``cpus``, its output in ``log``."""

    def __init__(
        self, argv: list[str], *, cwd: Path, env: dict[str, str], cpus: str, log: Path
    ) -> None:
        self.log = log
        self.started = time.perf_counter()
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                ["taskset", "-c", cpus, *argv],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def wait_healthy(self, url: str, *, timeout: float = 180) -> float:
        """Seconds from the start of the command to the first 200 from ``url`` (polled every
        20 ms).

        Raises:
            ServerFailed: the process exited, or no 200 came within ``timeout``.
        """
        deadline = self.started + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(f"exited with {self.process.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - self.started
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.02)
        raise ServerFailed(f"no healthy answer from {url} in {timeout:g} s:\n{self.tail()}")

    def pids(self) -> list[int]:
        """Every live process of the server: its session, and the descendants of its command
        (BentoML's worker calls setsid and leaves the session). Zombies are left out."""
        children: dict[int, list[int]] = {}
        alive, found = set(), set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = _stat_fields(entry / "stat")
            except OSError:
                continue
            pid = int(entry.name)
            children.setdefault(int(fields[1]), []).append(pid)  # by parent
            if fields[0] != "Z":
                alive.add(pid)
            if int(fields[3]) == self.process.pid:  # by session
                found.add(pid)
        todo = [self.process.pid]
        while todo:
            pid = todo.pop()
            found.add(pid)
            todo.extend(children.get(pid, []))
        return sorted(found & alive)

    def rss_mb(self) -> float:
        """Resident memory of all the session's processes, in MB (10^6 bytes)."""
        total = 0
        for pid in self.pids():
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
            except OSError:
                continue
        return total / 1e6

    def cpu_s(self) -> float:
        """User + system CPU seconds used so far by the session's live processes."""
        total = 0
        for pid in self.pids():
            try:
                fields = _stat_fields(Path(f"/proc/{pid}/stat"))
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / TICKS

    def stop(self, *, grace: float = 15) -> None:
        """SIGTERM to the session's processes, SIGKILL to any left after ``grace`` seconds."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.perf_counter() + grace
            while self.pids() and time.perf_counter() < deadline:
                time.sleep(0.1)
            if not self.pids():
                break
        self.process.wait(timeout=grace)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def _stat_fields(path: Path) -> list[str]:
    """/proc/PID/stat after the command name (field 3, the state, is index 0)."""
    text = path.read_text()
    return text[text.rindex(")") + 2 :].split()
