"""keel data vs DVC on the same files, in one run: add, no-op status, push and pull.

Run with the Python of a virtualenv that has Keel installed::

    python benchmarks/data_vs_dvc.py                 # everything, ~5 min on 2 cores
    python benchmarks/data_vs_dvc.py --only big      # big | many | status | push | pull
    python benchmarks/data_vs_dvc.py --reps 3        # repetitions of each add (median)

DVC (the newest on PyPI) gets its own virtualenv, ``benchmarks/.venvs/dvc``, made once with uv.
Everything is written under ``benchmarks/.work/data_vs_dvc`` (git-ignored): the data (made
once, kept), one git repository per tool, one local-folder remote per tool. Each tool runs as a
user would run it: its console script in a subprocess, in its own repository, with its default
settings (``.keel`` and ``.dvc`` inside the repository; DVC analytics off). The page cache is
warm for both (the files were just copied) and ``sync`` runs before every timed command, so
neither pays for the other's write-back.

The BLAKE3 floor is single-threaded ``blake3.blake3().update_mmap(path)`` over the 1 GiB
file from the page cache, in this process, median of 3 after a warm-up read: the cost of
hashing alone, with no copy and no write. The durable-write floor is writing the same GiB to a
new file on the same filesystem and fsync-ing it (``copy_file_range`` then ``fsync``): what any
tool that guarantees its copy is on disk before it returns must pay on this disk.

Both tools run from compiled bytecode, as after a plain ``pip install`` (which compiles it):
this machine sets ``PYTHONDONTWRITEBYTECODE=1`` and uv installs without ``.pyc`` files, so
before timing anything the script byte-compiles DVC's virtualenv, Keel's package and the
virtualenv Keel runs from (``compileall``; a no-op when already done). Without that each command
of either tool recompiles its imports from source: 0.46 s of Keel's 1.1 s no-op status.

Results go to ``benchmarks/results/data-<date>.json`` and are printed as the Markdown table of
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "data_vs_dvc"
DVC_VENV = HERE / ".venvs" / "dvc"
DVC = DVC_VENV / "bin" / "dvc"
KEEL = Path(sys.executable).parent / "keel"
RESULTS = HERE / "results"

BIG_SIZE = 1 << 30
MANY_FILES = 20_000
STATUS_RUNS = 5
GOALS = {"big": 3.0, "many": 5.0, "status": 5.0, "push": 5.0, "pull": 5.0}


def ensure_dvc() -> str:
    """Create DVC's virtualenv once with the newest DVC; its version."""
    uv = Path(sys.executable).parent / "uv"
    uv_cmd = str(uv) if uv.exists() else shutil.which("uv")
    if not DVC.exists():
        if uv_cmd is None:
            sys.exit("uv not found beside the interpreter or on PATH: pip install uv")
        subprocess.run([uv_cmd, "venv", str(DVC_VENV), "--python", sys.executable], check=True)
        subprocess.run([uv_cmd, "pip", "install", "--python", str(DVC_VENV / "bin" / "python"),
                        "dvc"], check=True)  # fmt: skip
    done = subprocess.run([DVC, "--version"], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def compile_bytecode() -> None:
    """Byte-compile both tools and their dependencies once, as pip does when it installs."""
    import keel

    for python, where in (
        (DVC_VENV / "bin" / "python", _site_packages(DVC_VENV / "bin" / "python")),
        (Path(sys.executable), _site_packages(Path(sys.executable))),
        (Path(sys.executable), str(Path(keel.__file__).parent)),
    ):
        subprocess.run(
            [str(python), "-m", "compileall", "-q", "-j", "0", where],
            check=False,
            capture_output=True,
        )  # fmt: skip  (a few test files of
        # dependencies do not compile; compileall reports them and compiles the rest)


def _site_packages(python: Path) -> str:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def make_data() -> tuple[Path, Path]:
    """The 1 GiB file (random bytes) and the folder of 20,000 files of 1-10 KB (seed 42)."""
    data = WORK / "data"
    data.mkdir(parents=True, exist_ok=True)
    big = data / "big.bin"
    if not big.exists() or big.stat().st_size != BIG_SIZE:
        with open(big, "wb") as out:
            for _ in range(BIG_SIZE >> 24):
                out.write(os.urandom(1 << 24))
    many = data / "many"
    if not many.exists() or sum(len(files) for _, _, files in os.walk(many)) != MANY_FILES:
        shutil.rmtree(many, ignore_errors=True)
        rng = random.Random(42)
        for i in range(MANY_FILES):
            folder = many / f"d{i % 20:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"f{i:05d}.bin").write_bytes(rng.randbytes(rng.randint(1000, 10_000)))
        past = time.time() - 3600  # older than Keel's 2 s racy window, as real data is
        for root, _, files in os.walk(many):
            for name in files:
                os.utime(os.path.join(root, name), (past, past))
    return big, many


def env_for(tool: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "DVC_"))}
    if tool == "dvc":
        env["DVC_NO_ANALYTICS"] = "1"
    return env


