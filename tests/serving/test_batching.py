"""Adaptive micro-batching on real logged models: concurrent requests share predict calls, each
caller gets exactly its own rows (equal to the model's own predict), a bad request fails alone,
and closing drains what was queued."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import keel
import keel.models
from keel.errors import SchemaMismatch
from keel.models.loading import Predictor
from keel.serving.batching import BatcherClosed, MicroBatcher
from tests.models.training import diabetes

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Scorer(keel.models.PythonModel):
    """A model whose output is a DataFrame, which takes 3 ms a call (so requests pile up while
    it runs), remembers how many rows each call had, and refuses an age below -1 (a value the
    signature allows)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, context: Any, model_input: Any) -> Any:
        self.calls.append(len(model_input))
        if (model_input["age"] < -1).any():
            raise ValueError("age below -1 is not a real age")
        time.sleep(0.003)
        return pd.DataFrame(
            {
                "double": model_input["age"] * 2,
                "band": np.where(model_input["bmi"] > 0, "high", "low"),
            }
        )


def _expected(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {"double": frame["age"] * 2, "band": np.where(frame["bmi"] > 0, "high", "low")}
    ).reset_index(drop=True)


@pytest.fixture
def scorer(home: Path) -> Predictor:
    X, _ = diabetes()
    with keel.start_run():
        logged = keel.models.log_model(Scorer(), input_example=X.head(3))
    predictor = keel.models.load(logged.uri)
    predictor.raw.calls.clear()
    return predictor


@pytest.fixture
def forest(home: Path) -> Predictor:
    from sklearn.ensemble import RandomForestRegressor

    X, y = diabetes()
    model = RandomForestRegressor(n_estimators=10, random_state=0).fit(X, y)
    with keel.start_run():
        logged = keel.models.log_model(model, input_example=X.head(3))
    return keel.models.load(logged.uri)


def _requests(sizes: list[int]) -> list[pd.DataFrame]:
    X, _ = diabetes()
    frames, start = [], 0
    for size in sizes:
        frames.append(X.iloc[start : start + size].reset_index(drop=True))
        start += size
    return frames


async def test_concurrent_requests_share_predict_calls_and_get_their_own_rows(
    forest: Predictor,
) -> None:
    batcher = MicroBatcher(forest)
    sizes = [1, 3, 1, 7, 2, 1, 1, 5, 1, 1] * 4
    frames = _requests(sizes)
    answers = await asyncio.gather(*(batcher.predict(frame) for frame in frames))
    for frame, answer in zip(frames, answers, strict=True):
        assert isinstance(answer, np.ndarray)
        np.testing.assert_allclose(answer, forest.raw.predict(frame))
    assert batcher.stats.requests == 40
    assert batcher.stats.calls < 40
    assert batcher.stats.rows == sum(sizes)
    await batcher.close()


async def test_dataframe_outputs_are_split_per_caller(scorer: Predictor) -> None:
    batcher = MicroBatcher(scorer)
    frames = _requests([2, 1, 4, 1, 3, 1, 1, 6] * 3)
    answers = await asyncio.gather(*(batcher.predict(frame) for frame in frames))
    for frame, answer in zip(frames, answers, strict=True):
        pd.testing.assert_frame_equal(answer, _expected(frame))
    calls = scorer.raw.calls  # counted by the model itself
    assert len(calls) == batcher.stats.calls < len(frames)
    assert sum(calls) == sum(len(frame) for frame in frames)
    assert max(calls) > 1
    await batcher.close()


async def test_one_at_a_time_is_scored_at_once_each(scorer: Predictor) -> None:
    batcher = MicroBatcher(scorer)
    for frame in _requests([1, 2, 3]):
        pd.testing.assert_frame_equal(await batcher.predict(frame), _expected(frame))
    assert scorer.raw.calls == [1, 2, 3]
    await batcher.close()


async def test_a_refused_request_fails_alone(scorer: Predictor) -> None:
    batcher = MicroBatcher(scorer)
    frames = _requests([2] * 12)
    frames[5].loc[1, "age"] = -5.0  # the signature allows it; the model refuses it
    wrong = frames[8].drop(columns=["bmi"])  # the signature refuses it before any queue
    results = await asyncio.gather(
        *(batcher.predict(f) for f in [*frames[:8], wrong, *frames[9:]]),
        return_exceptions=True,
    )
    assert isinstance(results[5], ValueError) and "below -1" in str(results[5])
    assert isinstance(results[8], SchemaMismatch) and "'bmi' is missing" in str(results[8])
    for index, result in enumerate(results):
        if index not in (5, 8):
            pd.testing.assert_frame_equal(result, _expected(frames[index]))
    assert batcher.stats.retries >= 1  # the batch with the bad rows was scored one by one
    await batcher.close()


async def test_batches_stay_under_max_rows_and_a_big_request_stays_whole(
    scorer: Predictor,
) -> None:
    batcher = MicroBatcher(scorer, max_batch_rows=10)
    frames = _requests([4, 4, 4, 25, 3, 3, 3, 3])
    answers = await asyncio.gather(*(batcher.predict(frame) for frame in frames))
    for frame, answer in zip(frames, answers, strict=True):
        pd.testing.assert_frame_equal(answer, _expected(frame))
    calls = scorer.raw.calls
    assert 25 in calls  # the 25-row request alone, not split
    assert all(rows <= 10 for rows in calls if rows != 25)
    await batcher.close()


