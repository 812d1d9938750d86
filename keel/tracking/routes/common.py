"""What every route module shares: the tracking service dependency and path parameter types."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path

from keel.db import now_ms
from keel.tracking.models import INT32_MAX, MAX_NAME_LENGTH
from keel.tracking.service import TrackingService, service_of

__all__ = ["ClientDep", "ExperimentIdPath", "NameText", "RunIdPath", "now_ms"]

NO_NUL = r"^[^\x00]*$"


ClientDep = Annotated[TrackingService, Depends(service_of)]
RunIdPath = Annotated[
    str, Path(min_length=1, max_length=32, pattern=NO_NUL, description="the run's 32-hex id")
]
ExperimentIdPath = Annotated[int, Path(ge=0, le=INT32_MAX)]
NameText = Annotated[str, Path(min_length=1, max_length=MAX_NAME_LENGTH, pattern=NO_NUL)]