CPU: dict[tuple[str, str], list[float]] = {}
"""CPU seconds (user + system) of each timed command, by (tool, benchmark): on a shared machine
they are less inflated by other load than wall times, so the report shows both."""


def run(tool: str, args: Sequence[str], cwd: Path, *, bench: str = "") -> float:
    """Run one command of a tool; its wall time in seconds (after a sync, untimed)."""
    os.sync()
    exe = DVC if tool == "dvc" else KEEL
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [str(exe), *args], cwd=cwd, env=env_for(tool), capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{tool} {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    if bench:
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        CPU.setdefault((tool, bench), []).append(cpu)
    return elapsed


def fresh_repo(tool: str, name: str) -> Path:
    repo = WORK / f"{tool}-{name}"
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    if tool == "dvc":
        run("dvc", ["init", "-q"], repo)
        run("dvc", ["config", "core.analytics", "false"], repo)
    return repo


def blake3_floor(big: Path) -> float:
    import blake3

    big.read_bytes()  # into the page cache
    times = []
    for _ in range(3):
        started = time.perf_counter()
        blake3.blake3().update_mmap(str(big))
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def durable_write_floor(big: Path) -> float:
    """Copy the GiB to a new file in the kernel and fsync it: the disk's share of a durable add."""
    target = WORK / "floor.bin"
    target.unlink(missing_ok=True)
    os.sync()
    started = time.perf_counter()
    with open(big, "rb") as src, open(target, "wb") as dst:
        offset = 0
        while n := os.copy_file_range(src.fileno(), dst.fileno(), 1 << 26, offset, offset):
            offset += n
        os.fsync(dst.fileno())
    elapsed = time.perf_counter() - started
    target.unlink()
    return elapsed


def bench_big(big: Path, reps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tool in ("dvc", "keel"):
        times = []
        for _ in range(reps):
            repo = fresh_repo(tool, "big")
            shutil.copy2(big, repo / "big.bin")
            times.append(run(tool, ["add", "big.bin"] if tool == "dvc" else
                             ["data", "add", "big.bin"], repo, bench="big"))  # fmt: skip
        out[tool] = statistics.median(times)
        out[f"{tool}_all"] = times
    return out


def bench_many(many: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tool in ("dvc", "keel"):
        repo = fresh_repo(tool, "many")
        shutil.copytree(many, repo / "many")  # copy2: the old mtimes are kept
        args = ["add", "many"] if tool == "dvc" else ["data", "add", "many"]
        out[tool] = run(tool, args, repo, bench="many")
    return out


def bench_status() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tool in ("dvc", "keel"):
        repo = WORK / f"{tool}-many"
        args = ["status"] if tool == "dvc" else ["data", "status"]
        run(tool, args, repo)  # warm-up
        times = [run(tool, args, repo, bench="status") for _ in range(STATUS_RUNS)]
        out[tool] = statistics.median(times)
        out[f"{tool}_all"] = times
    return out


def bench_push() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tool in ("dvc", "keel"):
        repo = WORK / f"{tool}-many"
        remote = WORK / f"{tool}-remote"
        shutil.rmtree(remote, ignore_errors=True)
        if tool == "dvc":
            run(tool, ["remote", "add", "-f", "-d", "bench", str(remote)], repo)
            out[tool] = run(tool, ["push"], repo, bench="push")
        else:
            run(tool, ["remote", "add", "bench", str(remote), "--default"], repo)
            out[tool] = run(tool, ["data", "push"], repo, bench="push")
    return out


def bench_pull(many: Path) -> dict[str, Any]:
    """Delete the local store and the data, then pull it all back from the remote."""
    out: dict[str, Any] = {}
    for tool in ("dvc", "keel"):
        repo = WORK / f"{tool}-many"
        store = repo / ".dvc" / "cache" if tool == "dvc" else repo / ".keel" / "artifacts"
        shutil.rmtree(store)
        shutil.rmtree(repo / "many")
        args = ["pull"] if tool == "dvc" else ["data", "pull"]
        out[tool] = run(tool, args, repo, bench="pull")
        _check_same(many, repo / "many")
    return out


def _check_same(expected: Path, got: Path) -> None:
    """Every file came back with its bytes (a pull that lost files would not count)."""
    names = sorted(p.relative_to(expected) for p in expected.rglob("*") if p.is_file())
    pulled = sorted(p.relative_to(got) for p in got.rglob("*") if p.is_file())
    if names != pulled:
        raise RuntimeError(f"{got}: {len(pulled)} files pulled, {len(names)} expected")
    for rel in names[:: len(names) // 50]:
        if (expected / rel).read_bytes() != (got / rel).read_bytes():
            raise RuntimeError(f"{got / rel} differs after the pull")


def machine() -> dict[str, Any]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), "unknown")  # fmt: skip
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal:"))  # fmt: skip
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(WORK)], capture_output=True, text=True)
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem / 2**20, 1),
        "kernel": platform.release(),
        "filesystem": fs.stdout.strip(),
        "python": platform.python_version(),
    }


