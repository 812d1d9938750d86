"""The prediction log on real folders: rows from several threads and processes written as
Parquet by the writer thread and read back exactly, hour partitions and pruning, write failures
kept and retried, the buffer bound, schema drift and mixed types, and what ``log()`` costs."""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from keel.errors import InvalidInput, StorageError
from keel.serving.predlog import (
    PREDICTION_COLUMNS,
    PredictionLog,
    log_url,
    open_log,
    read_feedback,
    read_predictions,
)
from keel.settings import Settings

HOUR = 3_600_000
START = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _request(seed: int, rows: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": [seed + row / 10 for row in range(rows)],
            "n": [seed * 10 + row for row in range(rows)],
            "s": [f"s{seed}-{row}" for row in range(rows)],
        }
    )


def _log(
    log: PredictionLog, request_id: str, time_ms: int, inputs: pd.DataFrame, **extra: object
) -> None:
    """Log ``inputs`` as diabetes/3 with outputs twice the first column (unless given)."""
    fields: dict[str, object] = {"arm": "diabetes/3", "model": "diabetes", "version": 3}
    fields["role"] = "primary"
    if "outputs" not in extra:
        extra["outputs"] = [float(v) * 2 for v in inputs.iloc[:, 0]]
    log.log(
        request_id=request_id, time_ms=time_ms, inputs=inputs, latency_ms=1.5, **{**fields, **extra}
    )  # type: ignore[arg-type]


def _files(root: Path, kind: str = "predictions") -> list[Path]:
    return sorted(root.glob(f"{kind}/deployment=*/hour=*/*.parquet"))


def _wait_for(
    condition: Callable[[], bool], log: PredictionLog | None = None, seconds: float = 20.0
) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out: {log.stats() if log else ''}"
        time.sleep(0.02)


def _values(column: pd.Series) -> list[object]:
    """The column's values with missing ones as None (pandas' str dtype gives NaN)."""
    return [None if v is None or (isinstance(v, float) and v != v) else v for v in column]


def test_rows_logged_from_many_threads_read_back_exactly(tmp_path: Path) -> None:
    root = tmp_path / "log"
    log = PredictionLog(str(root), "diabetes", flush_rows=700, flush_seconds=0.05)
    requests = {}  # (thread, i) -> (time_ms, role, inputs)
    expected = []
    for thread in range(4):
        for i in range(400):
            time_ms = START + (i % 3) * HOUR + thread * 1000 + i
            role = "shadow" if i % 4 == 0 else "primary"
            frame = _request(thread * 1000 + i, 1 + i % 5)
            requests[thread, i] = (time_ms, role, frame)
            for row, (x, n, s) in enumerate(frame.itertuples(index=False)):
                expected.append((f"t{thread}-{i}", row, time_ms, role, x, n, s, x * 2))

    def work(thread: int) -> None:
        for i in range(400):
            time_ms, role, frame = requests[thread, i]
            _log(log, f"t{thread}-{i}", time_ms, frame, role=role)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    stats = log.stats()
    assert stats["written"] == len(expected) == 4 * 400 * 3
    assert stats["buffered"] == 0 and stats["dropped"] == 0 and stats["last_error"] is None
    files = _files(root)
    assert stats["files"] == len(files) > 3  # several flushes happened while logging

    read = read_predictions(str(root), "diabetes")
    assert list(read.columns[: len(PREDICTION_COLUMNS)]) == list(PREDICTION_COLUMNS)
    assert read["time"].is_monotonic_increasing
    assert str(read["time"].dtype) == "datetime64[ms, UTC]"
    got = read.sort_values(["request_id", "row"]).reset_index(drop=True)
    names = ["request_id", "row", "time_ms", "role", "input.x", "input.n", "input.s", "output"]
    want = pd.DataFrame(expected, columns=names).sort_values(["request_id", "row"])
    want = want.reset_index(drop=True)
    assert got["request_id"].tolist() == want["request_id"].tolist()
    assert got["row"].tolist() == want["row"].tolist()
    assert (got["time"].astype("int64") == want["time_ms"]).all()
    assert got["role"].tolist() == want["role"].tolist()
    for column in ("input.x", "input.n", "input.s", "output"):
        assert got[column].tolist() == want[column].tolist(), column
    assert set(got["deployment"]) == {"diabetes"} and set(got["arm"]) == {"diabetes/3"}
    assert got["version"].tolist() == [3] * len(got) and set(got["latency_ms"]) == {1.5}
    assert got["error"].isna().all()

    # one folder per UTC hour of the rows' time, and each file holds only its hour's rows
    hours = sorted({path.parent.name for path in files})
    assert hours == ["hour=2026-01-01T00", "hour=2026-01-01T01", "hour=2026-01-01T02"]
    for path in files:
        times = pq.read_table(path, columns=["time"])["time"].to_pylist()
        assert {t.strftime("hour=%Y-%m-%dT%H") for t in times} == {path.parent.name}


