"""The native tracking REST API under /api/v1 (being built: see issue 3)."""

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["tracking"])
