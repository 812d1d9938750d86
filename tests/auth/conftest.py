"""Fixtures for authentication: an ``--auth`` app in process with users and their tokens.

``auth_app`` runs on SQLite and on PostgreSQL (``settings``). ``tokens`` holds one token per
(user, role): ``tokens.admin``, ``tokens.alice`` (editor), ``tokens.bob`` (editor) and
``tokens.bob_viewer``. ``as_user(token)`` gives an httpx client sending it as a bearer token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from keel.auth.models import Role
from keel.auth.store import AuthStore
from keel.server import create_app
from keel.settings import Settings

API = "/api/v1"


@dataclass
class Tokens:
    admin: str
    alice: str
    bob: str
    bob_viewer: str


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_tokens(store: AuthStore) -> Tokens:
    for name in ("admin", "alice", "bob"):
        store.create_user(name)
    return Tokens(
        admin=store.create_token("admin", role=Role.ADMIN).token,
        alice=store.create_token("alice", role=Role.EDITOR).token,
        bob=store.create_token("bob", role=Role.EDITOR).token,
        bob_viewer=store.create_token("bob", role=Role.VIEWER).token,
    )


@pytest.fixture
def auth_settings(settings: Settings) -> Settings:
    return settings.replace(auth=True)


@pytest.fixture
def auth_app(auth_settings: Settings) -> Iterator[tuple[FastAPI, TestClient]]:
    app = create_app(auth_settings)
    with TestClient(app) as http:
        yield app, http


@pytest.fixture
def http(auth_app: tuple[FastAPI, TestClient]) -> TestClient:
    """No credentials: every request but /health and /ready is a 401."""
    return auth_app[1]


@pytest.fixture
def store(auth_app: tuple[FastAPI, TestClient]) -> AuthStore:
    auth_store: AuthStore = auth_app[0].state.auth_store
    return auth_store


@pytest.fixture
def tokens(store: AuthStore) -> Tokens:
    return make_tokens(store)


@pytest.fixture
def as_user(auth_app: tuple[FastAPI, TestClient]) -> Callable[[str], httpx.Client]:
    """``as_user(token)``: a client of the same app that sends ``token`` with every request."""
    app = auth_app[0]

    def client(token: str) -> httpx.Client:
        return TestClient(app, headers=bearer(token))

    return client
