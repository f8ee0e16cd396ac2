"""``hf-indosent serve``: start-up checks, the listening socket, uvicorn with one or N processes, a graceful stop.

Every start-up mistake is found before anything is served and raised as one ValueError/OSError line that the CLI
runner prints with exit code 1: a model folder that is incomplete or has no files for ``--backend`` (checked from its
files, before torch loads anything), a GPU with ``--workers`` > 1, an unset ``--api_key_env`` variable, a port in use,
a host that is not this machine's. The socket is bound here, so ``--port 0`` picks a free port and the log says which.

The model then loads in the background while the port answers ``/health`` with 503; a model that fails to load stops
the server with its one-line error (exit 1). SIGTERM or SIGINT (through :mod:`hf_indosent.core.stopping`, as every
command) stops accepting connections, lets the requests in flight finish within ``--graceful_timeout``, and exits 0.

``--workers N`` runs N uvicorn processes on the same socket (uvicorn's supervisor: a worker that dies is replaced,
one that cannot load the model stops them all), each with ``cores / N`` torch threads and its own model; a worker
accepts connections once its model is ready, so none answers 503 while the others serve.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import socket
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from hf_indosent.core import stopping
from hf_indosent.core.errors import describe
from hf_indosent.inference.arguments import InferenceArguments
from hf_indosent.inference.predictor import resolve_backend, resolve_device
from hf_indosent.modeling.devices import usable_cpu_cores
from hf_indosent.modeling.folders import baseline_folder
from hf_indosent.serving.app import ServeSetupError, api_key_digest, create_app
from hf_indosent.serving.arguments import ServeArguments

logger = logging.getLogger(__name__)

SETTINGS_ENV = "HF_INDOSENT_SERVE_SETTINGS"
"""How the parent hands a ``--workers`` process its settings (JSON of both dataclasses; never the API key)."""


class AddressInUseError(OSError):
    """The port is taken; the message names it and the fix."""


def check_start(inference: InferenceArguments, settings: ServeArguments) -> None:
    """What can be refused before binding a port or loading a model (see the module docstring)."""
    api_key_digest(settings.api_key_env)
    if baseline_folder(inference.model) is None:
        resolve_backend(inference.model, inference.backend, inference.device)
    if settings.workers > 1 and resolve_device(inference.device).type == "cuda":
        raise ServeSetupError(
            f"--workers {settings.workers} on a GPU would load the model {settings.workers} times on one device: use "
            "--workers 1 (its batcher keeps the GPU busy) and one replica per GPU"
        )


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not listening yet), or the one-line reason it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT may be reused, a taken one never
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise AddressInUseError(
                f"{host}:{port} is already in use (another server?): pass another --port, or stop what listens there"
            ) from None
        if err.errno == errno.EACCES:
            raise ServeSetupError(f"--port {port} needs administrator rights (below 1024): use e.g. 8080") from None
        raise ServeSetupError(
            f"--host {host!r} cannot be listened on here ({err.strerror or err}): use 127.0.0.1 (this machine) or "
            "0.0.0.0 (every network)"
        ) from None
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app: FastAPI | str, settings: ServeArguments, **options: Any) -> uvicorn.Config:
    """uvicorn as this command runs it: the project's logging (one line per event), its own access log, the drain."""
    return uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=settings.graceful_timeout,
        workers=settings.workers,
        **options,
    )


def serve_one(inference: InferenceArguments, settings: ServeArguments, sock: socket.socket) -> int:
    """One process: uvicorn on ``sock``; a failed model load stops it and is raised here."""
    failures: list[BaseException] = []

    def stop_on_failure(err: BaseException) -> None:
        failures.append(err)
        server.should_exit = True

    server = uvicorn.Server(uvicorn_config(create_app(inference, settings, on_fatal=stop_on_failure), settings))
    with stopping.handled(server.handle_exit):  # SIGHUP too; uvicorn itself answers SIGINT and SIGTERM
        server.run(sockets=[sock])
    if failures:
        raise failures[0]
    return 0


def serve_many(inference: InferenceArguments, settings: ServeArguments, sock: socket.socket) -> int:
    """``--workers N``: uvicorn's supervisor runs :func:`worker_app` in N processes sharing ``sock``."""
    os.environ[SETTINGS_ENV] = json.dumps(
        {"inference": dataclasses.asdict(inference), "serve": dataclasses.asdict(settings)}
    )
    config = uvicorn_config(f"{__name__}:worker_app", settings, factory=True)
    with stopping.handled(lambda signum, frame: None):  # the supervisor sets its own; the previous ones come back
        supervisor = Multiprocess(config, sockets=[sock])
        supervisor.run()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        raise ServeSetupError("a worker could not load the model (its error is above): fix it and start again")
    return 0


def worker_app() -> FastAPI:
    """The app of one ``--workers`` process (uvicorn's factory), from the settings its parent put in the environment."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = json.loads(os.environ[SETTINGS_ENV])
    inference, serve = InferenceArguments(**settings["inference"]), ServeArguments(**settings["serve"])
    torch.set_num_threads(max(1, usable_cpu_cores() // serve.workers))
    # each process accepts connections only once its model is ready: none answers 503 while the others serve
    return create_app(inference, serve, on_fatal=exit_worker, load_in_background=False)


def exit_worker(err: BaseException) -> None:
    """A worker whose model cannot load: say why in one line and exit as uvicorn's failed start, which stops all."""
    logger.error("hf-indosent serve: error: %s", describe(err))
    os._exit(STARTUP_FAILURE)


def cli_run(inference: InferenceArguments, settings: ServeArguments) -> int:
    """``hf-indosent serve`` after argument parsing (errors are turned into one line by :mod:`hf_indosent.cli`)."""
    check_start(inference, settings)
    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    logger.info(
        "hf-indosent serve: listening on http://%s:%d with %d worker(s); %s loads now, /health answers 200 when ready",
        host if ":" not in host else f"[{host}]",
        port,
        settings.workers,
        inference.model,
    )
    with sock:
        if settings.workers == 1:
            return serve_one(inference, settings, sock)
        return serve_many(inference, settings, sock)