def markdown(result: dict[str, Any]) -> str:
    labels = {
        "big": "`add` one 1 GiB file",
        "many": "`add` 20,000 files of 1-10 KB",
        "status": "no-op `status` on those 20,000 files (median of 5)",
        "push": "`push` the 20,000 files to a local-folder remote",
        "pull": "`pull` them back (empty store, data deleted)",
    }
    lines = [
        "| benchmark | DVC | Keel | Keel is | goal | met | CPU s, DVC / Keel |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, label in labels.items():
        row = result["benchmarks"].get(key)
        if not row:
            continue
        ratio = row["dvc"] / row["keel"]
        met = "yes" if ratio >= GOALS[key] else "**no**"
        cpu = (
            f"{row['dvc_cpu']:.2f} / {row['keel_cpu']:.2f}" if "keel_cpu" in row else "not measured"
        )
        lines.append(
            f"| {label} | {row['dvc']:.2f} s | {row['keel']:.2f} s | {ratio:.1f}× faster "
            f"| ≥ {GOALS[key]:g}× | {met} | {cpu} |"
        )
    big = result["benchmarks"].get("big")
    if big and "blake3_floor" in big:
        lines.append(
            f"| `add` 1 GiB vs the BLAKE3 floor ({big['blake3_floor']:.2f} s, 1 thread) | | "
            f"{big['keel']:.2f} s | {big['keel'] / big['blake3_floor']:.1f}× the floor | "
            f"≤ 2× | {'yes' if big['keel'] <= 2 * big['blake3_floor'] else '**no**'} | |"
        )
        lines.append(
            f"| durable write of 1 GiB on this disk (copy + fsync) | | "
            f"{big['durable_write_floor']:.2f} s | | | | |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=list(GOALS), help="repeatable")
    parser.add_argument("--reps", type=int, default=1, help="repetitions of the 1 GiB add")
    parser.add_argument("--report", type=Path, help="print the table of a saved results JSON")
    args = parser.parse_args(argv)
    if args.report:
        print(markdown(json.loads(args.report.read_text())))
        return
    only = set(args.only or GOALS)
    if {"status", "push", "pull"} & only:
        only.add("many")  # they run on the repository that add made
    if "pull" in only:
        only.add("push")
    dvc_version = ensure_dvc()
    compile_bytecode()
    big, many = make_data()
    result: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "dvc": dvc_version,
        "load_start": os.getloadavg(),
        "benchmarks": {},
    }
    benches = result["benchmarks"]
    if "big" in only:
        benches["big"] = bench_big(big, args.reps)
        benches["big"]["blake3_floor"] = blake3_floor(big)
        benches["big"]["durable_write_floor"] = durable_write_floor(big)
        print("big", benches["big"], flush=True)
    if "many" in only:
        benches["many"] = bench_many(many)
        print("many", benches["many"], flush=True)
    if "status" in only:
        benches["status"] = bench_status()
        print("status", benches["status"], flush=True)
    if "push" in only:
        benches["push"] = bench_push()
        print("push", benches["push"], flush=True)
    if "pull" in only:
        benches["pull"] = bench_pull(many)
        print("pull", benches["pull"], flush=True)
    result["load_end"] = os.getloadavg()
    for (tool, bench), cpus in CPU.items():
        benches[bench][f"{tool}_cpu"] = statistics.median(cpus)
    RESULTS.mkdir(exist_ok=True)
    name = "data-" + datetime.now(UTC).strftime("%Y-%m-%d") + ("-" + "-".join(sorted(only))
                                                               if args.only else "")  # fmt: skip
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{result['date']}; {result['machine']}; {dvc_version}")
    print(f"load average {result['load_start']} at start, {result['load_end']} at end\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
