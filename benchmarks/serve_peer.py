"""The load benchmark's peer: the service users write by hand, a FastAPI app calling ``pipeline()`` per request.

    PEER_MODEL=outputs/run/best uvicorn serve_peer:app --app-dir benchmarks --host 127.0.0.1 --port 8081

As a tutorial would write it: one ``pipeline("text-classification")``, a plain ``def`` route (FastAPI runs it in its
thread pool, so concurrent requests call the pipeline from several threads at once), TEI's request and answer shapes
so the same client measures both, and no limits. Not part of the hf_indosent package.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI
from transformers import pipeline

pipe = pipeline("text-classification", model=os.environ["PEER_MODEL"], device="cpu", top_k=None, truncation=True)
app = FastAPI()


@app.get("/health")
def health() -> dict[str, bool]:
    return {"ok": True}


@app.post("/predict")
def predict(body: dict[str, Any]) -> list[Any]:
    inputs = body["inputs"]
    if isinstance(inputs, str):
        return pipe(inputs)[0]  # top_k=None: one list of labels per text, even for a single text
    return pipe([item[0] for item in inputs])
