"""Named dataset versions on SQLite and PostgreSQL: log_dataset, load, numbering, errors, races."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from keel.artifacts import ArtifactStore
from keel.data.versions import (
    get_version,
    list_datasets,
    list_versions,
    load,
    log_dataset,
    parse_ref,
)
from keel.errors import InvalidInput, KeelError, NotFound, StorageError
from keel.settings import Settings


def _frame(n: int = 200, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [20.0 + (i % 50) + shift for i in range(n)],
            "sex": ["m" if i % 3 else "f" for i in range(n)],
            "visits": list(range(n)),
        }
    )


def test_a_folder_gets_numbered_versions_and_equal_content_reuses_the_latest(
    settings: Settings, tmp_path: Path
) -> None:
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    (images / "a.txt").write_text("aaa")
    (images / "sub" / "b.txt").write_text("bb")

    v1 = log_dataset(images, name="images")
    assert (v1.name, v1.version, v1.kind, v1.files, v1.size) == ("images", 1, "directory", 2, 5)
    assert v1.format is None and v1.profile is None and v1.run_id is None
    assert v1.source == str(images)
    assert log_dataset(images, name="images") == v1  # unchanged: the same version

    (images / "c.txt").write_text("c")
    v2 = log_dataset(images, name="images")
    assert (v2.version, v2.files) == (2, 3) and v2.digest != v1.digest
    (images / "c.txt").unlink()
    v3 = log_dataset(images, name="images")  # back to v1's content: still a new version
    assert v3.version == 3 and v3.digest == v1.digest

    assert [v.version for v in list_versions("images")] == [3, 2, 1]
    assert get_version("images") == get_version("images@latest") == v3
    assert get_version("images@2") == v2
    [summary] = list_datasets()
    assert (summary.name, summary.versions, summary.latest.version) == ("images", 3, 3)

    copy = load("images@2")
    assert isinstance(copy, Path) and copy.is_dir()
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*.txt")) == [
        "a.txt",
        "c.txt",
        "sub/b.txt",
    ]


def test_a_dataframe_is_stored_as_deterministic_parquet_and_loads_back(
    settings: Settings,
) -> None:
    frame = _frame()
    v1 = log_dataset(frame, name="diabetes")
    assert (v1.kind, v1.format, v1.files) == ("file", "parquet", 1)
    assert v1.profile is not None and v1.profile.rows == 200
    assert [c.name for c in v1.profile.columns] == ["age", "sex", "visits"]
    assert log_dataset(frame.copy(deep=True), name="diabetes") == v1  # equal frame, same bytes
    assert log_dataset(_frame(), name="other").digest == v1.digest

    loaded = load("diabetes@1")
    pd.testing.assert_frame_equal(loaded, frame)

    v2 = log_dataset(_frame(shift=1.0), name="diabetes")
    assert v2.version == 2 and v2.digest != v1.digest
    pd.testing.assert_frame_equal(load("diabetes"), _frame(shift=1.0))


def test_csv_and_parquet_files_are_profiled_and_load_as_frames(
    settings: Settings, tmp_path: Path
) -> None:
    frame = _frame(120)
    csv = tmp_path / "train.csv"
    frame.to_csv(csv, index=False)
    parquet = tmp_path / "train.parquet"
    frame.to_parquet(parquet, index=False)

    v_csv = log_dataset(str(csv), name="train-csv")
    assert v_csv.format == "csv" and v_csv.profile is not None
    assert v_csv.profile.format == "csv" and v_csv.profile.rows == 120
    sex = v_csv.profile.column("sex")
    assert sex is not None and {t.value for t in sex.top} == {"m", "f"}
    pd.testing.assert_frame_equal(load("train-csv@1"), pd.read_csv(csv))

    v_pq = log_dataset(parquet, name="train-pq")
    assert v_pq.format == "parquet" and v_pq.profile is not None
    assert v_pq.profile.rows == 120
    pd.testing.assert_frame_equal(load("train-pq"), frame)

    # a file that is not a table: stored and loaded as a file, no profile
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    v_txt = log_dataset(notes, name="notes")
    assert v_txt.format is None and v_txt.profile is None


def test_load_gives_a_read_only_copy_and_rewrites_it_when_edited(
    settings: Settings, home: Path, tmp_path: Path
) -> None:
    source = tmp_path / "model-input.bin"
    source.write_bytes(b"\x00\x01payload")
    version = log_dataset(source, name="blob")

    copy = load("blob@1")
    assert copy == home / "datasets" / version.digest / "model-input.bin"
    assert copy.read_bytes() == b"\x00\x01payload"
    assert not copy.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert load("blob@1") == copy  # reused

    copy.chmod(0o644)
    copy.write_bytes(b"edited by mistake")
    killed = copy.with_name(".tmp-0123-model-input.bin")  # what a killed load leaves
    killed.write_bytes(b"partial")
    again = load("blob@1")
    assert not killed.exists()
    assert again == copy and again.read_bytes() == b"\x00\x01payload"
    assert source.read_bytes() == b"\x00\x01payload"


def test_a_corrupt_object_fails_load_with_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(b"x" * 1000)
    version = log_dataset(source, name="data")
    object_path = ArtifactStore(settings.artifacts_url).path_of(version.digest)
    assert object_path is not None
    Path(object_path).chmod(0o644)
    Path(object_path).write_bytes(b"y" * 1000)
    with pytest.raises(StorageError, match=version.digest):
        load("data@1")
    assert not (settings.home_path / "datasets" / version.digest / "data.bin").exists()


def test_unknown_names_versions_and_malformed_references(
    settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(NotFound, match="none is logged yet"):
        get_version("diabetes@1")
    (tmp_path / "a").write_text("1")
    log_dataset(tmp_path / "a", name="diabetes")
    (tmp_path / "a").write_text("2")
    log_dataset(tmp_path / "a", name="diabetes")

    with pytest.raises(NotFound, match=r"diabetes has no version 7; it has 1-2"):
        load("diabetes@7")
    with pytest.raises(NotFound, match="did you mean diabetes"):
        list_versions("diabetis")
    for bad in ["diabetes@x", "diabetes@0", "diabetes@", "diabetes@1.5", "diabetes@-1"]:
        with pytest.raises(InvalidInput, match="malformed dataset reference"):
            get_version(bad)
    for bad in ["@1", "has space", "a/b", "", "x" * 129]:
        with pytest.raises(InvalidInput, match="invalid dataset name"):
            parse_ref(bad)
    assert parse_ref("diabetes") == ("diabetes", None)
    assert parse_ref("v1.2_final-x@12") == ("v1.2_final-x", 12)


def test_bad_inputs_to_log_dataset(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="DataFrame or the path"):
        log_dataset(42, name="x")  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        log_dataset(tmp_path / "missing.csv", name="x")
    with pytest.raises(InvalidInput, match="invalid dataset name"):
        log_dataset(_frame(), name="bad name")
    with pytest.raises(InvalidInput, match="context"):
        load("x", context="no spaces please")
    with pytest.raises(NotFound):
        list_versions("x")  # nothing was recorded by the failures


def test_a_tracking_server_is_refused_rather_than_writing_a_local_database(
    home: Path, tmp_path: Path
) -> None:
    remote = Settings(tracking_uri="http://127.0.0.1:9")
    (tmp_path / "f").write_text("x")
    for call in (
        lambda: log_dataset(tmp_path / "f", name="f", settings=remote),
        lambda: load("f@1", settings=remote),
        lambda: list_versions("f", settings=remote),
    ):
        with pytest.raises(KeelError, match="not served by the tracking server"):
            call()
    assert not (home / "keel.db").exists()


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from keel.data.versions import log_dataset
    path, ready, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    ready.touch()
    while not go.exists():
        time.sleep(0.002)
    version = log_dataset(path, name="shared")
    print(version.version, version.digest)
    """
)


