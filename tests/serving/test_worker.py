"""``keel worker`` against the real Redis: round trips, micro-batching, bad and poison requests,
two worker processes, a worker killed with SIGKILL mid-batch, SIGTERM, and Redis unreachable.

Predictions are compared with the scikit-learn model's own ``predict``. Slow and refusing models
are :class:`keel.models.PythonModel` wrappers around the same forest, pickled by value so a
worker subprocess loads them without importing this module.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import redis

import keel
import keel.models
from keel.models import api
from keel.serving.sources import load_for_serving
from keel.serving.worker import (
    BrokerClient,
    Reply,
    Worker,
    WorkerOptions,
    submit,
    wait_reply,
)
from keel.serving.worker_client import connect
from tests.conftest import run_main
from tests.models.training import diabetes


class WrappedForest(keel.models.PythonModel):
    """The forest's own predictions, after ``delay`` seconds per call; refuses age above 1."""

    def __init__(self, forest: Any, delay: float = 0.0) -> None:
        self.forest = forest
        self.delay = delay

    def predict(self, context: Any, model_input: Any) -> Any:
        if (model_input["age"] > 1).any():
            raise ValueError("age above 1 is out of range")
        time.sleep(self.delay)
        return self.forest.predict(model_input)


@pytest.fixture
def forest(home: Path) -> Any:
    """A 20-tree forest on diabetes, registered as ``diabetes`` v1 @champion."""
    from sklearn.ensemble import RandomForestRegressor

    X, y = diabetes()
    model = RandomForestRegressor(n_estimators=20, random_state=0).fit(X, y)
    with keel.start_run():
        logged = keel.models.log_model(model, input_example=X.head(3))
    api.register(logged.uri, "diabetes")
    api.set_alias("diabetes", "champion", 1)
    return model


def log_wrapped(forest: Any, delay: float = 0.0) -> str:
    """The forest wrapped in :class:`WrappedForest`, logged; its ``runs:/`` URI."""
    import cloudpickle

    X, _ = diabetes()
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with keel.start_run():
            logged = keel.models.log_model(WrappedForest(forest, delay), input_example=X.head(3))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    return logged.uri


@pytest.fixture
def broker(redis_url: str) -> Iterator[redis.Redis]:
    client = connect(redis_url)
    yield client
    client.close()


@contextmanager
def in_thread(uri: str, redis_url: str, options: WorkerOptions) -> Iterator[Worker]:
    """A worker consuming in a thread of this process until the block ends."""
    predictor, version = load_for_serving(uri)
    worker = Worker(predictor, connect(redis_url), options, version=version)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive()


def start_worker(uri: str, redis_url: str, stream: str, log: Path, *extra: str) -> Any:
    """``keel worker`` as a real subprocess, logging to ``log``."""
    command = [sys.executable, "-m", "keel", "worker", uri, "--broker", redis_url]
    return subprocess.Popen(
        [*command, "--stream", stream, *extra],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )


