"""Serving fixtures: the real Redis the broker-worker tests use.

Redis runs for real at 127.0.0.1:6379 (``KEEL_TEST_REDIS_URL`` to change it). Each test gets a
unique key prefix (:func:`redis_prefix`) whose keys are deleted afterwards, so tests can run in
parallel on one database. Under ``CI=true`` an unreachable Redis fails the tests; elsewhere they
skip with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import IN_CI

REDIS_URL = os.environ.get("KEEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def _redis_reachable() -> str:
    redis = pytest.importorskip("redis") if not IN_CI else __import__("redis")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        if IN_CI:
            pytest.fail(f"Redis is required under CI=true but unreachable at {REDIS_URL}: {exc}")
        pytest.skip(f"Redis not reachable at {REDIS_URL} ({exc})")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_url(_redis_reachable: str) -> str:
    """The URL of the real test Redis (skips, or fails under CI, when it is down)."""
    return _redis_reachable


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this test (``keel-test:<hex>:``); its keys go afterwards."""
    import redis

    prefix = f"keel-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
