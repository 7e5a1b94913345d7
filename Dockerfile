# syntax=docker/dockerfile:1
#
# Two images from one Dockerfile (scripts/requirements.py picks each one's dependencies from pyproject.toml):
#   api:     the API alone: no TensorFlow, keras or keras-tuner, so it is small and starts at once
#     docker build --target api -t ktune:api .
#     docker run -p 127.0.0.1:8000:8000 -e KTUNE_REDIS_URL=redis://:PASSWORD@... ktune:api
#     docker run -e KTUNE_REDIS_URL=redis://... ktune:api python -m service keys create TENANT   an API key
#   worker (the default target): everything `pip install .` installs; runs a worker, or the API too
#     docker build -t ktune .
#     docker run -e KTUNE_REDIS_URL=redis://... ktune python -m worker -Q cpu -c 2
# The GPU worker differs only in its TensorFlow distribution (the CUDA libraries come as pip wheels):
#   docker build -t ktune:gpu --build-arg TF_PACKAGE="tensorflow[and-cuda]" .
#   docker run --gpus all -e KTUNE_REDIS_URL=redis://... ktune:gpu python -m worker -Q gpu -c 1

# ---- base: what both images share -----------------------------------------------------------------------
FROM python:3.11-slim AS base

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    KTUNE_HOST=0.0.0.0 \
    KTUNE_ARTIFACT_DIR=/data/artifacts

# An unprivileged user owning the artifact directory; a new named volume mounted there inherits the owner.
RUN groupadd --system --gid 10001 ktune \
 && useradd --system --uid 10001 --gid ktune --create-home --home-dir /home/ktune \
        --shell /usr/sbin/nologin ktune \
 && mkdir -p /data/artifacts \
 && chown -R ktune:ktune /data

WORKDIR /opt/ktune
# The dependency lists come from these two files only, so the dependency layers below are rebuilt when
# they change, not on code edits.
COPY pyproject.toml scripts/requirements.py ./

# ---- api: the API's dependencies (tool.ktune.api-dependencies), then the project without its own --------
FROM base AS api

RUN --mount=type=cache,target=/root/.cache/pip \
    python requirements.py api > /tmp/requirements.txt \
 && cat /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# The project itself (worker/ too: one distribution; the API never imports it). --no-deps: pyproject's
# full list would bring TensorFlow.
COPY README.md ./
COPY service ./service
COPY worker ./worker
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps . \
 && rm -rf build ./*.egg-info

USER ktune
# Not the source tree, so `python -m` imports the installed packages.
WORKDIR /home/ktune

EXPOSE 8000
# No HEALTHCHECK here or below: docker-compose.yml checks each service its own way.
CMD ["python", "-m", "service"]

# ---- worker: every dependency, TF_PACKAGE's TensorFlow in place of plain `tensorflow` -------------------
FROM base AS worker

# The TensorFlow distribution to install in place of the plain `tensorflow` requirement of pyproject.toml,
# with the version range pyproject.toml gives it (so that range is written in one place only).
ARG TF_PACKAGE=tensorflow

RUN --mount=type=cache,target=/root/.cache/pip \
    python requirements.py worker --tf-package "$TF_PACKAGE" > /tmp/requirements.txt \
 && cat /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# The project itself; its dependencies, TF_PACKAGE's TensorFlow included, are already installed.
COPY README.md ./
COPY service ./service
COPY worker ./worker
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps . \
 && rm -rf build ./*.egg-info

USER ktune
WORKDIR /home/ktune

# The complete install: a worker by default (docker-compose.yml names each command), the API on request.
CMD ["python", "-m", "worker"]