def wait_for(condition: Any, what: str, *, timeout: float = 120, process: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None:
            assert process.poll() is None, f"the worker exited ({process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def consumers(client: redis.Redis, stream: str, group: str = "keel") -> set[str]:
    try:
        rows: Any = client.xinfo_consumers(stream, group)
    except redis.ResponseError:  # no stream or group yet
        return set()
    return {row["name"].decode() for row in rows}


def pending_of(client: redis.Redis, stream: str, consumer: str) -> list[bytes]:
    try:
        rows: Any = client.xpending_range(stream, "keel", "-", "+", 1000, consumername=consumer)
    except redis.ResponseError:  # no group yet
        return []
    return [row["message_id"] for row in rows]


def chunks(count: int) -> list[Any]:
    """``count`` requests of 1-4 diabetes rows each (different rows per request)."""
    X, _ = diabetes()
    return [X.iloc[i * 4 : i * 4 + 1 + i % 4] for i in range(count)]


def test_round_trip_gives_the_models_own_predictions(
    forest: Any, redis_url: str, redis_prefix: str, broker: redis.Redis
) -> None:
    stream = redis_prefix + "scoring"
    X, _ = diabetes()
    rows = X.head(7)
    expected = forest.predict(rows)
    with in_thread("models:/diabetes@champion", redis_url, WorkerOptions(stream=stream)):
        by_records = submit(redis_url, stream, rows.to_dict(orient="records"))
        assert submit(redis_url, stream, rows.to_dict("list"), request_id="mine") == "mine"
        reply = wait_reply(redis_url, stream + ":replies", by_records, timeout=60)
        assert reply.ok, reply.error
        np.testing.assert_allclose(reply.result(), expected)
        assert (reply.model, reply.request_id) == ("diabetes/1", by_records)
        columns = wait_reply(redis_url, stream + ":replies", "mine", timeout=60)
        np.testing.assert_allclose(columns.result(), expected)
        # a producer in any language: raw fields, no id (the entry id is used), its own
        # reply stream, a CSV body
        entry = broker.xadd(
            stream,
            {
                "body": rows.to_csv(index=False),
                "content_type": "text/csv",
                "reply_to": redis_prefix + "mine",
            },
        )
        raw: Any = broker.xread({redis_prefix + "mine": "0"}, block=20_000)
        fields = raw[0][1][0][1]
        assert fields[b"id"] == fields[b"entry"] == entry
        assert fields[b"status"] == b"ok"
        np.testing.assert_allclose(orjson.loads(fields[b"predictions"]), expected)
        assert fields[b"digest"] == reply.digest.encode()
    # answered requests are acknowledged and deleted; reply streams expire
    assert broker.xpending(stream, "keel")["pending"] == 0
    assert broker.xlen(stream) == 0
    assert 0 < broker.ttl(stream + ":replies") <= 86_400


def test_the_requests_of_one_read_are_scored_in_one_predict_call(
    forest: Any, redis_url: str, redis_prefix: str
) -> None:
    stream = redis_prefix + "scoring"
    requests = chunks(30)
    # one request sends its columns in another order: the signature check puts them back
    requests[3] = requests[3][list(reversed(requests[3].columns))]
    with BrokerClient(redis_url, stream) as client:
        ids = [client.submit(rows) for rows in requests]
        with in_thread(
            "models:/diabetes@champion", redis_url, WorkerOptions(stream=stream)
        ) as worker:
            replies = client.wait_all(ids, timeout=60)
    order = list(diabetes()[0].columns)
    for rows, reply in zip(requests, replies, strict=True):
        np.testing.assert_allclose(reply.result(), forest.predict(rows[order]))
    assert worker.stats.predict_calls == 1
    assert worker.stats.answered == 30


def test_a_requests_answer_does_not_depend_on_its_batch(
    forest: Any, redis_url: str, redis_prefix: str
) -> None:
    """Plain JSON bodies are merged before the signature check; each still gets exactly the
    answer it would get alone (the answer of ``predict`` on its own body)."""
    from keel.serving.bodies import frame_from_json
    from keel.serving.worker_client import encode_body

    stream = redis_prefix + "scoring"
    X, _ = diabetes()
    records = X.head(3).to_dict(orient="records")
    bodies = [encode_body(rows) for rows in chunks(8)]
    bodies += [
        encode_body([{**records[0], "age": "forty"}]),  # a string where floats go, alone
        encode_body([{**records[0], "age": "forty"}, {**records[1], "age": "fifty"}]),
        encode_body([{**records[0], "age": "forty"}, records[1]]),  # mixed kinds in a column
        encode_body([{**records[0], "age": None}]),  # a null
        encode_body([{**records[0], "age": 0}, {**records[1], "age": 1}]),  # integers
        encode_body({"columns": {"age": [0.01], "bmi": [0.02]}}),  # columns missing
        encode_body([{**records[0], "extra": 1.0}]),  # a column the model does not know
        encode_body({"records": [{"nested": [1.0]}]}),
    ]
    predictor, _version = load_for_serving("models:/diabetes@champion")

    def alone(body: bytes) -> Any:
        try:
            return predictor.predict(frame_from_json(body)).tolist()
        except keel.KeelError as exc:
            return exc.to_dict()

    with BrokerClient(redis_url, stream) as client:
        ids = [client.submit(body) for body in bodies]
        options = WorkerOptions(stream=stream)
        with in_thread("models:/diabetes@champion", redis_url, options) as worker:
            replies = client.wait_all(ids, timeout=60)
    assert worker.stats.predict_calls == 1  # every good request in one call
    for body, reply in zip(bodies, replies, strict=True):
        expected = alone(body)
        if isinstance(expected, dict):
            assert reply.error == expected, body
        else:
            np.testing.assert_allclose(reply.result(), expected)
    assert sum(reply.ok for reply in replies) >= 8 + 1  # the integers are read as floats


def test_a_request_the_model_refuses_fails_alone(
    forest: Any, redis_url: str, redis_prefix: str
) -> None:
    uri = log_wrapped(forest)
    stream = redis_prefix + "scoring"
    requests = chunks(6)
    bad = requests[2].copy()
    bad.iloc[0, bad.columns.get_loc("age")] = 5.0
    requests[2] = bad
    with BrokerClient(redis_url, stream) as client:
        ids = [client.submit(rows) for rows in requests]
        with in_thread(uri, redis_url, WorkerOptions(stream=stream)) as worker:
            replies = client.wait_all(ids, timeout=60)
    assert not replies[2].ok
    assert replies[2].error == {
        "error": "invalid_input",
        "message": "the model refused the input: age above 1 is out of range",
    }
    for index in (0, 1, 3, 4, 5):
        np.testing.assert_allclose(replies[index].result(), forest.predict(requests[index]))
    assert worker.stats.predict_calls == 1 + 6  # the batch failed, then each alone
    assert worker.stats.errors == 1
    with pytest.raises(keel.KeelError, match="age above 1"):
        replies[2].result()


def test_bad_requests_get_error_replies_and_the_worker_goes_on(
    forest: Any, redis_url: str, redis_prefix: str, broker: redis.Redis
) -> None:
    stream = redis_prefix + "scoring"
    X, _ = diabetes()
    replies = stream + ":replies"
    wrong_type = X.head(2).to_dict(orient="records")
    wrong_type[1]["age"] = "forty"
    with in_thread("models:/diabetes@champion", redis_url, WorkerOptions(stream=stream)):
        broker.xadd(stream, {"id": "no-body", "payload": "{}"})
        submit(broker, stream, b'{"records": [{"age": 0.1,}]}', request_id="not-json")
        submit(broker, stream, b"\xff\xfe", request_id="binary")
        submit(broker, stream, X.head(2).drop(columns=["bmi"]), request_id="no-bmi")
        submit(broker, stream, wrong_type, request_id="wrong-type")
        submit(broker, stream, b'{"rows": []}', request_id="not-a-table")
        string_key = redis_prefix + "a-string"
        broker.set(string_key, "not a stream")
        submit(broker, stream, X.head(1), request_id="bad-reply-to", reply_to=string_key)
        good = submit(broker, stream, X.head(3))
        errors = {
            rid: wait_reply(broker, replies, rid, timeout=60)
            for rid in (
                *("no-body", "not-json", "binary", "no-bmi", "wrong-type", "not-a-table"),
                "bad-reply-to",
            )
        }
        np.testing.assert_allclose(
            wait_reply(broker, replies, good, timeout=60).result(), forest.predict(X.head(3))
        )
    assert not any(reply.ok for reply in errors.values())
    messages = {rid: reply.error["message"] for rid, reply in errors.items()}  # type: ignore[index]
    assert 'no "body" field' in messages["no-body"]
    assert "not valid JSON" in messages["not-json"]
    assert "not valid JSON" in messages["binary"]
    assert "'bmi' is missing" in messages["no-bmi"]
    assert errors["no-bmi"].error["column"] == "bmi"  # type: ignore[index]
    assert "should hold float" in messages["wrong-type"]
    assert '"records" or "columns"' in messages["not-a-table"]
    # a reply_to that cannot take replies: the error goes to the default reply stream
    assert "cannot take replies: WRONGTYPE" in messages["bad-reply-to"]
    assert errors["bad-reply-to"].error["field"] == "reply_to"  # type: ignore[index]
    assert broker.xpending(stream, "keel")["pending"] == 0


def test_a_request_delivered_too_often_is_answered_with_an_error_not_retried(
    forest: Any, redis_url: str, redis_prefix: str, broker: redis.Redis
) -> None:
    stream = redis_prefix + "scoring"
    X, _ = diabetes()
    broker.xgroup_create(stream, "keel", id="0", mkstream=True)
    poison = submit(broker, stream, X.head(2))
    # a consumer took it and died four times over (as if it crashed every worker)
    read: Any = broker.xreadgroup("keel", "ghost", {stream: ">"})
    entry = read[0][1][0][0]
    broker.xclaim(stream, "keel", "ghost", 0, [entry], retrycount=4)
    options = WorkerOptions(stream=stream, claim_idle_ms=1, max_deliveries=3)
    with in_thread("models:/diabetes@champion", redis_url, options) as worker:
        reply = wait_reply(broker, stream + ":replies", poison, timeout=60)
        good = submit(broker, stream, X.head(2))
        assert wait_reply(broker, stream + ":replies", good, timeout=60).ok
    assert not reply.ok
    assert "delivered 5 times (more than 3)" in reply.error["message"]  # type: ignore[index]
    assert (worker.stats.poison, worker.stats.claimed) == (1, 1)
    assert broker.xpending(stream, "keel")["pending"] == 0


def test_a_slow_workers_request_claimed_by_another_is_answered_once(
    forest: Any, redis_url: str, redis_prefix: str, broker: redis.Redis
) -> None:
    stream = redis_prefix + "scoring"
    X, _ = diabetes()
    slow_uri = log_wrapped(forest, delay=3.0)
    slow = WorkerOptions(stream=stream, consumer="slow", claim_idle_ms=3_600_000)
    quick = WorkerOptions(stream=stream, consumer="quick", claim_idle_ms=300)
    with in_thread(slow_uri, redis_url, slow) as slow_worker:
        wait_for(lambda: "slow" in consumers(broker, stream), "the slow worker")
        rid = submit(broker, stream, X.head(2))
        wait_for(lambda: pending_of(broker, stream, "slow"), "the slow worker to take it")
        with in_thread("models:/diabetes@champion", redis_url, quick) as quick_worker:
            reply = wait_reply(broker, stream + ":replies", rid, timeout=60)
            wait_for(lambda: slow_worker.stats.lost_to_others == 1, "the slow one", timeout=60)
    assert reply.worker == "quick"
    np.testing.assert_allclose(reply.result(), forest.predict(X.head(2)))
    assert broker.xlen(stream + ":replies") == 1  # the slow worker wrote nothing
    assert (quick_worker.stats.claimed, slow_worker.stats.answered) == (1, 0)


def test_a_worker_restarted_under_its_name_answers_its_own_pending_requests_first(
    forest: Any, redis_url: str, redis_prefix: str, broker: redis.Redis
) -> None:
    stream = redis_prefix + "scoring"
    X, _ = diabetes()
    broker.xgroup_create(stream, "keel", id="0", mkstream=True)
    held = submit(broker, stream, X.head(3))
    broker.xreadgroup("keel", "a", {stream: ">"})  # "a" took it, then stopped
    options = WorkerOptions(stream=stream, consumer="a", claim_idle_ms=3_600_000)
    with in_thread("models:/diabetes@champion", redis_url, options) as worker:
        reply = wait_reply(broker, stream + ":replies", held, timeout=60)
    np.testing.assert_allclose(reply.result(), forest.predict(X.head(3)))
    assert worker.stats.claimed == 0  # its own, not claimed from anyone
    assert broker.xpending(stream, "keel")["pending"] == 0


@pytest.mark.slow
def test_two_worker_processes_answer_each_request_exactly_once(
    forest: Any, redis_url: str, redis_prefix: str, broker: redis.Redis, tmp_path: Path
) -> None:
    stream = redis_prefix + "scoring"
    workers = [
        start_worker(
            "models:/diabetes@champion",
            redis_url,
            stream,
            tmp_path / f"w{n}.log",
            *("--consumer", f"w{n}", "--batch", "4"),
        )
        for n in (1, 2)
    ]
    try:
        for process in workers:
            wait_for(lambda: len(consumers(broker, stream)) == 2, "two consumers", process=process)
        requests = chunks(100)
        with BrokerClient(redis_url, stream) as client:
            ids = [client.submit(rows) for rows in requests]
            replies = client.wait_all(ids, timeout=120)
            assert broker.xlen(client.reply_to) == len(ids)  # no reply written twice
        for rows, reply in zip(requests, replies, strict=True):
            np.testing.assert_allclose(reply.result(), forest.predict(rows))
        assert {reply.worker for reply in replies} == {"w1", "w2"}
        for process in workers:
            process.send_signal(signal.SIGTERM)
        assert [process.wait(timeout=30) for process in workers] == [0, 0]
    finally:
        for process in workers:
            process.kill() if process.poll() is None else None
    assert broker.xpending(stream, "keel")["pending"] == 0


@pytest.mark.slow
def test_a_worker_killed_mid_batch_loses_no_request(
    forest: Any, redis_url: str, redis_prefix: str, broker: redis.Redis, tmp_path: Path
) -> None:
    uri = log_wrapped(forest, delay=0.5)
    stream = redis_prefix + "scoring"
    flags = ("--batch", "5", "--claim-idle-ms", "1000")
    first = start_worker(uri, redis_url, stream, tmp_path / "a.log", "--consumer", "a", *flags)
    second = None
    try:
        requests = chunks(20)
        with BrokerClient(redis_url, stream) as client:
            ids = [client.submit(rows) for rows in requests]
            wait_for(lambda: pending_of(broker, stream, "a"), "a batch in hand", process=first)
            first.kill()  # SIGKILL: no handler, no ack
            first.wait(timeout=30)
            held = pending_of(broker, stream, "a")
            assert held, "the killed worker held no entries"
            second = start_worker(
                uri, redis_url, stream, tmp_path / "b.log", "--consumer", "b", *flags
            )
            replies = client.wait_all(ids, timeout=180)
            assert broker.xlen(client.reply_to) == len(ids)  # each answered exactly once
        for rows, reply in zip(requests, replies, strict=True):
            np.testing.assert_allclose(reply.result(), forest.predict(rows))
        by_entry = {reply.entry.encode(): reply.worker for reply in replies}
        assert {by_entry[entry] for entry in held} == {"b"}
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
    assert broker.xpending(stream, "keel")["pending"] == 0
    assert "claimed" in (tmp_path / "b.log").read_text()


@pytest.mark.slow
def test_sigterm_finishes_the_batch_in_hand_then_exits_0(
    forest: Any, redis_url: str, redis_prefix: str, broker: redis.Redis, tmp_path: Path
) -> None:
    uri = log_wrapped(forest, delay=1.0)
    stream = redis_prefix + "scoring"
    log = tmp_path / "worker.log"
    process = start_worker(uri, redis_url, stream, log, "--consumer", "a", "--batch", "5")
    try:
        requests = chunks(10)
        ids = [submit(broker, stream, rows) for rows in requests]
        wait_for(lambda: pending_of(broker, stream, "a"), "a batch in hand", process=process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    replies: Any = broker.xrange(stream + ":replies")
    answered = [Reply.from_fields(fields) for _id, fields in replies]
    assert [reply.request_id for reply in answered] == ids[:5]
    for rows, reply in zip(requests, answered, strict=False):
        np.testing.assert_allclose(reply.result(), forest.predict(rows))
    assert broker.xpending(stream, "keel")["pending"] == 0  # acknowledged before exiting
    assert broker.xlen(stream) == 5  # the rest wait, unread, for the next worker
    text = log.read_text()
    assert "SIGTERM: finishing the batch in hand" in text
    assert "stopped: answered 5 requests" in text
    assert "Traceback" not in text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_redis_unreachable_is_a_warning_and_a_retry_not_a_traceback(
    forest: Any, tmp_path: Path
) -> None:
    port = _free_port()
    log = tmp_path / "worker.log"
    url = f"redis://127.0.0.1:{port}/0"
    process = start_worker("models:/diabetes@champion", url, "scoring", log)
    try:
        wait_for(lambda: log.read_text().count("retrying in") >= 2, "retries", process=process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert f"cannot reach Redis at 127.0.0.1:{port}/0" in text
    assert "retrying in 0.5 s" in text
    assert "retrying in 1.0 s" in text
    assert "Traceback" not in text


def _redis_server(port: int, folder: Path) -> Any:
    """A redis-server of the test's own on ``port``, keeping nothing on disk."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not on PATH")
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    try:
        wait_for(lambda: _pings(client), "redis-server to answer", timeout=30, process=process)
    finally:
        client.close()
    return process


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.mark.slow
def test_a_worker_rides_out_a_redis_restart_that_lost_everything(
    forest: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    X, _ = diabetes()
    caplog.set_level("INFO", logger="keel.worker")
    server = _redis_server(port, tmp_path)
    try:
        options = WorkerOptions(stream="scoring", block_ms=200)
        with in_thread("models:/diabetes@champion", url, options) as worker:
            first = submit(url, "scoring", X.head(2))
            assert wait_reply(url, "scoring:replies", first, timeout=60).ok
            server.terminate()  # nothing saved: the stream and the group are gone
            server.wait(timeout=30)
            wait_for(lambda: "cannot reach Redis" in caplog.text, "the worker to notice")
            server = _redis_server(port, tmp_path)
            second = submit(url, "scoring", X.head(3))
            reply = wait_reply(url, "scoring:replies", second, timeout=120)
        np.testing.assert_allclose(reply.result(), forest.predict(X.head(3)))
        assert worker.stats.answered == 2
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert f"cannot reach Redis at 127.0.0.1:{port}/0" in caplog.text
    assert f"connected to Redis at 127.0.0.1:{port}/0 again" in caplog.text
    assert "Traceback" not in caplog.text


def test_a_bad_broker_url_is_one_red_line(cli: Any) -> None:
    result = run_main(cli, ["worker", "models:/x/1", "--broker", "http://x:6379", "--stream", "s"])
    assert result.exit_code == 1
    assert "is not a Redis URL: use redis://HOST:PORT/DB" in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_wait_reply_times_out_naming_the_request(redis_url: str, redis_prefix: str) -> None:
    with pytest.raises(TimeoutError, match=r"no reply to request r1 .* within 0\.2 s"):
        wait_reply(redis_url, redis_prefix + "replies", "r1", timeout=0.2)
