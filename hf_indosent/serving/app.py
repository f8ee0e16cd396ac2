"""The service as an ASGI app: ``create_app(...)`` for ``hf-indosent serve``, Ray Serve, or a user's own server.

Routes (text-embeddings-inference's, see :mod:`~hf_indosent.serving.protocol`): ``POST /predict``; ``GET /info``;
``GET /health`` (also ``/`` and ``/ping``): 200 once the model is loaded and warmed up, 503 before, after a failed
load and while shutting down; ``GET /metrics`` (Prometheus). FastAPI's ``/docs`` lists them.

The model loads on a background thread when the app starts, so the port answers (503) at once and a load balancer or
Kubernetes readiness probe waits for 200. Each predict request is admitted or refused at once (429 when its texts
do not fit in ``max_concurrent_requests``, counted in texts as TEI does, or would wait past ``max_queue_seconds``:
:mod:`~hf_indosent.serving.admission`), its
body read within ``payload_limit`` and checked, its texts counted in tokens on the tokenizer thread, and its rows
awaited from the :class:`~hf_indosent.serving.batcher.Batcher`. An API
key, when configured, is checked in constant time on every route but the health probes. One JSON access-log line per
request goes to the ``hf_indosent.serving.access`` logger.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import hf_indosent
from hf_indosent.core.errors import describe
from hf_indosent.inference.arguments import InferenceArguments
from hf_indosent.inference.base import ChunkedPredictor
from hf_indosent.inference.predictor import load_predictor, resolve_device
from hf_indosent.serving.admission import Admission
from hf_indosent.serving.arguments import SERVE_CPU_BATCH_TOKENS, ServeArguments
from hf_indosent.serving.batcher import DEFAULT_PASS_TEXTS, Batcher, Rows
from hf_indosent.serving.metrics import INSTALL_HINT, ServeMetrics
from hf_indosent.serving.model import ServedModel
from hf_indosent.serving.protocol import PredictRequest, RequestError, parse_predict_request, text_answer

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("hf_indosent.serving.access")

PROBES = frozenset({"/", "/health", "/ping"})
"""Health probes: open without the API key, so load balancers and Kubernetes need no secret to ask."""
PREDICT_ROUTES = frozenset({"/predict", "/"})
"""TEI answers a classifier's ``POST /predict`` also at ``POST /`` (what Inference Endpoints clients call)."""
HTTP_ERROR_TYPES = {404: "NotFound", 405: "MethodNotAllowed"}
OnFatal = Callable[[BaseException], None]


class ServeSetupError(ValueError):
    """A setting the service cannot start with; the message names it and the fix."""


def api_key_digest(env_name: str | None) -> bytes | None:
    """SHA-256 of the expected ``Authorization`` header, from the environment variable ``env_name``."""
    if env_name is None:
        return None
    key = os.environ.get(env_name, "")
    if not key.strip():
        raise ServeSetupError(
            f"--api_key_env {env_name}: the environment variable {env_name} is not set or empty: export "
            f"{env_name}=<key> before starting the server, or drop --api_key_env"
        )
    return hashlib.sha256(f"Bearer {key}".encode()).digest()


def serving_defaults(inference: InferenceArguments) -> InferenceArguments:
    """``inference`` with serve's own default where it differs from predict's (see SERVE_CPU_BATCH_TOKENS)."""
    if inference.max_batch_tokens is None and resolve_device(inference.device).type == "cpu":
        return dataclasses.replace(inference, max_batch_tokens=SERVE_CPU_BATCH_TOKENS)
    return inference