async def test_no_batching_scores_each_request_alone(scorer: Predictor) -> None:
    batcher = MicroBatcher(scorer, max_batch_rows=0)
    frames = _requests([1, 2, 1, 3, 1, 1])
    await asyncio.gather(*(batcher.predict(frame) for frame in frames))
    assert scorer.raw.calls == [1, 2, 1, 3, 1, 1]
    await batcher.close()


async def test_max_wait_fills_batches_under_load_and_holds_a_lone_request_once_at_most(
    scorer: Predictor,
) -> None:
    batcher = MicroBatcher(scorer, max_wait_ms=300)  # wide margins for a loaded CI

    async def later(frame: pd.DataFrame, delay: float) -> Any:
        await asyncio.sleep(delay)
        return await batcher.predict(frame)

    async def timed(frame: pd.DataFrame) -> float:
        started = time.perf_counter()
        pd.testing.assert_frame_equal(await batcher.predict(frame), _expected(frame))
        return time.perf_counter() - started

    frames = _requests([1, 1, 1, 1])
    await asyncio.gather(*(batcher.predict(frame) for frame in frames))  # four in flight
    started = time.perf_counter()
    answers = await asyncio.gather(*(later(f, i * 0.03) for i, f in enumerate(frames)))
    took = time.perf_counter() - started
    for frame, answer in zip(frames, answers, strict=True):
        pd.testing.assert_frame_equal(answer, _expected(frame))
    # the first of the staggered four waited for the other three, not for the whole 300 ms
    assert scorer.raw.calls == [4, 4]
    assert 0.08 <= took < 0.3
    # the load drops to one client: its first request waits for the others once, then never
    assert await timed(frames[0]) >= 0.28
    assert await timed(frames[1]) < 0.25
    assert await timed(frames[2]) < 0.25
    assert scorer.raw.calls == [4, 4, 1, 1, 1]
    await asyncio.gather(*(batcher.predict(frame) for frame in frames))  # four in flight
    await asyncio.sleep(3.1)  # then a lull (10x max_wait): the next request goes at once
    assert await timed(frames[0]) < 0.25
    assert scorer.raw.calls == [4, 4, 1, 1, 1, 4, 1]
    await batcher.close()


async def test_close_drains_the_queue_then_refuses(scorer: Predictor) -> None:
    batcher = MicroBatcher(scorer)
    frames = _requests([1] * 20)
    pending = [asyncio.create_task(batcher.predict(frame)) for frame in frames]
    await asyncio.sleep(0)  # every request is queued
    await batcher.close()
    assert all(task.done() for task in pending)
    for frame, task in zip(frames, pending, strict=True):
        pd.testing.assert_frame_equal(task.result(), _expected(frame))
    with pytest.raises(BatcherClosed):
        await batcher.predict(frames[0])


async def test_a_cancelled_caller_does_not_break_the_batch(scorer: Predictor) -> None:
    batcher = MicroBatcher(scorer)
    frames = _requests([1] * 6)
    tasks = [asyncio.create_task(batcher.predict(frame)) for frame in frames]
    await asyncio.sleep(0)
    tasks[3].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[3], asyncio.CancelledError)
    for index in (0, 1, 2, 4, 5):
        pd.testing.assert_frame_equal(results[index], _expected(frames[index]))
    await batcher.close()


class Unsliceable(keel.models.PythonModel):
    """Answers a dict as long as its input: right length, but rows cannot be sliced from it."""

    def predict(self, context: Any, model_input: Any) -> Any:
        time.sleep(0.003)
        return dict.fromkeys(range(len(model_input)), 1.0)


class Exits(keel.models.PythonModel):
    """Raises SystemExit (a BaseException, past ``except Exception``) on an age above 0.1."""

    def predict(self, context: Any, model_input: Any) -> Any:
        time.sleep(0.003)
        if (model_input["age"] > 0.1).any():
            raise SystemExit(3)
        return model_input["age"].to_numpy()


def _load(model: keel.models.PythonModel) -> Predictor:
    X, _ = diabetes()
    with keel.start_run():
        logged = keel.models.log_model(model, input_example=X.head(3))
    return keel.models.load(logged.uri)


async def test_an_answer_that_cannot_be_split_is_scored_per_request_and_nobody_hangs(
    home: Path,
) -> None:
    batcher = MicroBatcher(_load(Unsliceable()))
    frames = _requests([2, 1, 3, 1] * 3)
    answers = await asyncio.wait_for(
        asyncio.gather(*(batcher.predict(frame) for frame in frames)), 30
    )
    assert [len(answer) for answer in answers] == [len(frame) for frame in frames]
    assert batcher.stats.retries >= 1
    await asyncio.wait_for(batcher.close(), 30)


async def test_a_model_raising_past_exception_fails_its_callers_and_the_scorer_goes_on(
    home: Path,
) -> None:
    X, _ = diabetes()
    batcher = MicroBatcher(_load(Exits()))
    bad = X[X["age"] > 0.1].head(1).reset_index(drop=True)
    good = X[X["age"] <= 0.1].head(4).reset_index(drop=True)
    results = await asyncio.wait_for(
        asyncio.gather(
            *(batcher.predict(frame) for frame in [good.head(1), bad, good.tail(2)]),
            return_exceptions=True,
        ),
        30,
    )
    assert any(isinstance(result, RuntimeError) for result in results)
    again = await asyncio.wait_for(batcher.predict(good), 30)  # the scorer still works
    np.testing.assert_allclose(again, good["age"].to_numpy())
    await asyncio.wait_for(batcher.close(), 30)