def _race(paths: list[Path], settings: Settings, tmp_path: Path) -> list[tuple[int, str]]:
    """Log each path as "shared" from its own process, all released at the same moment."""
    env = {
        **os.environ,
        "KEEL_HOME": str(settings.home_path),
        "KEEL_DATABASE_URL": settings.db_url,
    }
    go = tmp_path / "go"
    ready = [tmp_path / f"ready{n}" for n in range(len(paths))]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(flag), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for path, flag in zip(paths, ready, strict=True)
    ]
    deadline = time.monotonic() + 120
    while not all(flag.exists() for flag in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        number, digest = out.split()
        results.append((int(number), digest))
    return results


def test_concurrent_processes_writing_one_name_get_distinct_numbers(
    settings: Settings, tmp_path: Path
) -> None:
    paths = []
    for n in range(3):
        path = tmp_path / f"part{n}.txt"
        path.write_text(f"content {n}")
        paths.append(path)
    results = _race(paths, settings, tmp_path)
    assert sorted(number for number, _ in results) == [1, 2, 3]
    stored = {v.version: v.digest for v in list_versions("shared")}
    assert stored == dict(results)


def _race_threads(paths: list[Path], settings: Settings) -> list[tuple[int, str]]:
    barrier = threading.Barrier(len(paths))
    results: list[tuple[int, str]] = []
    errors: list[BaseException] = []

    def write(path: Path) -> None:
        try:
            barrier.wait(timeout=30)
            version = log_dataset(path, name="shared", settings=settings)
            results.append((version.version, version.digest))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(path,)) for path in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return results


