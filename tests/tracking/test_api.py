"""The fluent API and the Client: run life, source capture, artifacts, tables, search output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

import keel
from keel.errors import InvalidInput, NotFound, StorageError
from keel.settings import Settings
from keel.tracking.api import Client
from keel.tracking.models import RunStatus


def run_python(code: str, *, env_home: Path, timeout: float = 60, **extra_env: str):  # type: ignore[no-untyped-def]
    env = {**os.environ, "KEEL_HOME": str(env_home), **extra_env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_fluent_run_records_everything(home: Path) -> None:
    keel.set_experiment("fluent")
    with keel.start_run(name="first", tags={"kind": "demo"}) as run:
        assert keel.active_run() is run
        keel.log_param("alpha", 0.1)
        keel.log_params({"model": "ridge", "depth": 3})
        keel.log_metric("rmse", 2.0, step=0)
        keel.log_metrics({"rmse": 1.5, "mae": 1.0}, step=1)
        keel.set_tag("owner", "ana")
        keel.set_tags({"team": "ml"})
    assert keel.active_run() is None
    got = keel.get_run(run.run_id)
    assert got.status is RunStatus.FINISHED
    assert got.params == {"alpha": "0.1", "model": "ridge", "depth": "3"}
    assert got.metrics == {"rmse": 1.5, "mae": 1.0}
    assert {"kind": "demo", "owner": "ana", "team": "ml"}.items() <= got.tags.items()
    assert [p.value for p in keel.get_metric_history(run.run_id, "rmse")] == [2.0, 1.5]


def test_exception_marks_failed_and_interrupt_marks_killed(home: Path) -> None:
    with pytest.raises(ZeroDivisionError), keel.start_run() as failed:
        keel.log_metric("x", 1.0)
        1 / 0  # noqa: B018
    with pytest.raises(KeyboardInterrupt), keel.start_run() as killed:
        raise KeyboardInterrupt
    assert keel.get_run(failed.run_id).status is RunStatus.FAILED
    assert keel.get_run(failed.run_id).metrics == {"x": 1.0}
    assert keel.get_run(killed.run_id).status is RunStatus.KILLED


def test_nested_runs_need_nested_true(home: Path) -> None:
    with keel.start_run() as parent:
        with pytest.raises(InvalidInput, match="nested=True"):
            keel.start_run()
        with keel.start_run(nested=True) as child:
            assert keel.active_run() is child
        assert keel.active_run() is parent
    got = keel.get_run(child.run_id)
    assert got.parent_run_id == parent.run_id
    assert got.tags["keel.parent_run_id"] == parent.run_id


def test_end_run_with_status(home: Path) -> None:
    run = keel.start_run()
    keel.end_run(status="killed")
    assert keel.get_run(run.run_id).status is RunStatus.KILLED
    keel.end_run()  # no active run: a no-op
    run = keel.start_run()
    with pytest.raises(InvalidInput, match="FINISHED"):
        keel.end_run(status="DONE")
    keel.end_run()


def test_logging_without_a_run_starts_one(home: Path) -> None:
    keel.log_metric("auto", 1.0)
    active = keel.active_run()
    assert active is not None
    keel.end_run()
    assert keel.get_run(active.run_id).metrics == {"auto": 1.0}


def test_normal_exit_flushes_and_finishes(tmp_path: Path) -> None:
    done = run_python(
        """
        import keel
        keel.set_experiment("exit")
        run = keel.start_run()
        for i in range(3000):
            keel.log_metric("loss", 1.0 / (i + 1), step=i)
        print(run.run_id)
        """,
        env_home=tmp_path / ".keel",
    )
    assert done.returncode == 0, done.stderr
    client = Client(Settings(home=tmp_path / ".keel"))
    run = client.get_run(done.stdout.strip())
    assert run.status is RunStatus.FINISHED
    assert len(client.get_metric_history(run.run_id, "loss")) == 3000


def test_uncaught_exception_at_top_level_marks_failed(tmp_path: Path) -> None:
    done = run_python(
        """
        import keel
        run = keel.start_run()
        print(run.run_id, flush=True)
        keel.log_metric("m", 1.0)
        raise RuntimeError("boom")
        """,
        env_home=tmp_path / ".keel",
    )
    assert done.returncode == 1 and "boom" in done.stderr
    run = Client(Settings(home=tmp_path / ".keel")).get_run(done.stdout.split()[0])
    assert run.status is RunStatus.FAILED and run.metrics == {"m": 1.0}


def test_sigkilled_run_is_marked_lost(tmp_path: Path) -> None:
    home = tmp_path / ".keel"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
            import time, keel
            run = keel.start_run()
            print(run.run_id, flush=True)
            while True:
                keel.log_metric("m", 1.0)
                time.sleep(0.001)
            """
            ),
        ],
        env={**os.environ, "KEEL_HOME": str(home), "KEEL_CAPTURE_SOURCE": "false"},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    time.sleep(1.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    client = Client(Settings(home=home))  # opening the store finds the dead process
    run = client.get_run(run_id)
    assert run.status is RunStatus.LOST
    assert run.end_time is not None
    assert client.mark_lost_runs() == []


def test_run_on_another_host_is_lost_after_heartbeat_timeout(sqlite_client: Client) -> None:
    from sqlalchemy import update

    from keel.db import schema

    experiment_id = sqlite_client.get_or_create_experiment("e").experiment_id
    run = sqlite_client.store.create_run(
        experiment_id=experiment_id, run_name=None, user="u", host="elsewhere", pid=1
    )
    assert sqlite_client.mark_lost_runs() == []
    with sqlite_client.engine.begin() as conn:
        conn.execute(update(schema.runs).values(heartbeat_at=0))
    assert sqlite_client.mark_lost_runs() == [run.run_id]


def test_source_is_recorded(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.email=t@e", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=repo, check=True)
    script = repo / "train.py"
    script.write_text("import keel\nwith keel.start_run() as r:\n    print(r.run_id)\n")
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=repo, check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    script.write_text(script.read_text() + "# edited\n")  # dirty
    env = {**os.environ, "KEEL_HOME": str(tmp_path / ".keel")}
    env.pop("KEEL_CAPTURE_SOURCE", None)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    client = Client(Settings(home=tmp_path / ".keel"))
    run = client.get_run(done.stdout.strip())
    assert run.tags["keel.source.git_commit"] == commit
    assert run.tags["keel.source.git_branch"] == "main"
    assert run.tags["keel.source.git_dirty"] == "true"
    assert run.tags["keel.source.entry_point"] == "train.py"
    assert run.tags["keel.python"] == ".".join(map(str, sys.version_info[:3]))
    assert run.tags["keel.host"] and run.user
    diff = client.read_artifact(run.run_id, "keel/source.diff").decode()
    assert "+# edited" in diff
    packages = client.read_artifact(run.run_id, "keel/requirements.txt").decode()
    assert "sqlalchemy==" in packages.lower()


def test_artifacts_round_trip(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the default dst, not in /tmp
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)))
    single = tmp_path / "model.pkl"
    single.write_bytes(b"weights")
    with keel.start_run() as run:
        keel.log_artifact(single, artifact_path="models")
        keel.log_artifacts(src, artifact_path="data")
        keel.log_text("hello", "notes/hello.txt")
        keel.log_dict({"a": 1, "b": [1, 2]}, "config.json")
        keel.log_dict({"a": 1}, "config.yaml")
    client = keel.tracking.fluent.get_client()
    paths = [a.path for a in client.list_artifacts(run.run_id)]
    assert paths == [
        "config.json",
        "config.yaml",
        "data/a.txt",
        "data/sub/b.bin",
        "models/model.pkl",
        "notes/hello.txt",
    ]
    out = keel.download_artifacts(run.run_id, "data", tmp_path / "out")
    assert out == tmp_path / "out" / "data"
    assert (out / "a.txt").read_text() == "alpha"
    assert (out / "sub" / "b.bin").read_bytes() == bytes(range(256))
    everything = keel.download_artifacts(run.run_id)
    assert everything.parent == tmp_path and everything.name.startswith("keel-")
    assert json.loads((everything / "config.json").read_text()) == {"a": 1, "b": [1, 2]}
    assert (everything / "config.yaml").read_text().strip() == "a: 1"
    assert (everything / "models" / "model.pkl").read_bytes() == b"weights"
    with pytest.raises(NotFound, match="nothing/here"):
        keel.download_artifacts(run.run_id, "nothing/here", tmp_path / "x")
    with pytest.raises(InvalidInput, match=r"\.\."):
        client.log_text(run.run_id, "x", "../escape.txt")