def test_since_and_until_read_only_the_hours_they_overlap(tmp_path: Path) -> None:
    root = tmp_path / "log"
    log = PredictionLog(str(root), "d1", flush_seconds=3600)
    for hour in range(4):
        _log(log, f"r{hour}", START + hour * HOUR + 10, _request(hour, 2))
    log.close()
    # a damaged file in hour 0: read when that hour is asked for, skipped when it is not
    (root / "predictions/deployment=d1/hour=2026-01-01T00/zz-damaged.parquet").write_text("no")
    since, until = START + HOUR + 10, START + 2 * HOUR + 10
    read = read_predictions(str(root), "d1", since_ms=since, until_ms=until)
    assert read["request_id"].tolist() == ["r1", "r1", "r2", "r2"]  # bounds are inclusive
    later = read_predictions(str(root), "d1", since_ms=since + 1)
    assert sorted(set(later["request_id"])) == ["r2", "r3"]
    with pytest.raises(StorageError, match=r"zz-damaged\.parquet"):
        read_predictions(str(root), "d1")
    nothing = read_predictions(str(root), "d1", since_ms=START + 10 * HOUR)
    assert nothing.empty and list(nothing.columns) == list(PREDICTION_COLUMNS)
    assert read_predictions(str(root), "never-logged").empty


def test_close_writes_everything_and_later_rows_are_counted_as_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "log"
    log = PredictionLog(str(root), "d1", flush_rows=10**6, flush_seconds=3600)
    _log(log, "before", START, _request(1, 3))
    log.feedback(request_id="before", row=2, label=7.5, time_ms=START + 5)
    assert _files(root) == []  # nothing due yet: no size or time trigger
    log.close()
    log.close()  # idempotent
    assert log.closed and len(_files(root)) == 1 and len(_files(root, "feedback")) == 1
    with caplog.at_level(logging.WARNING, logger="keel.serving.predlog"):
        _log(log, "after", START, _request(2, 4))
        log.feedback(request_id="after", row=0, label=1, time_ms=START)
    assert log.stats()["dropped"] == 5
    assert [r.message for r in caplog.records if "closed" in r.message] != []
    assert read_predictions(str(root), "d1")["request_id"].tolist() == ["before"] * 3
    assert read_feedback(str(root), "d1")[["request_id", "row", "label"]].values.tolist() == [
        ["before", 2, 7.5]
    ]


def test_a_size_trigger_writes_before_the_timer(tmp_path: Path) -> None:
    root = tmp_path / "log"
    log = PredictionLog(str(root), "d1", flush_rows=50, flush_seconds=3600)
    try:
        for i in range(20):
            _log(log, f"r{i}", START, _request(i, 5))

        # whatever was buffered when the writer woke is written; the rest waits for more rows
        def settled() -> bool:
            stats = log.stats()
            return int(stats["written"] or 0) >= 50 and int(stats["buffered"] or 0) < 50

        _wait_for(settled, log)
    finally:
        log.close()


