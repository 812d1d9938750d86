"""Keel's tracking measured side by side with MLflow's, each in its own interpreter.

Run by hand from the repository root::

    python benchmarks/tracking_vs_mlflow.py [--only NAME] [--quick] [--full]

MLflow gets its own virtualenv (``benchmarks/.venvs/mlflow``, made once with uv). Every
measurement runs in a fresh subprocess (``_mlflow_side.py`` or ``_keel_side.py``) inside a fresh
temporary directory holding that tool's SQLite database, so each side pays for its own imports
and process state. Prints a table, writes ``benchmarks/results/tracking-<date>.json`` and a
Markdown table ready for ``docs/benchmarks.md``. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _report import (
    build_rows,
    console,
    machine,
    machine_line,
    markdown_table,
    print_table,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MLFLOW_VENV = HERE / ".venvs" / "mlflow"
MLFLOW_PYTHON = MLFLOW_VENV / "bin" / "python"
MLFLOW_FALLBACK = "mlflow==3.17.2"  # 3.18.0 pins an mlflow-skinny the index does not have
KEEL_PYTHON = Path(sys.executable)
CACHE = HERE / ".work"
RESULTS = HERE / "results"
SIDES = {"mlflow": HERE / "_mlflow_side.py", "keel": HERE / "_keel_side.py"}
SEED = 42
TOOLS = ("mlflow", "keel")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much work each benchmark does; ``--quick`` shrinks every number."""

    log_metric_calls: int = 5_000
    batch_points: int = 100_000
    batch_size: int = 1_000
    search_runs: int = 10_000
    search_runs_full: int = 100_000
    search_queries: int = 20
    startup_runs: int = 7
    repeats: int = 5


QUICK = Sizes(
    log_metric_calls=500,
    batch_points=10_000,
    search_runs=1_000,
    search_runs_full=10_000,
    search_queries=5,
    startup_runs=3,
    repeats=1,
)


class SideError(RuntimeError):
    """A benchmark subprocess failed; carries the tail of its stderr."""


# --- environment -------------------------------------------------------------------------


def ensure_mlflow_venv() -> None:
    """Create MLflow's virtualenv once and install the newest MLflow that installs."""
    uv = KEEL_PYTHON.parent / "uv"
    uv_cmd = str(uv) if uv.exists() else shutil.which("uv")
    if uv_cmd is None:
        sys.exit("uv not found beside the interpreter or on PATH: pip install uv")
    if not MLFLOW_PYTHON.exists():
        console.print(f"[bold]Creating {MLFLOW_VENV.relative_to(REPO)}[/]")
        subprocess.run([uv_cmd, "venv", str(MLFLOW_VENV), "--python", sys.executable], check=True)
    if _mlflow_version() is not None:
        return
    for spec in ("mlflow", MLFLOW_FALLBACK):
        console.print(f"[bold]Installing {spec} into {MLFLOW_VENV.relative_to(REPO)}[/]")
        done = subprocess.run([uv_cmd, "pip", "install", "--python", str(MLFLOW_PYTHON), spec])
        if done.returncode == 0:
            return
    sys.exit("could not install MLflow into its virtualenv")


