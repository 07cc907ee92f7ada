# syntax=docker/dockerfile:1
#
# comfyui-worker: the LittleHorse task worker that runs ComfyUI workflows.
# One container drives one ComfyUI; scale out with more worker+ComfyUI pairs.
#
#   docker build -t comfyui-worker .
#   docker run --rm -e COMFYUI_BASE_URL=... -e COMFYUI_OUTPUT_DIR=/data/outputs \
#       -e LHC_API_HOST=... comfyui-worker            # worker (default)
#   docker run --rm ... comfyui-worker register        # TaskDef + WfSpec, then exit
#   docker run --rm ... comfyui-worker check           # settings / ComfyUI / output dir

# Same base in both stages: the venv's interpreter symlinks must resolve at run time.
ARG PYTHON_IMAGE=python:3.11.15-slim-bookworm

# ---------------------------------------------------------------------------
# Build stage: resolve dependencies from uv.lock into /app/.venv
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

# uv pinned to the version that writes this repo's uv.lock.
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /uvx /bin/

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /app

# Only the lock and the project file: this layer is rebuilt only when they change.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

# ---------------------------------------------------------------------------
# Runtime stage: the venv, the source, a non-root user; no uv, no compilers
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# The uid/gid own COMFYUI_OUTPUT_DIR: consumers of the outputs volume (or a bind
# mount's host directory) must be able to read files written by this uid.
ARG APP_UID=10001
ARG APP_GID=10001

RUN groupadd --system --gid "${APP_GID}" app \
    && useradd --system --uid "${APP_UID}" --gid app --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin app \
    && mkdir -p /data/outputs \
    && chown app:app /data/outputs

ENV PATH="/app/.venv/bin:${PATH}" \
    VIRTUAL_ENV=/app/.venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    COMFYUI_OUTPUT_DIR=/data/outputs \
    COMFYUI_WORKFLOWS_DIR=/app/workflows \
    WORKER_HTTP_PORT=8089 \
    WORKER_LOG_FORMAT=json

WORKDIR /app

COPY --from=build /app/.venv /app/.venv
COPY main.py ./
COPY comfyui_worker/ ./comfyui_worker/
COPY workflows/ ./workflows/

# An empty named volume mounted at /data/outputs takes this directory's owner
# (app), so the worker can write there without running as root.
USER app

# /healthz (liveness), /readyz (ComfyUI + LittleHorse reachable), /metrics.
EXPOSE 8089

# No curl in slim images: probe with the interpreter that is already here.
# Only `worker` serves HTTP; one-shot commands (register, check, run) exit first.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8089/healthz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["python", "main.py"]
CMD ["worker"]
