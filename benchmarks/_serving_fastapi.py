"""The thin-wrapper reference of benchmarks/serving_vs_peers.py: the least a FastAPI app can do
to serve a model (read the body's bytes, parse with orjson, one DataFrame, ``predict``, dump
with orjson). Run as ``uvicorn _serving_fastapi:app --workers 1`` with ``BENCH_MODEL`` naming
the joblib file.
"""

from __future__ import annotations

import os

import joblib
import orjson
import pandas as pd
from fastapi import FastAPI, Request, Response

model = joblib.load(os.environ["BENCH_MODEL"])
app = FastAPI()


@app.post("/predict")
async def predict(request: Request) -> Response:
    frame = pd.DataFrame(orjson.loads(await request.body())["records"])
    body = orjson.dumps({"predictions": model.predict(frame).tolist()})
    return Response(body, media_type="application/json")


@app.get("/health")
async def health() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")
