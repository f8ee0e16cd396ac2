"""The service on a Ray cluster: the same app (:func:`~hf_indosent.serving.app.create_app`) as a Ray Serve deployment.

Ray Serve (optional extra ``ray``: ``pip install -e ".[ray]"``) runs the app in replicas, routes HTTP to them through
its proxies, and adds or removes replicas with the load. Each replica is the whole service, dynamic batcher and
limits included, so batching happens where the model is; Ray's own ``@serve.batch`` would be a second batcher.
From the command line::

    serve run hf_indosent.serving.ray_deployment:app_builder model=outputs/run/best backend=onnx-int8 \\
        min_replicas=1 max_replicas=4

Any ``hf-indosent serve`` option (``InferenceArguments`` and ``ServeArguments`` names) may be given; ``host``,
``port`` and ``workers`` are Ray's business there (``serve run``'s own options), and ``num_replicas`` or the
autoscaling triple ``min_replicas``/``max_replicas``/``target_ongoing_requests`` set the replicas. A replica loads its
model before it reports ready, so Ray routes no request to a replica still loading, and one whose model fails to
load fails to start (Ray says why and retries it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hf_indosent.core.arguments import parse_args
from hf_indosent.inference.arguments import InferenceArguments
from hf_indosent.serving.arguments import ServeArguments

try:
    from ray import serve
    from ray.serve import Application
except ModuleNotFoundError:
    raise ImportError('the Ray Serve deployment needs Ray Serve: pip install -e ".[ray]"') from None

REPLICA_OPTIONS = ("num_replicas", "min_replicas", "max_replicas", "target_ongoing_requests")
NOT_FOR_RAY = ("host", "port", "workers")
"""``hf-indosent serve`` options that Ray decides instead (its proxies listen; its replicas are the workers)."""


@serve.ingress()
class SentimentService:
    """One replica: builds the app when Ray starts it (``__serve_build_asgi_app__``), from plain option dicts."""

    def __init__(self, inference: dict[str, Any], settings: dict[str, Any]) -> None:
        self.inference = InferenceArguments(**inference)
        self.settings = ServeArguments(**settings)

    def __serve_build_asgi_app__(self) -> Any:
        from hf_indosent.serving.app import create_app  # torch and the model: in the replica, not the driver

        return create_app(self.inference, self.settings, load_in_background=False)


def deployment(
    inference: InferenceArguments,
    settings: ServeArguments | None = None,
    *,
    num_replicas: int | None = None,
    autoscaling_config: dict[str, Any] | None = None,
    ray_actor_options: dict[str, Any] | None = None,
) -> Application:
    """The service as a Ray Serve application, for ``serve.run(...)``.

    ``num_replicas`` fixes the replicas (default 1), or ``autoscaling_config`` lets Ray scale them (e.g.
    ``{"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 64}``). Ray sends a replica at most
    ``settings.max_concurrent_requests`` requests at once, so the replica's batcher sees them all, and queues the
    rest in its proxies; the replica's own limit counts texts, so client batches beyond it get 429 there.
    """
    settings = settings or ServeArguments()
    options: dict[str, Any] = {
        "name": "hf-indosent",
        "max_ongoing_requests": settings.max_concurrent_requests,
        "ray_actor_options": ray_actor_options or {"num_cpus": 1},
    }
    if autoscaling_config is not None:
        options["autoscaling_config"] = autoscaling_config
    else:
        options["num_replicas"] = num_replicas or 1
    replica = serve.deployment(**options)(SentimentService)
    return replica.bind(dataclasses.asdict(inference), dataclasses.asdict(settings))


def app_builder(args: dict[str, Any]) -> Application:
    """``serve run hf_indosent.serving.ray_deployment:app_builder model=... key=value ...`` (see module docstring);
    the options are read by the parser every command uses, so values, types and checks are ``hf-indosent serve``'s."""
    options = dict(args)
    ignored = sorted(name for name in NOT_FOR_RAY if name in options)
    if ignored:
        raise ValueError(f"{', '.join(ignored)}: Ray Serve decides these (see serve run --help); drop them")
    replicas = {name: int(options.pop(name)) for name in REPLICA_OPTIONS if name in options}
    argv = [item for name, value in options.items() for item in (f"--{name}", str(value))]
    inference, settings = parse_args([InferenceArguments, ServeArguments], argv, prog="hf_indosent ray deployment")
    autoscaling = {name: value for name, value in replicas.items() if name != "num_replicas"}
    return deployment(
        inference, settings, num_replicas=replicas.get("num_replicas"), autoscaling_config=autoscaling or None
    )