class Service:
    """One app's model, batcher, limits, readiness and metrics (see the module docstring)."""

    def __init__(
        self,
        inference: InferenceArguments | None,
        settings: ServeArguments,
        predictor: ChunkedPredictor | None = None,
        on_fatal: OnFatal | None = None,
    ) -> None:
        if inference is None and predictor is None:
            raise ServeSetupError("create_app needs the model: pass InferenceArguments(model=...) or a predictor")
        self.inference = inference
        self.settings = settings
        self.predictor = predictor
        self.on_fatal = on_fatal
        self.key_digest = api_key_digest(settings.api_key_env)
        self.model: ServedModel | None = None
        self.batcher: Batcher | None = None
        self.failed: BaseException | None = None
        self.stopping = False
        self.admission = Admission(settings.max_concurrent_requests, settings.max_queue_seconds)
        self.metrics = ServeMetrics(
            lambda: self.admission.requests,
            lambda: self.batcher.queued if self.batcher else 0,
            lambda: self.admission.texts,
            self.admission.wait_s,
        )
        self._tokenizer_thread: ThreadPoolExecutor | None = None

    @property
    def ready(self) -> bool:
        return self.batcher is not None and not self.stopping

    # -- life cycle

    def start_loading(self) -> None:
        """Load the model on a background thread (the app's lifespan startup); ``/health`` answers 503 meanwhile."""
        threading.Thread(target=self.load_or_report, name="hf-indosent-model-loader", daemon=True).start()

    def load_or_report(self) -> None:
        """:meth:`load`, and if it fails: ``/health`` says why, and ``on_fatal`` gets the error (else it is logged)."""
        try:
            self.load()
        except Exception as err:  # whatever loading raised: the service says it (503, log) instead of dying silently
            self.failed = err
            if self.on_fatal is not None:
                self.on_fatal(err)
            else:
                logger.error("hf-indosent serve: error: %s", describe(err))

    def load(self) -> None:
        """Load the model (unless a predictor was given), warm it up and start the batcher: the service is ready."""
        self._tokenizer_thread = ThreadPoolExecutor(1, thread_name_prefix="hf-indosent-tokenizer")
        if self.predictor is None:
            self.predictor = load_predictor(serving_defaults(self.inference))
        model_name = self.inference.model if self.inference else str(getattr(self.predictor, "model_path", ""))
        model = ServedModel(self.predictor, model_name, self.inference.revision if self.inference else None)
        model.warm_up()
        self.model = model
        batcher = Batcher(
            self._run_model,
            max_batch_tokens=model.max_batch_tokens,
            max_wait_s=self.settings.max_wait_ms / 1000,
            max_pass_texts=model.max_pass_texts or DEFAULT_PASS_TEXTS,
            observe_batch=self.observe_pass,
        )
        batcher.start()
        self.batcher = batcher
        logger.info("model %s ready (%s); answering /predict", model.model, model.info()["backend"])

    def observe_pass(self, texts: int, tokens: int, seconds: float) -> None:
        """One forward pass (the batcher's ``observe_batch``): its metrics, and the model's speed for admission."""
        self.metrics.batch(texts, tokens, seconds)
        self.admission.observe(texts, seconds)

    def stop(self) -> None:
        """Refuse new work and stop the threads (the app's lifespan shutdown, after the server drained)."""
        self.stopping = True
        if self.batcher is not None:
            self.batcher.stop(timeout=self.settings.graceful_timeout)
        if self._tokenizer_thread is not None:
            self._tokenizer_thread.shutdown(wait=False, cancel_futures=True)

    def unhealthy(self) -> RequestError:
        if self.stopping:
            reason = "the server is shutting down"
        elif self.failed is not None:
            reason = f"the model failed to load: {describe(self.failed)}"
        else:
            reason = "the model is loading: retry when /health answers 200"
        return RequestError("Unhealthy", reason)

    # -- requests

    def authorized(self, scope: Scope) -> bool:
        if self.key_digest is None or (scope["method"] in ("GET", "HEAD") and scope["path"] in PROBES):
            return True  # POST / is a prediction, not a probe
        given = dict(scope["headers"]).get(b"authorization", b"")
        return hmac.compare_digest(hashlib.sha256(given).digest(), self.key_digest)

    def _run_model(self, key: Hashable, texts: list[str]) -> Rows:
        return self.model.view(*key)(texts)

    async def predict(self, request: PredictRequest) -> tuple[Rows, dict[str, float]]:
        """Each text's row, through the tokenizer thread and the batcher; the seconds each stage took."""
        model, batcher = self.model, self.batcher
        key = (request.raw_scores, request.truncation_side)
        model.view(*key)  # 422 now, not in the batch, when this model cannot answer these options
        begin = time.perf_counter()
        lengths = await asyncio.get_running_loop().run_in_executor(
            self._tokenizer_thread, model.token_lengths, request.texts, request.truncate
        )
        tokenization_s = time.perf_counter() - begin
        job = batcher.submit(request.texts, lengths, key)
        rows = await asyncio.wrap_future(job.future)
        for index, row in enumerate(rows):
            if row["error"] is not None:
                raise RequestError("Tokenizer", f"inputs[{index}]: {row['error']}")
        timings = {"tokenization": tokenization_s, "queue": job.queue_s, "inference": job.inference_s}
        return rows, timings | {"tokens": job.tokens}

    async def answer_predict(self, request: Request) -> Response:
        """``POST /predict``: admission (503, 429), body, checks, rows, TEI's answer and timing headers."""
        started = time.perf_counter()
        if not self.ready:
            raise self.unhealthy()
        with self.admission.request():  # 429 at once when every text permit is taken, before the body is read
            body = await read_body(request, self.settings.payload_limit)
            parsed = parse_predict_request(
                body,
                max_client_batch_size=self.settings.max_client_batch_size,
                auto_truncate=self.settings.auto_truncate,
            )
            request.state.texts = len(parsed.texts)
            with self.admission.texts_of(len(parsed.texts)):  # all its permits or 429, never a wait
                rows, timings = await self.predict(parsed)
        answers = [text_answer(row) for row in rows]
        total_s = time.perf_counter() - started
        self.metrics.timings(total_s, timings["tokenization"], timings["queue"], timings["inference"])
        headers = {
            "x-compute-characters": str(sum(len(text) for text in parsed.texts)),
            "x-compute-tokens": str(int(timings["tokens"])),
            "x-total-time": str(round(total_s * 1000)),
            "x-tokenization-time": str(round(timings["tokenization"] * 1000)),
            "x-queue-time": str(round(timings["queue"] * 1000)),
            "x-inference-time": str(round(timings["inference"] * 1000)),
        }
        return JSONResponse(answers if parsed.batch else answers[0], headers=headers)

    def info(self) -> dict[str, Any]:
        """``GET /info``: the model's identity and labels, and every limit, in TEI's field names."""
        if self.model is None:
            raise self.unhealthy()
        settings = self.settings
        return self.model.info() | {
            "max_concurrent_requests": settings.max_concurrent_requests,
            "max_batch_requests": None,
            "max_client_batch_size": settings.max_client_batch_size,
            "max_wait_ms": settings.max_wait_ms,
            "max_queue_seconds": settings.max_queue_seconds,
            "payload_limit": settings.payload_limit,
            "auto_truncate": settings.auto_truncate,
            "tokenization_workers": 1,
            "version": hf_indosent.__version__,
            "sha": None,
            "docker_label": os.environ.get("DOCKER_LABEL"),
        }

    def log_request(self, scope: Scope, status: int, seconds: float) -> None:
        """Count a predict request in the metrics and write the access-log line of any request."""
        state = scope.get("state", {})
        error_type = state.get("error_type") or (None if status < 400 else HTTP_ERROR_TYPES.get(status, str(status)))
        if scope["method"] == "POST" and scope["path"] in PREDICT_ROUTES:
            self.metrics.request(error_type)
        if self.settings.access_log:
            client = scope.get("client")
            line = {
                "client": f"{client[0]}:{client[1]}" if client else None,
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "ms": round(seconds * 1000, 2),
                "texts": state.get("texts"),
                "error_type": error_type,
            }
            access_logger.info(json.dumps(line))


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes, never read whole first."""
    too_large = RequestError(
        "Validation", f"the request body is larger than {limit} bytes (--payload_limit): send fewer or shorter texts"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


class Gate:
    """ASGI middleware around every HTTP request: the API key (401) and the access-log line with its status."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500
        state = scope.setdefault("state", {})

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if self.service.authorized(scope):
                await self.app(scope, receive, send_status)
            else:
                refusal = RequestError("Unauthorized", "missing or wrong API key: send Authorization: Bearer <key>")
                state["error_type"] = refusal.error_type
                response = JSONResponse(refusal.body(), refusal.status, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send_status)
        finally:
            self.service.log_request(scope, status, time.perf_counter() - started)


