"""Tables and machine facts for the tracking benchmark (the comparison rows, Markdown, rich)."""

from __future__ import annotations

import dataclasses
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()


@dataclasses.dataclass
class Row:
    """One line of the comparison table."""

    benchmark: str
    mlflow: str
    keel: str
    ratio: str
    goal: str
    met: bool | None


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}/s"


def _fmt_ms(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.1f} ms"


def _fmt_ratio(value: float) -> str:
    return f"{value:,.0f}×" if value >= 100 else f"{value:.1f}×"


def _fmt_s(value: float) -> str:
    return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.0f} ms"


def _cell(
    result: dict[str, Any], tool: str, key: str, fmt: Callable[[float], str]
) -> tuple[float | None, str]:
    """A tool's value and its text: "not run" when not measured, "error" when it failed."""
    if tool not in result:
        return None, "not run"
    value = result[tool].get(key)
    if value is None:
        return None, "error"
    if result[tool].get("all_points_stored") is False:
        return value, f"{fmt(value)} (points lost!)"
    return value, fmt(value)


def _ratio_row(
    name: str,
    result: dict[str, Any],
    key: str,
    fmt: Callable[[float], str],
    *,
    higher_is_better: bool,
    goal: float | None,
) -> Row:
    """A row whose ratio reads "Keel is N× better" whatever the unit."""
    mlflow, mlflow_text = _cell(result, "mlflow", key, fmt)
    keel, keel_text = _cell(result, "keel", key, fmt)
    ratio = None
    if mlflow and keel:
        ratio = keel / mlflow if higher_is_better else mlflow / keel
    return Row(
        benchmark=name,
        mlflow=mlflow_text,
        keel=keel_text,
        ratio=_fmt_ratio(ratio) if ratio is not None else "—",
        goal=f"≥ {goal:g}×" if goal else "—",
        met=(ratio >= goal) if (goal and ratio is not None) else None,
    )


def build_rows(results: dict[str, Any]) -> list[Row]:
    """The comparison table, one row per measured figure, in a fixed order."""
    rows = []
    rate = {"key": "median_per_s", "fmt": _fmt_rate, "higher_is_better": True}
    if "log_metric" in results:
        r = results["log_metric"]
        name = f"`log_metric`, {r['calls']:,} calls one at a time (calls/s)"
        rows.append(_ratio_row(name, r, **rate, goal=100))
    if "log_batch" in results:
        r = results["log_batch"]
        name = f"{r['points']:,} metrics in batches of {r['per_call']:,} keys × 1 step (metrics/s)"
        rows.append(_ratio_row(name, r, **rate, goal=20))
    if "series" in results:
        r = results["series"]
        name = (
            f"{r['points']:,} steps of one metric, `log_batch` of {r['per_call']:,} steps "
            "(points/s)"
        )
        rows.append(_ratio_row(name, r, **rate, goal=20))
    if "search" in results:
        r = results["search"]
        for stat, goal in (("p50", 10), ("p95", None)):
            name = f"search, {r['runs']:,} runs, filter + order + top 100, {stat}"
            rows.append(
                _ratio_row(name, r, f"{stat}_ms", _fmt_ms, higher_is_better=False, goal=goal)
            )
    if "search_full" in results:
        r = results["search_full"]
        p50, text = _cell(r, "keel", "p50_ms", _fmt_ms)
        rows.append(
            Row(
                benchmark=f"search, {r['runs']:,} runs, p50 (Keel only)",
                mlflow="not run",
                keel=text,
                ratio="—",
                goal="< 50 ms",
                met=(p50 < 50) if p50 is not None else None,
            )
        )
    if "startup" in results:
        r = results["startup"]
        labels = {
            "import": "`import mlflow` / `import keel` (wall time)",
            "cli": "`mlflow --version` / `keel --help` (wall time)",
        }
        for what, name in labels.items():
            rows.append(
                _ratio_row(name, r[what], "median_s", _fmt_s, higher_is_better=False, goal=5)
            )
    return rows


def _met(value: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "—"}[value]


def markdown_table(rows: list[Row]) -> str:
    lines = ["| benchmark | MLflow | Keel | ratio | goal | met? |", "|---|--:|--:|--:|--:|:-:|"]
    lines += [
        f"| {r.benchmark} | {r.mlflow} | {r.keel} | {r.ratio} | {r.goal} | {_met(r.met)} |"
        for r in rows
    ]
    return "\n".join(lines)


def print_table(rows: list[Row]) -> None:
    table = Table(title="Keel vs MLflow tracking (SQLite, medians)")
    for column, justify in (("benchmark", "left"), ("MLflow", "right"), ("Keel", "right")):
        table.add_column(column, justify=justify)
    for column in ("ratio", "goal", "met?"):
        table.add_column(column, justify="right")
    for r in rows:
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "—"}[r.met]
        table.add_row(r.benchmark.replace("`", ""), r.mlflow, r.keel, r.ratio, r.goal, met)
    console.print(table)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu_model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    os_name = platform.platform()
    release = Path("/etc/os-release")
    if release.exists():
        for line in release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = f"{line.split('=', 1)[1].strip(chr(34))}, Linux {platform.release()}"
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kib / 2**20, 1),
        "cpu": cpu_model,
        "python": platform.python_version(),
        "os": os_name,
    }


def machine_line(info: dict[str, Any], load: dict[str, list[float]]) -> str:
    start, end = (", ".join(f"{x:.2f}" for x in load[k]) for k in ("start", "end"))
    return (
        f"{info['nproc']} cores ({info['cpu']}), {info['memory_gib']:g} GiB, {info['os']}, "
        f"Python {info['python']}; load average {start} at start, {end} at end"
    )