def test_identical_artifacts_are_stored_once(home: Path, tmp_path: Path) -> None:
    payload = tmp_path / "same.bin"
    payload.write_bytes(os.urandom(4096))
    for _ in range(3):
        with keel.start_run():
            keel.log_artifact(payload)
    objects = [p for p in (home / "artifacts" / "objects").rglob("*") if p.is_file()]
    assert len(objects) == 1


def test_corrupt_artifact_is_reported(home: Path, tmp_path: Path) -> None:
    with keel.start_run() as run:
        entry = keel.log_text("precious", "p.txt")
    path = home / "artifacts" / "objects" / entry.digest[:2] / entry.digest[2:]
    path.write_bytes(b"tampered")
    with pytest.raises(StorageError, match="corrupt"):
        keel.download_artifacts(run.run_id, "p.txt", tmp_path / "out")
    assert not (tmp_path / "out" / "p.txt").exists()


def test_log_table_and_figure(home: Path, tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.DataFrame({"y": [1.0, 2.0], "label": ["a", "b"]})
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    with keel.start_run() as run:
        keel.log_table(frame, "tables/preds.parquet")
        keel.log_figure(fig, "plots/curve.png")
        with pytest.raises(InvalidInput, match="parquet"):
            keel.log_table(frame, "preds.csv")
    plt.close(fig)
    out = keel.download_artifacts(run.run_id, "", tmp_path / "o")
    pd.testing.assert_frame_equal(pd.read_parquet(out / "tables" / "preds.parquet"), frame)
    assert (out / "plots" / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_search_runs_pandas_columns(home: Path) -> None:
    keel.set_experiment("frame")
    for model, rmse in (("tree", 0.5), ("linear", 1.5)):
        with keel.start_run():
            keel.log_param("model", model)
            keel.log_metric("rmse", rmse)
            keel.set_tag("t", model)
    frame = keel.search_runs("metrics.rmse < 1", output="pandas")
    assert list(frame["params.model"]) == ["tree"]
    assert {"run_id", "status", "start_time", "metrics.rmse", "params.model", "tags.t"} <= set(
        frame.columns
    )
    runs = keel.search_runs(order_by=["metrics.rmse DESC"], experiment_names=["frame"])
    assert [r.params["model"] for r in runs] == ["linear", "tree"]
    with pytest.raises(NotFound):
        keel.search_runs(experiment_names=["no-such-experiment"])


def test_a_run_started_in_the_past_is_not_lost(sqlite_client: Client) -> None:
    experiment_id = sqlite_client.get_or_create_experiment("past").experiment_id
    hour_ago = int(time.time() * 1000) - 3_600_000
    local = sqlite_client.create_run(experiment_id, start_time=hour_ago)
    remote = sqlite_client.create_remote_run(
        experiment_id, host="elsewhere", user="ana", start_time=hour_ago
    )
    other = Client(sqlite_client.settings)  # a second client checks liveness on open
    try:
        assert other.get_run(local.run_id).status is RunStatus.RUNNING
        assert other.get_run(remote.run_id).status is RunStatus.RUNNING
        assert other.mark_lost_runs() == []
    finally:
        other.close()


def test_two_folders_logged_to_one_path_add_up(home: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "model.pkl").write_bytes(b"m")
    (second / "plot.png").write_bytes(b"p")
    with keel.start_run() as run:
        keel.log_artifacts(first)
        keel.log_artifacts(second)
        keel.log_artifacts(first, artifact_path="out")
        keel.log_artifacts(second, artifact_path="out")
    client = keel.tracking.fluent.get_client()
    paths = [a.path for a in client.list_artifacts(run.run_id)]
    assert paths == ["model.pkl", "out/model.pkl", "out/plot.png", "plot.png"]


def test_a_pid_from_another_container_with_this_host_name_is_not_checked_here(
    sqlite_client: Client,
) -> None:
    """Two containers may share a host name and reuse pids: a run whose pid belongs to another
    boot or PID namespace is judged by its heartbeats, not by a pid lookup here."""
    from sqlalchemy import update

    from keel.db import schema
    from keel.tracking.liveness import HOST, PROCESS_SPACE

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    experiment_id = sqlite_client.get_or_create_experiment("e").experiment_id

    def run_in(space: str | None) -> str:
        return sqlite_client.store.create_run(
            experiment_id=experiment_id,
            run_name=None,
            user="u",
            host=HOST,
            pid=dead.pid,
            process_space=space,
        ).run_id

    elsewhere = run_in("another-boot:4026531836")
    here = run_in(PROCESS_SPACE)
    assert sqlite_client.mark_lost_runs() == [here]  # its process is gone: lost at once
    with sqlite_client.engine.begin() as conn:
        conn.execute(update(schema.runs).values(heartbeat_at=0))
    assert sqlite_client.mark_lost_runs() == [elsewhere]  # once its heartbeats are stale
