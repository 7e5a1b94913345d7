# syntax=docker/dockerfile:1
#
# One image for the API and the workers:
#   API (default):  docker run -p 127.0.0.1:8000:8000 -e KTUNE_REDIS_URL=redis://:PASSWORD@... ktune
#   CPU worker:     docker run -e KTUNE_REDIS_URL=redis://... ktune python -m worker -Q cpu -c 2
#   an API key:     docker run -e KTUNE_REDIS_URL=redis://... ktune python -m service keys create TENANT
# The GPU image differs only in its TensorFlow distribution (the CUDA libraries come as pip wheels):
#   docker build -t ktune:gpu --build-arg TF_PACKAGE="tensorflow[and-cuda]" .
#   docker run --gpus all -e KTUNE_REDIS_URL=redis://... ktune:gpu python -m worker -Q gpu -c 1
FROM python:3.11-slim

# The TensorFlow distribution to install in place of the plain `tensorflow` requirement of pyproject.toml,
# with the version range pyproject.toml gives it (so that range is written in one place only).
ARG TF_PACKAGE=tensorflow

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

# Dependencies first, in a layer rebuilt only when pyproject.toml or TF_PACKAGE change (not on code edits).
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip <<'EOF'
set -eu
python - "$TF_PACKAGE" > /tmp/requirements.txt <<'PY'
import re
import sys
import tomllib

tf_package = sys.argv[1]
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
pattern = re.compile(r"^tensorflow(?![\w.-])")  # `tensorflow`, not `tensorflow-cpu` or similar
if not any(pattern.match(dep) for dep in deps):
    sys.exit("pyproject.toml has no `tensorflow` dependency for TF_PACKAGE to replace")
for dep in deps:
    print(pattern.sub(lambda _: tf_package, dep))
PY
cat /tmp/requirements.txt
pip install -r /tmp/requirements.txt
EOF

# The project itself; its dependencies, TF_PACKAGE's TensorFlow included, are already installed.
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
# No HEALTHCHECK here: the workers run this image too and serve no HTTP (docker-compose.yml checks the API).
CMD ["python", "-m", "service"]
