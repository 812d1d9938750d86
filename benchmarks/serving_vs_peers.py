"""Model serving, Keel vs its peers, in one run on loopback: raw in-process ``predict`` (the
floor), a minimal FastAPI app (the thin-wrapper reference), ``mlflow models serve``, ``bentoml
serve`` (plain and with adaptive batching) and ``keel serve`` (its defaults: micro-batching
and the prediction log on; and with ``--no-log-predictions``).

Run by hand from the repository root, with Keel's interpreter::

    python benchmarks/serving_vs_peers.py                    # everything, about 8 minutes
    python benchmarks/serving_vs_peers.py --quick            # a smoke run, about 4 minutes
    python benchmarks/serving_vs_peers.py --only keel,fastapi --duration 20
    python benchmarks/serving_vs_peers.py --report benchmarks/results/serving-DATE.json

The model is one 100-tree RandomForestRegressor on scikit-learn's diabetes data (seed 0),
pickled once and served by every peer from that same file (see ``_serving_peers.py``). Each
server is started by the script, one at a time, pinned to ``--server-cpus`` with its whole
process tree, and must answer 1- and 100-row requests with the model's own predictions (to
1e-9) before it is timed and again after. Then, after a warm-up, ``wrk`` (pinned to
``--client-cpus``, one thread, keep-alive, closed loop) posts the same body for ``--duration``
seconds at 1 and at 16 concurrent connections, with 1-row and 100-row bodies: req/s, p50, p99,
errors, and the server's CPU time per request. Start-up is from the command to the first 200 on
its health route; RSS is summed over the server's processes after the load.

Results go to ``benchmarks/results/serving-<date>[-quick][-<peers>][-<tag>].json`` and
``.md`` (the peers named when ``--only`` leaves some out).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _report import machine, machine_line
from _serving_load import Server, ServerFailed, ensure_wrk, lua_script, post_json, wrk
from _serving_peers import KEEL_PYTHON, PEERS, Peer, clean_env, ensure_venvs, run_side, versions

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ROWS = (1, 100)
CONCURRENCY = (1, 16)
TOLERANCE = 1e-9
GOAL_P50_MS = 1.0  # keel p50 at c=1 within 1 ms of the thin wrapper
GOAL_VS_MLFLOW = 3.0  # keel req/s at c=16 >= 3x MLflow's
GOAL_VS_BENTOML = 1.0  # ... and >= BentoML's
ALL = ("raw", *PEERS)


class WrongAnswer(RuntimeError):
    """A server answered, but not with the model's own predictions."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_answers(peer: Peer, url: str, rows: list[dict[str, float]], expected: dict) -> None:
    """Raise WrongAnswer unless ``url`` gives the raw predictions for 1 and 100 rows."""
    for n in ROWS:
        status, body = post_json(url, peer.body(rows[:n]))
        if status != 200:
            raise WrongAnswer(f"{n} rows: HTTP {status}: {str(body)[:500]}")
        try:
            got = [float(v) for v in peer.answer(body)]
        except (KeyError, TypeError, ValueError) as exc:
            raise WrongAnswer(f"{n} rows: unreadable answer ({exc}): {str(body)[:500]}") from None
        want = expected[str(n)]
        worst = max((abs(a - b) for a, b in zip(got, want, strict=False)), default=0.0)
        if len(got) != len(want) or worst > TOLERANCE:
            raise WrongAnswer(f"{n} rows: {len(got)} predictions, off by up to {worst:g}")


