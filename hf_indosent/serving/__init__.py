"""Serving: ``hf-indosent serve``, a text-embeddings-inference compatible HTTP service for a trained model.

- :mod:`~hf_indosent.serving.arguments`: the command's options (light, no torch).
- :mod:`~hf_indosent.serving.protocol`: TEI's request and response shapes and its error statuses.
- :mod:`~hf_indosent.serving.model`: the loaded :class:`~hf_indosent.inference.predictor.Predictor` the service calls.
- :mod:`~hf_indosent.serving.batcher`: dynamic batching of concurrent requests' texts into model calls.
- :mod:`~hf_indosent.serving.metrics`: Prometheus metrics.
- :mod:`~hf_indosent.serving.app`: the ASGI app, ``create_app(...)``, to mount in any ASGI server.
- :mod:`~hf_indosent.serving.server`: the command: uvicorn, workers, signals, start-up errors.
- :mod:`~hf_indosent.serving.ray_deployment`: the same app as a Ray Serve deployment (optional extra).

Imports only flow down this list; this package's ``__init__`` imports nothing, so parsing stays light.
"""