def test_two_logs_of_one_deployment_write_distinct_files(tmp_path: Path) -> None:
    root = str(tmp_path / "log")
    first, second = PredictionLog(root, "d1"), PredictionLog(root, "d1")
    for i in range(50):
        _log(first, f"a{i}", START + i, _request(i, 2))
        _log(second, f"b{i}", START + i, _request(i, 2))
    first.close()
    second.close()
    files = _files(Path(root))
    assert len(files) == 2
    owners = [
        set(pq.read_table(p, columns=["request_id"])["request_id"].to_pylist()) for p in files
    ]
    assert sorted(min(ids)[0] for ids in owners) == ["a", "b"]
    assert len(read_predictions(root, "d1")) == 200


_WORKER = f"""
import sys, time
import pandas as pd
from keel.serving.predlog import PredictionLog
root, prefix = sys.argv[1], sys.argv[2]
log = PredictionLog(root, "d1", flush_rows=300, flush_seconds=0.05)
for i in range(1000):
    log.log(request_id=f"{{prefix}}{{i}}", time_ms={START} + i, arm="m/1", model="m", version=1,
            role="primary", inputs=pd.DataFrame({{"x": [float(i)]}}), outputs=[i * 2.0],
            latency_ms=0.5)
log.close()
print(log.stats()["files"])
"""


def test_two_worker_processes_write_side_by_side(tmp_path: Path) -> None:
    root = str(tmp_path / "log")
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, root, prefix],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for prefix in ("p", "q")
    ]
    files_written = 0
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        files_written += int(out.strip())
    files = _files(Path(root))
    assert len(files) == files_written >= 2
    assert len({path.name for path in files}) == len(files)
    read = read_predictions(root, "d1")
    assert len(read) == 2000 and read["request_id"].nunique() == 2000
    by_id = read.set_index("request_id")
    assert by_id.loc["q999", "output"] == 1998.0 and by_id.loc["p7", "input.x"] == 7.0


_DURABILITY = f"""
import sys, time
import pandas as pd
from keel.serving.predlog import PredictionLog
root, flush_seconds, then = sys.argv[1], float(sys.argv[2]), sys.argv[3]
log = PredictionLog(root, "d1", flush_seconds=flush_seconds)
for i in range(500):
    log.log(request_id=f"r{{i}}", time_ms={START} + i, arm="m/1", model="m", version=1,
            role="primary", inputs=pd.DataFrame({{"x": [float(i)]}}), outputs=[1.0],
            latency_ms=0.5)
print("logged", flush=True)
if then == "wait":
    time.sleep(120)
"""  # with then="exit" the process ends without close(): atexit writes the rows


