# iris-service: the NumPy Iris classifier behind FastAPI/uvicorn.
#
#   docker build -t iris-service .
#   docker run -p 8000:8000 -v iris-data:/data -e IRIS_API_TOKEN=... iris-service
#
# BASE_IMAGE is any Debian-like image with python3 (3.11 or newer), its venv module and
# /bin/sh; both stages use it, so the venv's interpreter link is valid in the final image.
ARG BASE_IMAGE=python:3.12-slim

# ---- build: the project's wheel, nothing else --------------------------------------------
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY model/ model/
COPY service/ service/
# pip builds the wheel in an isolated environment that fetches hatchling itself.
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# ---- final: a venv with the wheel and its runtime dependencies ---------------------------
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="iris-service" \
      org.opencontainers.image.description="NumPy Iris classifier served over HTTP (FastAPI, uvicorn)" \
      org.opencontainers.image.licenses="MIT"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH

# A fixed numeric uid/gid, so a bind-mounted data directory can be chowned to match
# and orchestrators can check runAsNonRoot.
RUN groupadd --system --gid 10001 iris \
    && useradd --system --no-log-init --uid 10001 --gid iris \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin iris \
    && mkdir -p /data \
    && chown iris:iris /data \
    && chmod 0750 /data

COPY --from=build /dist/ /tmp/dist/
# pip (and the setuptools that Python 3.11's venv adds) only install; removing them leaves a
# smaller venv that cannot fetch code. Uninstalling a package that is absent is a no-op.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir /tmp/dist/*.whl \
    && /opt/venv/bin/pip uninstall --yes --quiet setuptools pip \
    && rm -rf /tmp/dist

ENV IRIS_HOST=0.0.0.0 \
    IRIS_PORT=8000 \
    IRIS_GRPC_PORT=8001 \
    IRIS_DATA_DIR=/data
VOLUME ["/data"]
# HTTP, and the Open Inference Protocol over gRPC
EXPOSE 8000 8001
USER 10001:10001

# The standard library only: slim images have no curl. Any non-2xx or refused connection
# raises, which makes the exit status 1.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('IRIS_PORT', '8000'), timeout=2)"]

# Exec form: iris-serve is PID 1 and receives SIGTERM itself, then drains and exits.
CMD ["iris-serve"]
