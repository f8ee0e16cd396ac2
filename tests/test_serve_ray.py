"""The serving app as a Ray Serve deployment on a local Ray instance this test starts (loopback only, 2 CPUs)."""

from __future__ import annotations

import os
import socket

import pytest

pytest.importorskip("ray.serve", reason="Ray Serve is not installed (optional extra: pip install -e '.[ray]')")
httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def ray_on_loopback(monkeypatch):
    """Ray and Serve on this machine only, no usage reporting, torn down after the test."""
    import ray
    from ray import serve

    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield port
    finally:
        serve.shutdown()
        ray.shutdown()


def test_ray_serve_deployment_answers_like_the_predictor(ray_on_loopback, tiny_classifier_dir):
    from ray import serve

    from hf_indosent.inference.arguments import InferenceArguments
    from hf_indosent.inference.predictor import Predictor
    from hf_indosent.serving.arguments import ServeArguments
    from hf_indosent.serving.ray_deployment import app_builder, deployment

    texts = ["makanan nya enak sekali", "pelayanan nya lambat dan kasar"]
    inference = InferenceArguments(model=str(tiny_classifier_dir), backend="torch")
    settings = ServeArguments(max_concurrent_requests=8, max_client_batch_size=8)
    serve.run(deployment(inference, settings), name="sentiment", route_prefix="/")
    base = f"http://127.0.0.1:{ray_on_loopback}"
    with httpx.Client(base_url=base, timeout=30) as client:
        assert client.get("/health").status_code == 200  # a replica is routed to only once its model is ready
        answer = client.post("/predict", json={"inputs": [[text] for text in texts]})
        info = client.get("/info").json()
    assert answer.status_code == 200
    expected = Predictor(tiny_classifier_dir, backend="torch")(texts)
    assert [rows[0]["label"] for rows in answer.json()] == [row["label"] for row in expected]
    assert info["max_concurrent_requests"] == 8
    assert os.environ.get("RAY_USAGE_STATS_ENABLED") == "0"

    # the `serve run module:app_builder key=value` entry point reads options as the command line does
    built = app_builder({"model": str(tiny_classifier_dir), "max_client_batch_size": "4", "min_replicas": "1"})
    assert built is not None
    with pytest.raises(ValueError, match="port: Ray Serve decides"):
        app_builder({"model": str(tiny_classifier_dir), "port": "80"})
