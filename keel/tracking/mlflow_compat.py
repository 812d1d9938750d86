"""MLflow-compatible REST endpoints, so the official MLflow client works against keel server."""

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter(tags=["mlflow"])