def measure(peer: Peer, model: Path, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Prepare, start, check, warm, time and stop one peer; a failure is recorded, not raised."""
    result: dict[str, Any] = {}
    prepared = time.perf_counter()
    try:
        if peer.prepare is not None:
            peer.prepare(model, workdir)
    except RuntimeError as exc:
        result["error"] = f"preparing the model failed: {exc}"
        print(f"  {peer.name} FAILED: {result['error'][:2000]}", flush=True)
        return result
    result["prepare_s"] = time.perf_counter() - prepared
    port = free_port()
    launch = peer.launch(model, workdir, port)
    result["command"] = " ".join(launch.argv)
    server = Server(
        launch.argv, cwd=launch.cwd, env=launch.env, cpus=args.server_cpus,
        log=workdir / "server.log",
    )  # fmt: skip
    try:
        result |= serve(peer, server, f"http://127.0.0.1:{port}", model, workdir, args)
    except (ServerFailed, WrongAnswer, RuntimeError, OSError) as exc:  # OSError: timeouts
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["log_tail"] = server.tail()
        print(f"  {peer.name} FAILED: {result['error'][:2000]}", flush=True)
    finally:
        server.stop()
    return result


def serve(
    peer: Peer, server: Server, base: str, model: Path, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Wait for the started server, check its answers, warm it, then time every cell."""
    rows = json.loads((model / "rows.json").read_text())
    expected = json.loads((model / "expected.json").read_text())
    url = base + peer.predict_path
    result: dict[str, Any] = {"startup_s": server.wait_healthy(base + peer.health_path)}
    check_answers(peer, url, rows, expected)
    result["rss_ready_mb"] = server.rss_mb()
    scripts = {n: lua_script(peer.body(rows[:n]), workdir / f"body-{n}.lua") for n in ROWS}
    for n in ROWS:  # warm-up, not recorded
        wrk(url, scripts[n], connections=16, seconds=args.warmup, cpus=args.client_cpus)
    cells = []
    for n in ROWS:
        for c in CONCURRENCY:
            cpu = server.cpu_s()
            cell = wrk(url, scripts[n], connections=c, seconds=args.duration, cpus=args.client_cpus)
            used = server.cpu_s() - cpu
            cell["cpu_ms_per_request"] = (
                used * 1000 / cell["requests"] if cell["requests"] else None
            )
            cells.append({"rows": n, "concurrency": c, **cell})
            print(f"  {peer.name} {n:>3} rows c={c:<2} {_cell_text(cell)}", flush=True)
    check_answers(peer, url, rows, expected)  # still right after the load
    return result | {"cells": cells, "rss_mb": server.rss_mb()}


def _cell_text(cell: dict[str, Any]) -> str:
    if not cell["requests"]:
        return "no answer within the duration"
    return (
        f"{cell['req_per_s']:8.1f} req/s  p50 {cell['p50_ms']:7.2f} ms  "
        f"p99 {cell['p99_ms']:7.2f} ms  errors {cell['error_count']}"
    )


def raw_predict(model: Path, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The floor: ``model.predict`` on a prebuilt DataFrame in process, pinned like the
    servers, for half the duration per row count."""
    seconds = max(args.duration / 2, 1)
    env = clean_env(KEEL_PYTHON.parent, {})
    out = run_side(KEEL_PYTHON, ["raw", model, seconds], env, workdir, cpus=args.server_cpus)
    cells = json.loads(out.strip().splitlines()[-1])
    for n, cell in cells.items():
        timing = f"p50 {cell['p50_ms']:7.2f} ms  p99 {cell['p99_ms']:7.2f} ms"
        print(f"  raw {int(n):>3} rows      {cell['per_s']:8.1f} calls/s  {timing}", flush=True)
    return {"cells": cells}


# --- report --------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.0f} ms" if value >= 100 else f"{value:.2f} ms"


def _cell(result: dict[str, Any], name: str, rows: int, c: int) -> dict[str, Any] | None:
    for cell in result.get("peers", {}).get(name, {}).get("cells", []):
        if cell["rows"] == rows and cell["concurrency"] == c:
            return dict(cell)
    return None


def measurements_table(result: dict[str, Any]) -> list[str]:
    lines = [
        "| server | rows/request | concurrency | req/s | rows/s | p50 | p99 | errors "
        "| server CPU/request |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    raw = result.get("raw", {}).get("cells", {})
    for n in ROWS:
        if str(n) in raw:
            cell = raw[str(n)]
            lines.append(
                f"| in-process `predict` (floor) | {n} | 1 | {cell['per_s']:,.0f} "
                f"| {cell['per_s'] * n:,.0f} | {_ms(cell['p50_ms'])} | {_ms(cell['p99_ms'])} "
                "| — | — |"
            )
    for name, peer in result.get("peers", {}).items():
        title = PEERS[name].title if name in PEERS else name
        if "error" in peer:
            lines.append(f"| {title} | | | **failed**: {peer['error'][:150]} | | | | | |")
            continue
        for cell in peer["cells"]:
            cpu = cell.get("cpu_ms_per_request")
            if not cell["requests"]:
                lines.append(f"| {title} | {cell['rows']} | {cell['concurrency']} "
                             "| 0: no answer within the duration | | | | | |")  # fmt: skip
                continue
            lines.append(
                f"| {title} | {cell['rows']} | {cell['concurrency']} "
                f"| {cell['req_per_s']:,.0f} | {cell['req_per_s'] * cell['rows']:,.0f} "
                f"| {_ms(cell['p50_ms'])} | {_ms(cell['p99_ms'])} | {cell['error_count']} "
                f"| {_ms(cpu)} |"
            )
    return lines


def startup_table(result: dict[str, Any]) -> list[str]:
    lines = [
        "| server | start-up to first healthy answer | RSS when ready | RSS after load |",
        "|---|--:|--:|--:|",
    ]
    for name, peer in result.get("peers", {}).items():
        if "startup_s" not in peer:
            continue
        ready, loaded = peer.get("rss_ready_mb"), peer.get("rss_mb")
        lines.append(
            f"| {PEERS[name].title if name in PEERS else name} | {peer['startup_s']:.2f} s "
            f"| {f'{ready:.0f} MB' if ready else '—'} | {f'{loaded:.0f} MB' if loaded else '—'} |"
        )
    return lines


def goals_table(result: dict[str, Any]) -> list[str]:
    """Issue 6's goals, for Keel with its defaults and without the prediction log."""
    lines = ["| goal | rows/request | measured | met? |", "|---|--:|---|:-:|"]
    for keel_name in ("keel", "keel-nolog"):
        keel_title = f"`{PEERS[keel_name].title}`"
        for n in ROWS:
            keel, thin = _cell(result, keel_name, n, 1), _cell(result, "fastapi", n, 1)
            if keel and thin and keel["requests"] and thin["requests"]:
                gap = keel["p50_ms"] - thin["p50_ms"]
                lines.append(
                    f"| {keel_title} p50 at c=1 within {GOAL_P50_MS:g} ms of the thin wrapper "
                    f"| {n} | {_ms(keel['p50_ms'])} vs {_ms(thin['p50_ms'])} ({gap:+.2f} ms) "
                    f"| {'yes' if gap <= GOAL_P50_MS else 'no'} |"
                )
        for peer, goal in (("mlflow", GOAL_VS_MLFLOW), ("bentoml", GOAL_VS_BENTOML),
                           ("bentoml-batching", GOAL_VS_BENTOML)):  # fmt: skip
            for n in ROWS:
                keel, other = _cell(result, keel_name, n, 16), _cell(result, peer, n, 16)
                if keel and other and other["req_per_s"]:
                    ratio = keel["req_per_s"] / other["req_per_s"]
                    lines.append(
                        f"| {keel_title} req/s at c=16 >= {goal:g}x {PEERS[peer].title} | {n} "
                        f"| {keel['req_per_s']:,.0f} vs {other['req_per_s']:,.0f} "
                        f"({ratio:.2f}x) | {'yes' if ratio >= goal else 'no'} |"
                    )
    return lines


def markdown(result: dict[str, Any]) -> str:
    setup = result["setup"]
    found = result["versions"]
    named = ", ".join(f"{k} {v}" for k, v in found.items() if k != "keel_commit" and v)
    head = [
        f"**Date:** {result['date']}{' (quick smoke run: noisy)' if setup['quick'] else ''}.",
        f"**Machine:** {machine_line(result['machine'], result['load'])}.",
        f"**Setup:** servers pinned to CPU {setup['server_cpus']}, wrk to CPU "
        f"{setup['client_cpus']} (one thread, keep-alive, closed loop); "
        f"{setup['duration_s']:g} s per cell after {setup['warmup_s']:g} s of warm-up per body; "
        "every server checked against the model's own predictions (1e-9) before and after.",
        f"**Versions:** {named}; Keel at {found.get('keel_commit')}.",
        "",
    ]
    return "\n".join(
        [*head, *measurements_table(result), "", *startup_table(result), "",
         *goals_table(result)]
    )  # fmt: skip


# --- main ----------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per timed cell")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per body")
    parser.add_argument(
        "--only", action="append", default=[], help=f"comma list of {', '.join(ALL)}"
    )
    parser.add_argument("--quick", action="store_true", help="2 s cells, 1 s warm-up: a smoke run")
    parser.add_argument("--server-cpus", default="0", help="taskset CPU list for the servers")
    parser.add_argument("--client-cpus", default="1", help="taskset CPU list for wrk")
    parser.add_argument("--report", type=Path, help="print the tables of a saved results JSON")
    parser.add_argument("--tag", help="suffix for the results file names (e.g. 'loaded')")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup = min(args.duration, 2), min(args.warmup, 1)
    names = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    unknown = sorted(set(names) - set(ALL))
    if unknown:
        parser.error(f"unknown --only {', '.join(unknown)}; choose from {', '.join(ALL)}")
    args.names = [n for n in ALL if n in names] if names else list(ALL)
    return args


def output_path(args: argparse.Namespace) -> Path:
    stem = f"serving-{datetime.now(UTC).strftime('%Y-%m-%d')}"
    if args.quick:
        stem += "-quick"
    if len(args.names) < len(ALL):
        stem += "-" + "-".join(args.names)
    if args.tag:
        stem += f"-{args.tag}"
    return RESULTS / f"{stem}.json"


def main() -> None:
    args = parse_args()
    if args.report:
        print(markdown(json.loads(args.report.read_text())))
        return
    began = time.perf_counter()
    ensure_wrk()
    ensure_venvs(set(args.names))
    result: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "load": {"start": list(os.getloadavg())},
        "versions": versions(set(args.names)),
        "setup": {
            "quick": args.quick, "duration_s": args.duration, "warmup_s": args.warmup,
            "server_cpus": args.server_cpus, "client_cpus": args.client_cpus,
            "model": "RandomForestRegressor(n_estimators=100, random_state=0), diabetes",
        },
        "peers": {},
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        model = Path(tmp) / "model"
        model.mkdir()
        run_side(KEEL_PYTHON, ["train", model], clean_env(KEEL_PYTHON.parent, {}), model)
        for name in args.names:
            workdir = Path(tmp) / name
            workdir.mkdir()
            print(f"{name}:", flush=True)
            if name == "raw":
                result["raw"] = raw_predict(model, workdir, args)
            else:
                result["peers"][name] = measure(PEERS[name], model, workdir, args)
    result["load"]["end"] = list(os.getloadavg())
    result["elapsed_s"] = time.perf_counter() - began
    out = output_path(args)
    RESULTS.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    out.with_suffix(".md").write_text(text + "\n")
    print(f"\n{text}\n\nWritten {out} and .md in {result['elapsed_s']:.0f} s")


if __name__ == "__main__":
    main()
