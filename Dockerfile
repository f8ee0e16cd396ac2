# hf-indosent serve in a container: one model, one port, no state, so an orchestrator (Kubernetes, ECS, Nomad,
# docker compose) runs as many replicas as the load needs behind its load balancer. See docs/serving.md.
#
#   docker build -t hf-indosent-serve .
#   docker run --rm -p 8080:8080 -v "$PWD/outputs/smsa-minilm-offline/best:/model:ro" hf-indosent-serve
#   docker run --rm -p 8080:8080 -e SERVE_KEY=... -v ...:/model:ro hf-indosent-serve --api_key_env SERVE_KEY
#
# The model is mounted (or baked in by a derived image: COPY best/ /model), never downloaded at start: replicas come
# up fast, offline, and all serve the same files. An ONNX export folder (hf-indosent export) runs with ONNX Runtime.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false

WORKDIR /app
# torch first, from its CPU index: otherwise pip pulls a multi-GB CUDA build (see docs/install.md)
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY hf_indosent ./hf_indosent
RUN pip install ".[serve,onnx]"

# no root inside: the server needs no privilege, and the model is mounted read-only
RUN useradd --create-home --uid 10001 serve
USER serve

EXPOSE 8080
# 200 once the model is loaded and warmed up, 503 before and while draining
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2)"]

# exec form: the server is PID 1 and gets SIGTERM itself, finishes the requests in flight, exits 0. Keep
# --graceful_timeout below the orchestrator's grace period (Kubernetes: terminationGracePeriodSeconds, default 30).
ENTRYPOINT ["hf-indosent", "serve", "--model", "/model", "--host", "0.0.0.0", "--port", "8080"]
CMD ["--graceful_timeout", "20"]