def test_concurrent_threads_writing_one_name_get_distinct_numbers(
    settings: Settings, tmp_path: Path
) -> None:
    paths = []
    for n in range(8):
        path = tmp_path / f"part{n}.txt"
        path.write_text(f"content {n}")
        paths.append(path)
    results = _race_threads(paths, settings)
    assert sorted(number for number, _ in results) == list(range(1, 9))
    assert len({digest for _, digest in results}) == 8
    stored = {v.version: v.digest for v in list_versions("shared")}
    assert stored == dict(results)


def test_concurrent_writers_of_equal_content_share_one_version(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "same.txt"
    path.write_text("same content")
    results = _race_threads([path] * 4, settings)
    assert {number for number, _ in results} == {1}
    assert [v.version for v in list_versions("shared")] == [1]


LOADER = textwrap.dedent(
    """
    import sys
    from keel.data.versions import load
    load(sys.argv[1])
    """
)


def test_a_load_killed_midway_leaves_no_copy_and_the_next_load_completes(
    home: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "many"
    for n in range(3000):
        part = folder / f"d{n % 30}"
        part.mkdir(parents=True, exist_ok=True)
        (part / f"f{n}.txt").write_text(f"file {n}\n" * 20)
    version = log_dataset(folder, name="many")
    copies = home / "datasets" / version.digest

    proc = subprocess.Popen([sys.executable, "-c", LOADER, "many@1"], env=dict(os.environ))
    deadline = time.monotonic() + 120
    while not list(copies.glob(".tmp-*")) and time.monotonic() < deadline:
        assert proc.poll() is None, "the load finished before it could be killed"
        time.sleep(0.005)
    time.sleep(0.05)  # some files of the copy written
    proc.kill()
    proc.wait()
    assert list(copies.glob(".tmp-*"))  # killed midway: only a temp copy
    assert not (copies / "many").exists()

    copy = load("many@1")
    assert copy == copies / "many"
    assert len(list(copy.rglob("*.txt"))) == 3000
    assert (copy / "d7" / "f37.txt").read_text() == "file 37\n" * 20
    assert not list(copies.glob(".tmp-*"))