def create_app(
    inference: InferenceArguments | None = None,
    settings: ServeArguments | None = None,
    *,
    predictor: ChunkedPredictor | None = None,
    on_fatal: OnFatal | None = None,
    load_in_background: bool = True,
) -> FastAPI:
    """The service as a FastAPI app: the model ``inference`` names (loaded as ``predict`` loads it), or an already
    loaded ``predictor``; ``settings`` are ``hf-indosent serve``'s (defaults if None).

    The model loads when the app starts: on a background thread by default (``/health`` answers 503 until it is
    ready; ``on_fatal`` is called with the error if it fails, by default it is logged), or with
    ``load_in_background=False`` before startup completes, so the server accepts no connection before the model is
    ready (a ``--workers`` process, or a host such as Ray Serve that waits for startup before it routes requests);
    then a failed load goes to ``on_fatal``, or without it fails the startup."""
    service = Service(inference, settings or ServeArguments(), predictor, on_fatal)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if load_in_background:
            service.start_loading()
        else:
            await asyncio.to_thread(service.load if on_fatal is None else service.load_or_report)
        try:
            yield
        finally:
            await asyncio.to_thread(service.stop)  # joins the inference thread: off the event loop

    app = FastAPI(title="hf-indosent serve", version=hf_indosent.__version__, lifespan=lifespan)
    app.state.service = service
    app.add_middleware(Gate, service=service)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError) -> JSONResponse:
        request.state.error_type = error.error_type
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        error_type = HTTP_ERROR_TYPES.get(error.status_code, str(error.status_code))
        body = {"error": f"{error.detail}: {request.method} {request.url.path}", "error_type": error_type}
        return JSONResponse(body, status_code=error.status_code, headers=getattr(error, "headers", None))

    async def predict(request: Request) -> Response:
        return await service.answer_predict(request)

    for path in sorted(PREDICT_ROUTES, reverse=True):
        app.add_api_route(path, predict, methods=["POST"], include_in_schema=path == "/predict")

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return service.info()

    async def health() -> Response:
        if not service.ready:
            raise service.unhealthy()
        return Response(status_code=200)

    for path in sorted(PROBES):
        app.add_api_route(path, health, methods=["GET"], include_in_schema=path == "/health")

    @app.get("/metrics")
    async def metrics() -> Response:
        if not service.metrics.available:
            raise RequestError("NotImplemented", f"metrics need prometheus_client: {INSTALL_HINT}")
        content, content_type = service.metrics.render()
        return Response(content, media_type=content_type)

    return app