def _mlflow_version() -> str | None:
    code = "import importlib.metadata as m; print(m.version('mlflow'))"
    done = subprocess.run([MLFLOW_PYTHON, "-c", code], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def side_env(tool: str, workdir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The inherited environment minus any tool's settings, plus this tool's database location.

    MLflow's telemetry is switched off: this machine has no route out, and a sender waiting on
    the network could only slow MLflow down.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KEEL_", "MLFLOW_", "VIRTUAL_ENV", "PYTHON"))
    }
    if tool == "mlflow":
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
        env["MLFLOW_DISABLE_TELEMETRY"] = "true"
        env["DO_NOT_TRACK"] = "true"
        bin_dir = MLFLOW_VENV / "bin"
    else:
        env["KEEL_HOME"] = str(workdir / ".keel")
        bin_dir = KEEL_PYTHON.parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


def run_side(
    tool: str,
    bench: str,
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    prepare: Callable[[Path], list[str]] | None = None,
    after: Callable[[Path, dict[str, Any]], None] | None = None,
    timeout: float = 3600,
) -> dict[str, Any]:
    """Run one benchmark of one tool in a fresh subprocess and temporary directory.

    ``prepare(workdir)`` may put files in place and return extra arguments; ``after(workdir,
    result)`` sees the directory before it is removed.
    """
    python = MLFLOW_PYTHON if tool == "mlflow" else KEEL_PYTHON
    with tempfile.TemporaryDirectory(prefix=f"bench-{tool}-{bench}-") as tmp:
        workdir = Path(tmp)
        extra_args = prepare(workdir) if prepare else []
        done = subprocess.run(
            [str(python), str(SIDES[tool]), bench, *argv, *extra_args],
            cwd=workdir,
            env=side_env(tool, workdir, env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-12:])
            raise SideError(f"{tool} {bench} exited {done.returncode}:\n{tail}")
        result = _last_json_line(done.stdout)
        if result is None:
            raise SideError(f"{tool} {bench} printed no JSON line:\n{done.stdout[-2000:]}")
        if after:
            after(workdir, result)
        return result


def _last_json_line(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


# --- benchmarks ----------------------------------------------------------------------------


def repeated(tools: list[str], repeats: int, once: Callable[[str], dict[str, Any]]) -> dict:
    """Run ``once(tool)`` ``repeats`` times per tool, interleaving tools so load hits both."""
    out: dict[str, Any] = {tool: {"samples": []} for tool in tools}
    for index in range(repeats):
        for tool in tools:
            if "error" in out[tool]:
                continue
            console.print(f"  {tool}: repeat {index + 1}/{repeats}", style="dim")
            try:
                out[tool]["samples"].append(once(tool))
            except (SideError, subprocess.SubprocessError, OSError) as error:
                out[tool]["error"] = str(error)
                console.print(f"  [red]{tool} failed[/]: {error}")
    return out


def _summarize(out: dict[str, Any]) -> None:
    """Add the median rate of each tool's samples, and whether every point was read back."""
    for tool, measured in out.items():
        samples = measured["samples"]
        if not samples or "error" in measured:
            continue
        rates = [s["points"] / s["seconds"] for s in samples]
        complete = all(s["stored"] == s["points"] for s in samples)
        measured.update(
            median_per_s=statistics.median(rates),
            rates_per_s=rates,
            seconds=[s["seconds"] for s in samples],
            all_points_stored=complete,
        )
        if not complete:
            console.print(f"  [red]{tool} did not store every point it was given[/]")


def _argv(tool: str, argv: list[str], keel_args: tuple[str, ...]) -> list[str]:
    return [*argv, *keel_args] if tool == "keel" else argv


def bench_log_metric(
    tools: list[str], sizes: Sizes, *, keel_args: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``log_metric`` one call at a time; calls/s through the end of the run."""
    n = sizes.log_metric_calls
    argv = ["--n", str(n)]
    out = repeated(
        tools,
        sizes.repeats,
        lambda tool: run_side(tool, "log_metric", _argv(tool, argv, keel_args)),
    )
    _summarize(out)
    return {"calls": n, **out}


def bench_log_batch(
    tools: list[str], sizes: Sizes, *, keel_args: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Metrics logged ``batch_size`` at a time; metrics/s through the end of the run."""
    n, per_call = sizes.batch_points, sizes.batch_size
    argv = ["--n", str(n), "--per-call", str(per_call)]
    out = repeated(
        tools,
        sizes.repeats,
        lambda tool: run_side(tool, "log_batch", _argv(tool, argv, keel_args)),
    )
    _summarize(out)
    return {"points": n, "per_call": per_call, **out}


def bench_series(
    tools: list[str], sizes: Sizes, *, keel_args: tuple[str, ...] = ()
) -> dict[str, Any]:
    """One metric's steps: ``log_batch`` of ``batch_size`` steps in both tools.

    MLflow's batch rate depends on the shape: one key per batch updates one latest-value row,
    1,000 keys update 1,000. This is MLflow's fastest shape (the 8,400 metrics/s in FINDINGS).
    """
    n, per_call = sizes.batch_points, sizes.batch_size
    argv = ["--n", str(n), "--per-call", str(per_call)]
    out = repeated(
        tools,
        sizes.repeats,
        lambda tool: run_side(tool, "series", _argv(tool, argv, keel_args)),
    )
    _summarize(out)
    return {"points": n, "per_call": per_call, **out}


def make_runs(n: int, seed: int = SEED) -> list[dict[str, dict[str, Any]]]:
    """The runs both tools seed: 5 params (``model`` in tree/linear/forest), rmse, mae and r2."""
    rng = random.Random(seed)
    runs = []
    for index in range(n):
        rmse = rng.uniform(0, 2)
        runs.append(
            {
                "params": {
                    "model": rng.choice(["tree", "linear", "forest"]),
                    "max_depth": str(rng.randint(2, 12)),
                    "learning_rate": f"{rng.uniform(0.01, 0.3):.4f}",
                    "n_estimators": str(rng.choice([50, 100, 200, 400])),
                    "seed": str(index),
                },
                "metrics": {"rmse": rmse, "mae": rmse * rng.uniform(0.6, 0.9), "r2": rng.random()},
            }
        )
    return runs


def expected_top(runs: list[dict[str, dict[str, Any]]], limit: int = 100) -> list[float]:
    """The rmse values the search must return, computed here in plain Python."""
    hits = [
        r["metrics"]["rmse"]
        for r in runs
        if r["metrics"]["rmse"] < 1 and r["params"]["model"] == "tree"
    ]
    return sorted(hits)[:limit]


def bench_search(
    tools: list[str],
    sizes: Sizes,
    *,
    n_runs: int,
    reseed: bool = False,
    keel_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Seed ``n_runs`` identical runs per tool (untimed, cached), then time the same search.

    Seeding goes through each tool's public client (create_run, log_batch or log_params and
    log_metrics, then end the run; MLflow takes 25-70 ms a run here), Keel's with
    ``KEEL_CAPTURE_SOURCE=false``. The seeded folder is kept in ``benchmarks/.work/`` (keyed by
    the data, MLflow's version and Keel's tracking and db sources) and copied into each fresh
    temporary directory; ``reseed`` ignores it.
    """
    runs = make_runs(n_runs)
    payload = json.dumps(runs)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:12]
    expected = expected_top(runs)
    out: dict[str, Any] = {"runs": n_runs, "queries": sizes.search_queries}
    with tempfile.TemporaryDirectory(prefix="bench-seed-") as tmp:
        seed_file = Path(tmp) / "runs.json"
        seed_file.write_text(payload)
        argv = ["--seed-file", str(seed_file), "--queries", str(sizes.search_queries)]
        for tool in tools:
            env = {"KEEL_CAPTURE_SOURCE": "false"} if tool == "keel" else {}
            code = f"mlflow-{_mlflow_version()}" if tool == "mlflow" else f"keel-{_keel_digest()}"
            key = f"runs{n_runs}-{digest}"
            cached = CACHE / f"search-{code}-{key}"
            state = "cached" if cached.is_dir() and not reseed else "seeding"
            console.print(f"  {tool}: {n_runs:,} runs ({state}), {sizes.search_queries} queries")
            stale_glob = f"search-{tool}-*-{key}"
            prepare, after = _seed_cache(cached, stale_glob=stale_glob, reseed=reseed)
            try:
                result = run_side(
                    tool,
                    "search",
                    _argv(tool, argv, keel_args),
                    env=env,
                    prepare=prepare,
                    after=after,
                )
            except (SideError, subprocess.SubprocessError, OSError) as error:
                out[tool] = {"error": str(error)}
                console.print(f"  [red]{tool} failed[/]: {error}")
                continue
            times_ms = [t * 1000 for t in result.pop("times")]
            rmse = result.pop("rmse")
            out[tool] = {
                **result,
                "p50_ms": statistics.median(times_ms),
                "p95_ms": _percentile(sorted(times_ms), 95),
                "times_ms": times_ms,
                "results_match_expected": _same_floats(rmse, expected),
                "seed_env": env,
            }
            if not out[tool]["results_match_expected"]:
                console.print(f"  [red]{tool} returned other runs than expected[/]")
    return out


def _keel_digest() -> str:
    """A hash of the Keel sources that decide what a seeded database holds."""
    sha = hashlib.sha256()
    for path in sorted([*REPO.glob("keel/db/**/*.py"), *REPO.glob("keel/tracking/*.py")]):
        sha.update(path.relative_to(REPO).as_posix().encode() + path.read_bytes())
    return sha.hexdigest()[:12]


def _meta(cached: Path) -> Path:
    return cached.parent / f"{cached.name}.json"


def _seed_cache(cached: Path, *, stale_glob: str, reseed: bool) -> tuple[Callable, Callable]:
    """``prepare``/``after`` hooks for :func:`run_side` restoring or saving a seeded folder.

    Saving removes the folders matching ``stale_glob``: the same data seeded by older code.
    """
    meta = _meta(cached)

    def prepare(workdir: Path) -> list[str]:
        if cached.is_dir() and not reseed:
            shutil.copytree(cached, workdir, dirs_exist_ok=True)
            return ["--seeded"]
        return []

    def after(workdir: Path, result: dict[str, Any]) -> None:
        if result.get("seed_seconds") is None:
            result["seed_cached"] = True
            result["seed_seconds"] = json.loads(meta.read_text())["seed_seconds"]
            return
        result["seed_cached"] = False
        for stale in CACHE.glob(stale_glob):  # seeded by other versions of the code
            shutil.rmtree(stale, ignore_errors=True)
            _meta(stale).unlink(missing_ok=True)
        shutil.copytree(workdir, cached)
        meta.write_text(json.dumps({"seed_seconds": result["seed_seconds"]}) + "\n")

    return prepare, after


def _same_floats(got: list[float], want: list[float]) -> bool:
    return len(got) == len(want) and all(abs(a - b) < 1e-9 for a, b in zip(got, want, strict=True))


def _percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    rank = max(1, round(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def bench_startup(tools: list[str], sizes: Sizes) -> dict[str, Any]:
    """Wall time of a fresh interpreter importing the package, and of the console script."""
    commands = {
        "mlflow": {
            "python": [str(MLFLOW_PYTHON), "-c", "pass"],
            "import": [str(MLFLOW_PYTHON), "-c", "import mlflow"],
            "cli": [str(MLFLOW_VENV / "bin" / "mlflow"), "--version"],
        },
        "keel": {
            "python": [str(KEEL_PYTHON), "-c", "pass"],
            "import": [str(KEEL_PYTHON), "-c", "import keel"],
            "cli": [str(KEEL_PYTHON.parent / "keel"), "--help"],
        },
    }
    out: dict[str, Any] = {"runs": sizes.startup_runs}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        workdir = Path(tmp)
        for what in ("python", "import", "cli"):
            console.print(f"  {what}, {sizes.startup_runs} runs each after a warm-up", style="dim")
            samples: dict[str, list[float]] = {tool: [] for tool in tools}
            errors: dict[str, str] = {}
            for index in range(sizes.startup_runs + 1):  # the first run only warms the cache
                for tool in tools:
                    if tool in errors:
                        continue
                    try:
                        seconds = _time_command(commands[tool][what], tool, workdir)
                    except SideError as error:
                        errors[tool] = str(error)
                        console.print(f"  [red]{tool} {what} failed[/]: {error}")
                        continue
                    if index:
                        samples[tool].append(seconds)
            out[what] = {
                tool: {"error": errors[tool]}
                if tool in errors
                else {
                    "command": " ".join(commands[tool][what]),
                    "median_s": statistics.median(samples[tool]),
                    "samples_s": samples[tool],
                }
                for tool in tools
            }
    return out


def _time_command(argv: list[str], tool: str, workdir: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=workdir, env=side_env(tool, workdir), capture_output=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise SideError(f"{' '.join(argv)} exited {done.returncode}: " + "\n".join(tail))
    return seconds


# --- profile -------------------------------------------------------------------------------


RATE_BENCHMARKS = {
    "log_metric": bench_log_metric,
    "log_batch": bench_log_batch,
    "series": bench_series,
}


def profile_keel(names: list[str], sizes: Sizes, *, reseed: bool) -> None:
    """Run Keel's side of each benchmark once under cProfile (every thread); print the top."""
    import pstats

    CACHE.mkdir(exist_ok=True)
    once = dataclasses.replace(sizes, repeats=1)
    for name in names:
        path = CACHE / f"profile-keel-{name}.prof"
        keel_args = ("--profile", str(path))
        if name in RATE_BENCHMARKS:
            result = RATE_BENCHMARKS[name](["keel"], once, keel_args=keel_args)["keel"]
            summary = f"{result.get('median_per_s', 0):,.0f} points/s"
        elif name in ("search", "search_full"):
            n_runs = sizes.search_runs if name == "search" else sizes.search_runs_full
            result = bench_search(
                ["keel"], once, n_runs=n_runs, reseed=reseed, keel_args=keel_args
            )["keel"]
            summary = f"p50 {result.get('p50_ms', 0):.1f} ms"
        else:
            console.print(f"no profile for {name}; try python -X importtime -c 'import keel'")
            continue
        if "error" in result:
            continue
        console.rule(f"Keel {name} under cProfile: {summary}; saved to {path}")
        samples = result.get("samples", [result])
        skipped = [t for s in samples for t in s.get("profile_threads_skipped", [])]
        if skipped:
            console.print(f"threads still running at the end, not in the profile: {skipped}")
        stats = pstats.Stats(str(path))
        stats.sort_stats("cumulative").print_stats(30)
        stats.sort_stats("tottime").print_stats(15)


# --- versions ---


def versions() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        keel_version = version("keel")
    except PackageNotFoundError:
        keel_version = "not installed"
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--", "keel"))
    sources = hashlib.sha256()
    for path in sorted(REPO.glob("keel/**/*.py")):
        sources.update(path.relative_to(REPO).as_posix().encode() + path.read_bytes())
    return {
        "mlflow": _mlflow_version(),
        "keel": keel_version,
        "keel_commit": f"{commit}{' (keel/ has uncommitted changes)' if dirty else ''}",
        "keel_sources_sha256": sources.hexdigest()[:12],
    }


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    return done.stdout.strip()


# --- main ----------------------------------------------------------------------------------

BENCHMARKS = ("log_metric", "log_batch", "series", "search", "search_full", "startup")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        action="append",
        choices=BENCHMARKS,
        help="run only this benchmark (repeatable); search_full is Keel at 100,000 runs",
    )
    parser.add_argument("--quick", action="store_true", help="reduced sizes, a smoke check")
    parser.add_argument("--full", action="store_true", help="also search 100,000 Keel runs")
    parser.add_argument("--tool", choices=TOOLS, help="measure one tool only")
    parser.add_argument(
        "--reseed", action="store_true", help="seed the search databases again, not from cache"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of comparing, run Keel's side once under cProfile and print the top",
    )
    parser.add_argument(
        "--report", type=Path, help="print the tables of a saved results JSON; run nothing"
    )
    args = parser.parse_args(argv)
    if args.report:
        show(json.loads(args.report.read_text()))
        return 0
    sizes = QUICK if args.quick else Sizes()
    names = args.only or [n for n in BENCHMARKS if n != "search_full" or args.full]
    tools = [args.tool] if args.tool else list(TOOLS)

    if args.profile:
        profile_keel(names, sizes, reseed=args.reseed)
        return 0
    if "mlflow" in tools:
        ensure_mlflow_venv()

    started = dt.datetime.now(dt.UTC)
    load_start = list(os.getloadavg())
    versions_at_start = versions()
    results: dict[str, Any] = {}
    for name in names:
        console.rule(f"[bold]{name}")
        if name in RATE_BENCHMARKS:
            results[name] = RATE_BENCHMARKS[name](tools, sizes)
        elif name == "search":
            results[name] = bench_search(tools, sizes, n_runs=sizes.search_runs, reseed=args.reseed)
        elif name == "search_full":
            results[name] = bench_search(
                ["keel"], sizes, n_runs=sizes.search_runs_full, reseed=args.reseed
            )
        elif name == "startup":
            results[name] = bench_startup(tools, sizes)
    load = {"start": load_start, "end": list(os.getloadavg())}
    if versions() != versions_at_start:
        console.print("[yellow]keel/ changed while the benchmark ran: figures may mix versions[/]")
        versions_at_start["changed_during_run"] = versions()

    report = {
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).as_posix(), *sys.argv]),
        "quick": args.quick,
        "sizes": dataclasses.asdict(sizes),
        "machine": machine(),
        "load_average": load,
        "versions": versions_at_start,
        "notes": [
            "Each measurement is a fresh subprocess in a fresh temporary directory (SQLite).",
            "MLflow runs with MLFLOW_DISABLE_TELEMETRY=true (no network here).",
            "Keel's search seeding runs with KEEL_CAPTURE_SOURCE=false; its timed parts use "
            "default settings.",
        ],
        "results": results,
        "table": [dataclasses.asdict(r) for r in build_rows(results)],
    }
    RESULTS.mkdir(exist_ok=True)
    # Only a complete run takes the plain name; partial runs never overwrite it.
    parts = [*(["quick"] if args.quick else []), *(args.only or []), *(tools if args.tool else [])]
    suffix = "".join(f"-{part}" for part in parts)
    path = RESULTS / f"tracking-{started:%Y-%m-%d}{suffix}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    show(report)
    console.print(f"Wrote {path.relative_to(REPO)}")
    return 0


def show(report: dict[str, Any]) -> None:
    """Print a report's rich table, machine and versions, then its Markdown table."""
    rows = build_rows(report["results"])
    print_table(rows)
    console.print(f"Machine: {machine_line(report['machine'], report['load_average'])}")
    v = report["versions"]
    line = f"Versions: MLflow {v['mlflow']}, Keel {v['keel']} at {v['keel_commit']}"
    if "changed_during_run" in v:
        line += f" (at the end: {v['changed_during_run']['keel_commit']})"
    console.print(line + "\n")
    print(markdown_table(rows))
    print("\nratio: how many times Keel is better (higher throughput or shorter time).\n")


if __name__ == "__main__":
    raise SystemExit(main())
