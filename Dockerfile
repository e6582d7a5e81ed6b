# syntax=docker/dockerfile:1
# kproxy's container image. Build from the repository root:
#   docker build -t kproxy:0.1.0 .
# The first stage builds wheels for kproxy and every dependency at the versions pinned
# in constraints.txt; the second installs them into a virtual environment on a clean
# slim image, without a compiler, pip's cache or the sources. The ``fast`` extra adds
# uvloop, which ``kproxy serve`` runs on when it is installed.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheels
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY kproxy ./kproxy
RUN pip wheel --wheel-dir /wheels --constraint constraints.txt ".[fast]"

FROM ${PYTHON_IMAGE}
# Nothing may write next to the code: the root filesystem is read-only at run time and
# bytecode was compiled when the wheels were installed.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/kproxy/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    python -m venv /opt/kproxy \
    && /opt/kproxy/bin/pip install --no-index --find-links /wheels "kproxy[fast]" \
    && mkdir -p /etc/kproxy/policies /etc/kproxy/tls
LABEL org.opencontainers.image.title="kproxy" \
      org.opencontainers.image.description="Authenticating, impersonating proxy in front of a Kubernetes API server" \
      org.opencontainers.image.licenses="Apache-2.0"
# A numeric user, so runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
WORKDIR /tmp
# 8443 serves the proxy (TLS), 8081 the probes and /metrics (plain HTTP).
EXPOSE 8443 8081
ENTRYPOINT ["kproxy"]
CMD ["serve", "--config", "/etc/kproxy/config.yaml"]