@pytest.mark.parametrize("ending", ["exit", "kill -9 after flush_seconds"])
def test_rows_survive_a_normal_exit_and_a_kill_after_flush_seconds(
    tmp_path: Path, ending: str
) -> None:
    root = str(tmp_path / "log")
    exits = ending == "exit"
    command = [sys.executable, "-c", _DURABILITY, root, "3600" if exits else "0.2"]
    process = subprocess.Popen(
        [*command, "exit" if exits else "wait"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "logged"
        if exits:
            assert process.wait(timeout=60) == 0
        else:
            _wait_for(lambda: len(_files(Path(root))) > 0, seconds=60)
            time.sleep(0.5)  # past flush_seconds: everything logged is on disk
            process.kill()
            process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert len(read_predictions(root, "d1")) == 500


def test_a_failed_write_keeps_the_rows_and_succeeds_once_the_folder_is_usable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "log"
    root.mkdir()
    (root / "predictions").write_text("a file where the folder must go")
    log = PredictionLog(str(root), "d1", flush_seconds=0.05)
    try:
        with caplog.at_level(logging.WARNING, logger="keel.serving.predlog"):
            for i in range(30):
                _log(log, f"r{i}", START + i, _request(i, 2))
            with pytest.raises(StorageError, match="stay buffered"):
                log.flush()
            time.sleep(0.5)  # several retries with backoff, all failing
            stats = log.stats()
            assert stats["buffered"] == 60 and stats["written"] == 0
            assert stats["last_error"] is not None and stats["dropped"] == 0
            (root / "predictions").unlink()
            _wait_for(lambda: log.stats()["written"] == 60, log)
    finally:
        log.close()
    failures = [r for r in caplog.records if "cannot write" in r.message]
    assert len(failures) == 1  # one warning per failure streak, not one per retry
    assert any("again" in r.message for r in caplog.records)
    assert log.stats()["last_error"] is None
    read = read_predictions(str(root), "d1")
    assert read["request_id"].tolist() == [f"r{i}" for i in range(30) for _ in range(2)]


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """``folder`` refuses new entries: chmod for a normal user, chattr +i for root (which
    ignores modes); skipped where neither works."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root where chattr +i is not allowed: cannot make it read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_read_only_folder_keeps_rows_until_it_is_writable(tmp_path: Path) -> None:
    root = tmp_path / "log"
    root.mkdir()
    log = PredictionLog(str(root), "d1", flush_seconds=3600)
    try:
        with _read_only(root):
            _log(log, "r1", START, _request(1, 3))
            log.feedback(request_id="r1", row=0, label="yes", time_ms=START)
            with pytest.raises(StorageError):
                log.flush()
            assert log.stats()["buffered"] == 4 and _files(root) == []
        log.flush()
    finally:
        log.close()
    assert read_predictions(str(root), "d1")["row"].tolist() == [0, 1, 2]
    assert read_feedback(str(root), "d1")["label"].tolist() == ["yes"]


def test_the_buffer_bound_drops_the_oldest_rows_and_counts_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "log"
    root.mkdir()
    (root / "predictions").write_text("in the way")
    log = PredictionLog(str(root), "d1", flush_seconds=3600, max_buffered_rows=100)
    try:
        with caplog.at_level(logging.WARNING, logger="keel.serving.predlog"):
            for i in range(30):
                _log(log, f"r{i}", START + i, _request(i, 5))
            stats = log.stats()
            assert stats["dropped"] == 50 and stats["buffered"] == 100
            with pytest.raises(StorageError):
                log.flush()
        assert any("dropped 50 rows" in r.message for r in caplog.records)
        (root / "predictions").unlink()
        log.flush()
    finally:
        log.close()
    assert log.stats()["written"] == 100 and log.stats()["dropped"] == 50
    read = read_predictions(str(root), "d1")
    assert read["request_id"].drop_duplicates().tolist() == [f"r{i}" for i in range(10, 30)]


def test_files_from_other_model_versions_read_as_one_table(tmp_path: Path) -> None:
    root = str(tmp_path / "log")
    log = PredictionLog(root, "d1", flush_seconds=3600)
    _log(log, "v1", START, pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), version=1)
    log.flush()
    _log(log, "v2", START + 1, pd.DataFrame({"a": [0.5], "c": [True]}), version=2)
    log.flush()
    v3 = pd.DataFrame({"a": ["text"]})
    _log(log, "v3", START + 2, v3, version=None, model=None, outputs=[1.0])
    log.close()
    assert len(_files(Path(root))) == 3
    read = read_predictions(root, "d1")
    assert read["request_id"].tolist() == ["v1", "v1", "v2", "v3"]
    assert read["version"].tolist() == [1, 1, 2, pd.NA]
    assert read["input.a"].tolist() == ["1", "2", "0.5", "text"]  # no common type: text
    assert read["input.b"].tolist()[:2] == ["x", "y"] and read["input.b"][2:].isna().all()
    assert read["input.c"].tolist()[2] is True and read["input.c"][:2].isna().all()
    two = read_predictions(root, "d1", until_ms=START + 1)
    assert two["input.a"].tolist() == [1.0, 2.0, 0.5]  # int and float widen to float


def test_mixed_types_in_one_flush_are_written_not_lost(tmp_path: Path) -> None:
    root = str(tmp_path / "log")
    log = PredictionLog(root, "d1", flush_seconds=3600)
    _log(log, "int", START, pd.DataFrame({"a": [1, 2]}))
    _log(log, "float", START + 1, pd.DataFrame({"a": [2.5]}))
    _log(log, "text", START + 2, pd.DataFrame({"a": ["seven"]}), outputs=["high"])
    _log(log, "mixed", START + 3, pd.DataFrame({"a": [1, "x"]}), outputs=[{"p": 1}, None])
    log.close()
    stats = log.stats()
    assert stats["written"] == 6 and stats["dropped"] == 0 and stats["files"] == 1
    read = read_predictions(root, "d1")
    assert read["input.a"].tolist() == ["1", "2", "2.5", "seven", "1", "x"]
    assert _values(read["output"]) == ["2.0", "4.0", "5.0", "high", '{"p":1}', None]


@pytest.mark.parametrize(
    ("outputs", "row", "column", "expected"),
    [
        (np.array([0.25, 0.75]), 1, "output", 0.75),
        (pd.Series([1, 2]), 0, "output", 1),
        (np.array([[1.0, 2.0], [3.0, 4.0]]), 1, "output", [3.0, 4.0]),  # multi-output
        (pd.DataFrame({"p": [0.1, 0.9]}), 1, "output.p", 0.9),
        (None, 0, "output", None),  # the model failed: error is set
    ],
)
def test_outputs_of_every_shape(
    tmp_path: Path, outputs: object, row: int, column: str, expected: object
) -> None:
    root = str(tmp_path / "log")
    log = PredictionLog(root, "d1", flush_seconds=3600)
    error = "ValueError: no" if outputs is None else None
    log.log(
        **_base("r", START), inputs=pd.DataFrame({"a": [1.0, 2.0]}), outputs=outputs, error=error
    )
    log.close()
    read = read_predictions(root, "d1")
    assert read["input.a"].tolist() == [1.0, 2.0] and _values(read["error"]) == [error] * 2
    value = read[column][row]
    assert (list(value) if column == "output" and isinstance(expected, list) else value) == (
        expected
    ) or (expected is None and pd.isna(value))


def test_a_request_that_was_not_a_table_is_one_row_without_inputs(tmp_path: Path) -> None:
    root = str(tmp_path / "log")
    log = PredictionLog(root, "d1", flush_seconds=3600)
    log.log(**_base("ok", START), inputs=pd.DataFrame({"a": [1.0]}), outputs=[2.0])
    log.log(**_base("bad", START + 1), inputs=None, outputs=None, error="the body is not JSON")
    log.close()
    read = read_predictions(root, "d1")
    assert read["request_id"].tolist() == ["ok", "bad"] and read["row"].tolist() == [0, 0]
    assert _values(read["error"]) == [None, "the body is not JSON"]
    assert read["output"].tolist()[0] == 2.0 and pd.isna(read["input.a"][1])


def test_inputs_as_a_dict_of_columns_read_back_like_frames(tmp_path: Path) -> None:
    root = str(tmp_path / "log")
    log = PredictionLog(root, "d1", flush_seconds=3600)
    columns = {"n": [1, 2], "x": [0.5, 1.5], "s": ["a", "b"]}
    log.log(**_base("dict", START), inputs=columns, outputs=[10.0, 20.0])
    log.log(**_base("frame", START + 1), inputs=pd.DataFrame(columns), outputs=[10.0, 20.0])
    log.log(**_base("uneven ints", START + 2), inputs={"n": [3], "x": [2], "s": ["c"]}, outputs=[1])
    with pytest.raises(InvalidInput, match="differ in length"):
        log.log(**_base("bad", START), inputs={"n": [1, 2], "x": [1.0]}, outputs=None)
    log.close()
    read = read_predictions(root, "d1")
    assert read["request_id"].tolist() == ["dict", "dict", "frame", "frame", "uneven ints"]
    assert read["input.n"].tolist() == [1, 2, 1, 2, 3] and str(read["input.n"].dtype) == "int64"
    assert read["input.x"].tolist() == [0.5, 1.5, 0.5, 1.5, 2.0]
    assert read["input.s"].tolist() == ["a", "b", "a", "b", "c"]


def test_many_small_numeric_frames_keep_their_dtypes(tmp_path: Path) -> None:
    root = str(tmp_path / "log")
    log = PredictionLog(root, "d1", flush_seconds=3600)
    for i in range(50):  # all-float frames, all-int frames, then an int frame among floats
        log.log(**_base(f"f{i}", START + i), inputs=pd.DataFrame({"a": [i + 0.5]}), outputs=[1])
        log.log(**_base(f"i{i}", START + i), inputs=pd.DataFrame({"b": [i]}), outputs=[1])
    log.log(**_base("int among floats", START + 60), inputs=pd.DataFrame({"a": [7]}), outputs=[1])
    log.close()
    read = read_predictions(root, "d1").set_index("request_id")
    assert read.loc["f49", "input.a"] == 49.5 and read.loc["int among floats", "input.a"] == 7.0
    assert str(read["input.a"].dtype) == "float64"
    assert read.loc["i49", "input.b"] == 49 and read["input.b"].dropna().map(float.is_integer).all()


def _base(request_id: str, time_ms: int) -> dict[str, object]:
    return {
        "request_id": request_id,
        "time_ms": time_ms,
        "arm": "m/1",
        "model": "m",
        "version": 1,
        "role": "primary",
        "latency_ms": 0.3,
    }


def test_feedback_labels_keep_their_json_kind(tmp_path: Path) -> None:
    root = str(tmp_path / "log")
    log = PredictionLog(root, "d1", flush_seconds=3600)
    for row, label in enumerate([3, 4.5]):
        log.feedback(request_id="numbers", row=row, label=label, time_ms=START + row)
    log.flush()
    log.feedback(request_id="mixed", row=0, label="cat", time_ms=START + HOUR)
    log.feedback(request_id="mixed", row=1, label={"top": ["cat", "dog"]}, time_ms=START + HOUR)
    log.close()
    numbers = read_feedback(root, "d1", until_ms=START + 10)
    assert numbers["label"].tolist() == [3.0, 4.5]
    assert read_feedback(root, "d1")["label"].tolist() == [
        "3",
        "4.5",
        "cat",
        '{"top":["cat","dog"]}',
    ]


def test_bad_calls_are_refused_before_anything_is_kept(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="deployment name"):
        PredictionLog(str(tmp_path), "../escape")
    with pytest.raises(InvalidInput, match="flush_rows"):
        PredictionLog(str(tmp_path), "d1", flush_rows=0)
    log = PredictionLog(str(tmp_path / "log"), "d1")
    try:
        inputs = pd.DataFrame({"a": [1, 2]})
        with pytest.raises(InvalidInput, match="1 outputs for 2 input rows"):
            log.log(**_base("r", START), inputs=inputs, outputs=[1])
        with pytest.raises(InvalidInput, match="one value per row"):
            log.log(**_base("r", START), inputs=inputs.head(1), outputs=3.5)
        with pytest.raises(InvalidInput, match="DataFrame or a dict of columns, not list"):
            log.log(**_base("r", START), inputs=[[1], [2]], outputs=None)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="role"):
            log.log(**{**_base("r", START), "role": "canary"}, inputs=inputs, outputs=None)
        with pytest.raises(InvalidInput, match="row index"):
            log.feedback(request_id="r", row=-1, label=1, time_ms=START)
        with pytest.raises(InvalidInput, match="deployment name"):
            read_predictions(str(tmp_path), "a/b")
        assert log.stats()["buffered"] == 0
    finally:
        log.close()


def test_an_fsspec_url_is_written_and_read(tmp_path: Path) -> None:
    import fsspec

    url = f"memory://keel-predlog-test-{tmp_path.name}"
    log = PredictionLog(url, "d1", flush_seconds=3600)
    _log(log, "r1", START, _request(1, 3))
    log.close()
    try:
        assert read_predictions(url, "d1")["input.n"].tolist() == [10, 11, 12]
    finally:
        fsspec.filesystem("memory").rm(url.removeprefix("memory://"), recursive=True)


def test_open_log_writes_under_the_artifact_store(home: Path) -> None:
    settings = Settings()
    log = open_log(settings, "d1", flush_seconds=3600)
    _log(log, "r1", START, _request(1, 1))
    log.close()
    assert log_url(settings) == f"{settings.artifacts_url}/predictions-log"
    assert len(_files(Path(settings.artifacts_url) / "predictions-log")) == 1


def test_keel_gc_leaves_prediction_logs_alone(home: Path, tmp_path: Path) -> None:
    from keel.artifacts import ArtifactStore
    from keel.gc import gc

    settings = Settings()
    log = open_log(settings, "d1", flush_seconds=3600)
    _log(log, "r1", START, _request(1, 2))
    log.close()
    garbage = ArtifactStore(settings.artifacts_url).put_bytes(b"referenced by nothing")
    report = gc(settings=settings, root=tmp_path, grace=0)
    assert not ArtifactStore(settings.artifacts_url).exists(garbage.digest)  # gc did run
    assert report.bytes_freed > 0
    assert read_predictions(log_url(settings), "d1")["request_id"].tolist() == ["r1", "r1"]


def test_the_python_examples_of_the_docs_run(home: Path) -> None:
    text = (Path(__file__).parents[2] / "docs" / "prediction-logs.md").read_text()
    blocks = [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]
    read, other_tools, write = blocks  # in the order the page shows them
    scope: dict[str, object] = {}
    exec(write, scope)  # the log and feedback example writes three rows and a label
    exec(read, scope)
    scored = scope["scored"]
    assert isinstance(scored, pd.DataFrame)
    assert scored[["request_id", "row", "label"]].values.tolist() == [["r1", 0, 148.0]]
    exec(other_tools.replace('f"{root}', 'f"' + str(scope["root"])), scope)
    assert len(scope["frame"]) == 3  # type: ignore[arg-type]


def test_log_does_no_heavy_work_on_the_callers_thread(tmp_path: Path) -> None:
    log = PredictionLog(str(tmp_path / "log"), "d1", flush_rows=10**7, flush_seconds=3600)
    frame = _request(1, 100)
    outputs = list(range(100))
    took = []
    try:
        for i in range(1000):
            start = time.perf_counter()
            log.log(**_base(f"r{i}", START), inputs=frame, outputs=outputs)
            took.append(time.perf_counter() - start)
    finally:
        log.close()
    assert statistics.median(took) < 0.001, statistics.median(took)
    assert log.stats()["written"] == 100_000


def test_outputs_of_other_shapes_and_a_bad_frame_cost_no_other_row(tmp_path: Path) -> None:
    """A shadow answering one more class than the primary, and a frame with a column twice, in
    one flush: every row is written, each output under its own names."""
    log = PredictionLog(str(tmp_path), "churn", flush_seconds=3600)
    inputs = pd.DataFrame({"age": [0.1, 0.2], "bmi": [0.3, 0.4]})
    two = pd.DataFrame({"p0": [0.3, 0.4], "p1": [0.7, 0.6]})
    three = pd.DataFrame({"p0": [0.2, 0.1], "p1": [0.5, 0.6], "p2": [0.3, 0.3]})
    named = pd.DataFrame({"label": [1.0, 0.0], "score": [0.9, 0.8]})
    twice = pd.DataFrame([[1.0, 2.0]], columns=["age", "age"])
    at = 1_790_000_000_000
    _log(log, "r1", at, inputs, outputs=two, arm="churn/1")
    _log(log, "r1", at, inputs, outputs=three, arm="churn/2", role="shadow")
    _log(log, "r1", at, inputs, outputs=named, arm="churn/3", role="shadow")
    _log(log, "r2", at + 1, twice, outputs=None, error="schema_mismatch: age twice")
    log.close()
    assert log.stats()["dropped"] == 0
    read = read_predictions(str(tmp_path), "churn").set_index(["arm", "row"])
    assert read.loc[("churn/1", 1), ["output.p0", "output.p1"]].tolist() == [0.4, 0.6]
    assert read.loc[("churn/2", 0), ["output.p0", "output.p1", "output.p2"]].tolist() == [
        0.2,
        0.5,
        0.3,
    ]
    assert read.loc[("churn/3", 0), ["output.label", "output.score"]].tolist() == [1.0, 0.9]
    assert pd.isna(read.loc[("churn/3", 0), "output.p0"])  # not written under p0
    refused = read[read["request_id"] == "r2"]
    assert len(refused) == 1 and refused["error"].iloc[0].startswith("schema_mismatch")
