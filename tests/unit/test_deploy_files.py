"""The deployment files (Dockerfile, .dockerignore, docker-compose.yml, .env.example) must agree with the
code they run.

No Docker needed: the files are parsed, and every expectation is derived from the code (settings fields,
queue names, routes, `python -m worker` argument handling, pyproject.toml) rather than written down twice.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest
import redis.connection
import yaml
from kombu.utils.url import url_to_parts
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from pydantic_settings import BaseSettings

from service.api import routes_health
from service.core.queue import QUEUES
from service.core.settings import Limits, Settings
from worker.__main__ import worker_argv

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"

CPU_QUEUE = "cpu"  # the queue of jobs without an accelerator, consumed by worker-cpu
GPU_QUEUE = "gpu"  # the queue of jobs asking for a GPU, consumed by worker-gpu


# --- the settings the code reads ------------------------------------------------------------------------


def _env_prefix(model: type[BaseSettings]) -> str:
    return str(model.model_config.get("env_prefix", "")).upper()


def _env_names(model: type[BaseSettings]) -> set[str]:
    """The environment variables a settings model reads, nested settings models included."""
    names = set()
    for name, field in model.model_fields.items():
        names.add(f"{_env_prefix(model)}{name}".upper())
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseSettings):
            names |= _env_names(annotation)
    return names


SETTINGS_ENV = _env_names(Settings) | _env_names(Limits)
# Variables that look like ours: the documented KTUNE_ prefix, and whatever prefix the models really use.
OUR_PREFIXES = ("KTUNE_", _env_prefix(Settings), _env_prefix(Limits))


def _ours(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.upper().startswith(OUR_PREFIXES)}


def _settings_from(env: dict[str, str]) -> Settings:
    """The settings a process gets with exactly these KTUNE_* variables in its environment."""
    clean = {k: v for k, v in os.environ.items() if k not in _ours(dict(os.environ))}
    with mock.patch.dict(os.environ, {**clean, **env}, clear=True):
        return Settings()


# --- docker-compose.yml ---------------------------------------------------------------------------------


class MissingVariable(ValueError):
    """What `docker compose` stops with when a `${NAME:?message}` variable is unset or empty."""


_VARIABLE = re.compile(r"\$(?:(\$)|\{(\w+)(?:(:?[-?+])([^}]*))?\}|(\w+))")


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """The compose file as `docker compose` reads it with these variables (from `.env` or the shell):
    `$$`, `$NAME`, `${NAME}`, `${NAME:-default}`, `${NAME:?error}`, `${NAME:+alternative}` and their forms
    without `:` (which treat an empty value as set)."""
    if isinstance(value, dict):
        return {key: _interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        name, operator, argument = match.group(2) or match.group(5), match.group(3), match.group(4) or ""
        current = env.get(name)
        unset = current is None or (operator is not None and operator.startswith(":") and current == "")
        if operator in (":-", "-"):
            return argument if unset else str(current)
        if operator in (":?", "?"):
            if unset:
                raise MissingVariable(f"required variable {name} is missing a value: {argument}")
            return str(current)
        if operator in (":+", "+"):
            return "" if unset else argument
        return current or ""

    return _VARIABLE.sub(substitute, value)


RAW_COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
# The compose variables as a `.env` made from .env.example sets them: the password, every other one unset.
REDIS_PASSWORD = "0123456789abcdef0123456789abcdef"
COMPOSE_ENV = {"KTUNE_REDIS_PASSWORD": REDIS_PASSWORD}
COMPOSE: dict[str, Any] = _interpolate(RAW_COMPOSE, COMPOSE_ENV)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume of a service, short or long syntax."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            mounts.append((str(volume.get("source", "")), str(volume["target"])))
        else:
            source, _, rest = str(volume).partition(":")
            mounts.append((source, rest.split(":")[0]) if rest else ("", source))
    return mounts


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Service name -> condition."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def _build_target(service: dict[str, Any]) -> str | None:
    """The Dockerfile stage a service's image is built from; None: the last (Docker's default)."""
    build = service.get("build")
    return build.get("target") if isinstance(build, dict) else None


def _queues(command: list[str]) -> set[str]:
    """The queues a `python -m worker ...` command consumes, after worker_argv fills in its defaults."""
    argv = worker_argv(command[3:], concurrency=1)
    queues: set[str] = set()
    for i, arg in enumerate(argv):
        if arg in ("-Q", "--queues"):
            queues.update(argv[i + 1].split(","))
        elif arg.startswith("--queues="):
            queues.update(arg.split("=", 1)[1].split(","))
        elif arg.startswith("-Q") and len(arg) > 2:
            queues.update(arg[2:].split(","))
    return queues


REDIS_NAME = next(name for name, svc in SERVICES.items() if str(svc.get("image", "")).startswith("redis"))
REDIS = SERVICES[REDIS_NAME]
# The services that run ktune's own images (not Redis, nor the optional Flower).
KTUNE_SERVICES = {
    name: svc for name, svc in SERVICES.items() if str(svc.get("image", "")).startswith("ktune")
}
FLOWER = SERVICES["flower"]
WORKERS = {name: svc for name, svc in SERVICES.items() if _command(svc)[:3] == ["python", "-m", "worker"]}


# --- Dockerfile and .dockerignore -----------------------------------------------------------------------


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: continuation lines joined, heredoc bodies appended."""
    lines = iter(text.splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\"):
            line = line[:-1] + " " + next(lines, "")
        for terminator in re.findall(r"<<-?['\"]?(\w+)['\"]?", line):
            body = []
            for body_line in lines:
                if body_line.strip() == terminator:
                    break
                body.append(body_line)
            line += "\n" + "\n".join(body)
        keyword, _, args = line.strip().partition(" ")
        yield keyword.upper(), args.strip()


DOCKER = list(_instructions(DOCKERFILE.read_text()))


def _docker(keyword: str, instructions: list[tuple[str, str]] = DOCKER) -> list[str]:
    return [args for kw, args in instructions if kw == keyword]


def _stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions, FROM first; in the Dockerfile's order (the last is the default)."""
    stages: dict[str, list[tuple[str, str]]] = {}
    for keyword, args in DOCKER:
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else f"stage{len(stages)}"
            stages[name] = []
        stages[name].append((keyword, args))
    return stages


STAGES = _stages()
API_TARGET, WORKER_TARGET = "api", "worker"


def _stage_chain(name: str) -> list[tuple[str, str]]:
    """A stage's instructions after those of the stages it is built FROM."""
    base = STAGES[name][0][1].split()[0]
    return (_stage_chain(base) if base in STAGES else []) + STAGES[name]


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in _docker("ENV"):
        for token in shlex.split(args):
            key, _, value = token.partition("=")
            env[key] = value
    return env


def _dockerfile_args() -> dict[str, str]:
    return dict(arg.partition("=")[::2] for arg in _docker("ARG"))


def _copied_sources() -> list[str]:
    sources = []
    for args in _docker("COPY"):
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        sources += [p.rstrip("/") for p in parts[:-1]]
    return sources


def _pattern_regex(pattern: str) -> str:
    """A .dockerignore pattern as a regex over whole paths (Go's filepath.Match, plus `**`)."""
    regex = ""
    for token in re.findall(r"\*\*/?|\*|\?|\[[^\]]*\]|[^*?\[]+", pattern):
        if token == "**/":
            regex += "(?:.*/)?"
        elif token == "**":
            regex += ".*"
        elif token == "*":
            regex += "[^/]*"
        elif token == "?":
            regex += "[^/]"
        elif token.startswith("["):
            regex += token.replace("[!", "[^")
        else:
            regex += re.escape(token)
    return regex


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore drops this context path: a match on the path or a parent directory excludes
    it, `!` re-includes, the last matching pattern wins."""
    ignored = False
    parts = path.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_regex(os.path.normpath(pattern.lstrip("!").strip("/")))
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


def _dockerignore() -> list[str]:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


# --- environment ----------------------------------------------------------------------------------------


def test_settings_are_derived_from_the_models() -> None:
    assert len(SETTINGS_ENV) >= len(Settings.model_fields) + len(Limits.model_fields) > 0
    assert _env_names(Limits) <= _env_names(Settings), "Settings no longer nests Limits"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_compose_ktune_variables_are_settings(name: str) -> None:
    env = _environment(SERVICES[name])
    unknown = set(_ours(env)) - SETTINGS_ENV
    assert not unknown, f"{name} sets {sorted(unknown)}, which no Settings/Limits field reads"
    _settings_from(env)  # and their values validate


def test_dockerfile_ktune_variables_are_settings() -> None:
    env = _dockerfile_env()
    unknown = set(_ours(env)) - SETTINGS_ENV
    assert not unknown, f"the Dockerfile sets {sorted(unknown)}, which no Settings/Limits field reads"
    _settings_from(_ours(env))


def _effective_settings(name: str) -> Settings:
    """A service's settings: the image's ENV, overridden by the compose environment."""
    env = {**_dockerfile_env(), **_environment(SERVICES[name])}
    return _settings_from(_ours(env))


# --- the API --------------------------------------------------------------------------------------------


def _container_port(mapping: Any) -> int:
    if isinstance(mapping, dict):
        return int(mapping["target"])
    return int(str(mapping).split("/")[0].rsplit(":", 1)[-1])


def test_api_runs_the_service_on_its_published_port() -> None:
    api = SERVICES["api"]
    assert _command(api) == ["python", "-m", "service"]
    settings = _effective_settings("api")
    assert settings.host == "0.0.0.0", "the API must listen on all interfaces to be reachable from outside"
    ports = [_container_port(mapping) for mapping in api.get("ports") or []]
    assert ports == [settings.port], f"api publishes {ports}, but listens on KTUNE_PORT={settings.port}"


def test_api_healthcheck_probes_a_health_route_on_its_port() -> None:
    test = SERVICES["api"]["healthcheck"]["test"]
    urls = re.findall(r"https?://[^'\"\s]+", " ".join(test) if isinstance(test, list) else test)
    assert urls, f"no URL in the api healthcheck {test!r}"
    url = urlsplit(urls[0])
    assert url.port == _effective_settings("api").port
    assert url.path in {route.path for route in routes_health.router.routes}


# --- workers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["worker-cpu", "worker-gpu"])
def test_worker_healthcheck_runs_the_heartbeat_check(name: str) -> None:
    test = SERVICES[name]["healthcheck"]["test"]
    assert test[:1] == ["CMD"] and test[1:] == ["python", "-m", "worker.health"], test
    assert (ROOT / "worker" / "health.py").is_file()


def test_workers_consume_known_queues() -> None:
    assert {"worker-cpu", "worker-gpu"} <= set(WORKERS)
    for name, service in WORKERS.items():
        queues = _queues(_command(service))
        assert queues, f"{name} consumes no queue"
        assert queues <= set(QUEUES), f"{name} consumes {sorted(queues)}; the code has queues {QUEUES}"


def test_cpu_worker_consumes_the_cpu_queue_only() -> None:
    assert CPU_QUEUE in QUEUES
    assert _queues(_command(SERVICES["worker-cpu"])) == {CPU_QUEUE}


def test_gpu_worker_consumes_the_gpu_queue() -> None:
    assert GPU_QUEUE in QUEUES
    assert GPU_QUEUE in _queues(_command(SERVICES["worker-gpu"]))


@pytest.mark.parametrize("name", sorted(WORKERS))
def test_worker_concurrency_is_a_positive_number(name: str) -> None:
    argv = worker_argv(_command(WORKERS[name])[3:], concurrency=1)
    option = next(i for i, arg in enumerate(argv) if arg in ("-c", "--concurrency"))
    assert int(argv[option + 1]) >= 1


def test_gpu_worker_is_optional_and_reserves_nvidia_gpus() -> None:
    gpu = SERVICES["worker-gpu"]
    assert gpu.get("profiles"), "the GPU worker must sit behind a profile: most hosts have no GPU"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    assert all(("count" in d) != ("device_ids" in d) for d in devices), "count and device_ids are exclusive"
    for name in set(KTUNE_SERVICES) - {"worker-gpu"}:
        assert not SERVICES[name].get("profiles"), f"{name} must start without a profile"


def test_gpu_image_is_built_with_cuda_tensorflow_under_its_own_tag() -> None:
    gpu, cpu = SERVICES["worker-gpu"], SERVICES["worker-cpu"]
    args = {str(k): str(v) for k, v in gpu["build"]["args"].items()}
    declared = _dockerfile_args()
    assert set(args) <= set(declared), f"build args {sorted(set(args) - set(declared))} have no ARG"
    assert Requirement(args["TF_PACKAGE"]).name == "tensorflow"
    assert "and-cuda" in Requirement(args["TF_PACKAGE"]).extras
    assert gpu.get("image"), "without its own tag the GPU build would overwrite the CPU image"
    assert gpu["image"] != cpu.get("image"), "the GPU build would overwrite the CPU image"


def test_the_api_and_the_workers_build_their_own_targets_under_their_own_tags() -> None:
    assert _build_target(SERVICES["api"]) == API_TARGET
    assert WORKERS and all(_build_target(worker) == WORKER_TARGET for worker in WORKERS.values())
    assert {API_TARGET, WORKER_TARGET} <= set(STAGES)
    tags = [str(SERVICES[name].get("image", "")) for name in ["api", *WORKERS]]
    assert all(tags) and SERVICES["api"]["image"] not in tags[1:], "one build would overwrite the other's tag"


# --- redis ----------------------------------------------------------------------------------------------


def test_redis_persists_and_never_evicts() -> None:
    command = _command(REDIS)
    options = {command[i]: command[i + 1] for i in range(1, len(command) - 1) if command[i].startswith("--")}
    assert options.get("--appendonly") == "yes", "jobs and queued tasks must survive a restart"
    assert options.get("--maxmemory-policy") == "noeviction", "evicting keys loses jobs and tasks silently"
    data = [source for source, target in _mounts(REDIS) if target == "/data"]
    assert data and data[0] in (COMPOSE.get("volumes") or {}), "redis needs a named volume at /data"
    probe = REDIS["healthcheck"]["test"]
    assert re.search(r"redis-cli\b.*\bping\b", probe if isinstance(probe, str) else " ".join(probe))


_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _compose_bytes(value: Any) -> int:
    """A compose memory value (an integer of bytes, or `512m`, `2g`, `2gb`) in bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmg]?)b?", str(value).strip().lower())
    assert match, f"{value!r} is not a compose memory size"
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def _redis_bytes(value: str) -> int:
    """A redis.conf memory value in bytes: `1gb` is 1024**3, `1g` is 10**9, a bare number is bytes."""
    match = re.fullmatch(r"(\d+)([kmg]b?)?", value.strip().lower())
    assert match, f"{value!r} is not a redis memory size"
    unit = match.group(2) or ""
    scale = {"": 1, "k": 10**3, "kb": 1024, "m": 10**6, "mb": 1024**2, "g": 10**9, "gb": 1024**3}[unit]
    return int(match.group(1)) * scale


def _memory_limit(service: dict[str, Any]) -> int | None:
    """The container's memory limit in bytes: `mem_limit`, or `deploy.resources.limits.memory`."""
    limits = ((service.get("deploy") or {}).get("resources") or {}).get("limits") or {}
    value = service.get("mem_limit") or limits.get("memory")
    return None if value is None else _compose_bytes(value)


def test_redis_has_a_real_maxmemory_below_its_container_limit() -> None:
    command = _command(REDIS)
    assert "--maxmemory" in command, "without --maxmemory, noeviction never applies and Redis grows unbounded"
    maxmemory = _redis_bytes(command[command.index("--maxmemory") + 1])
    assert maxmemory >= 256 * 1024**2, "Redis holds every job's data and trials: give it room"
    limit = _memory_limit(REDIS)
    assert limit is not None, "redis needs a container memory limit"
    # Redis' overhead and the copy-on-write pages of a background AOF rewrite live above maxmemory.
    assert limit >= 1.5 * maxmemory, f"redis' limit {limit} leaves too little above maxmemory {maxmemory}"


@pytest.mark.parametrize("name", sorted(KTUNE_SERVICES))
def test_every_service_has_a_memory_limit(name: str) -> None:
    limit = _memory_limit(SERVICES[name])
    assert limit is not None, f"{name} has no memory limit (mem_limit)"
    assert limit >= 512 * 1024**2, f"{name}'s limit of {limit} bytes cannot run ktune"


@pytest.mark.parametrize("name", sorted(WORKERS))
def test_worker_limit_covers_its_pool_processes(name: str) -> None:
    """docs/benchmarks.md: a pool process peaks at about 1.1 GB, TensorFlow's own footprint dominating."""
    argv = worker_argv(_command(WORKERS[name])[3:], concurrency=1)
    processes = int(argv[next(i for i, arg in enumerate(argv) if arg in ("-c", "--concurrency")) + 1])
    limit = _memory_limit(WORKERS[name])
    assert limit is not None and limit >= processes * 1024**3, (
        f"{name} runs {processes} pool processes of about 1 GB each in {limit} bytes"
    )


def test_compose_memory_sizes_parse() -> None:
    assert _compose_bytes("2g") == _compose_bytes("2gb") == _compose_bytes("2048m") == 2 * 1024**3
    assert _compose_bytes(1024) == 1024
    assert _redis_bytes("1gb") == 1024**3 and _redis_bytes("1g") == 10**9 and _redis_bytes("100") == 100


@pytest.mark.parametrize("name", sorted(KTUNE_SERVICES))
def test_services_reach_redis_by_its_service_name(name: str) -> None:
    assert _depends_on(SERVICES[name]).get(REDIS_NAME) == "service_healthy", f"{name} must wait for redis"
    url = urlsplit(_effective_settings(name).redis_url)
    assert url.scheme == "redis"
    assert url.hostname == REDIS_NAME, f"{name} looks for redis at {url.hostname}, not at its service name"
    command = _command(REDIS)
    port = int(command[command.index("--port") + 1]) if "--port" in command else 6379
    assert (url.port or 6379) == port


# --- artifacts ------------------------------------------------------------------------------------------


def test_api_and_workers_share_the_artifact_volume() -> None:
    sources = {}
    for name in KTUNE_SERVICES:
        artifact_dir = _effective_settings(name).artifact_dir
        assert artifact_dir.startswith("/"), f"{name}: KTUNE_ARTIFACT_DIR={artifact_dir} is relative"
        mounted = [source for source, target in _mounts(SERVICES[name]) if target == artifact_dir]
        assert mounted, f"{name} has no volume at its KTUNE_ARTIFACT_DIR {artifact_dir}"
        assert mounted[0] in (COMPOSE.get("volumes") or {}), f"{name}: {mounted[0]} is not a named volume"
        sources[name] = (mounted[0], artifact_dir)
    assert len(set(sources.values())) == 1, f"api and workers see different artifact stores: {sources}"


def test_image_owns_the_artifact_dirs() -> None:
    """A new named volume takes the owner of the image's directory it is mounted on: without it the
    unprivileged user could not write models and checkpoints."""
    user = _docker("USER")[-1].split(":")[0]
    runs = _docker("RUN")
    chowns = [m for run in runs for m in re.findall(r"chown\s+(?:-\S+\s+)*(\S+)\s+(\S+)", run)]
    dirs = {_settings_from(_ours(_dockerfile_env())).artifact_dir}
    dirs |= {_effective_settings(name).artifact_dir for name in KTUNE_SERVICES}
    for artifact_dir in dirs:
        assert any(artifact_dir in run and "mkdir" in run for run in runs), f"the image has no {artifact_dir}"
        assert any(
            owner.split(":")[0] == user and (artifact_dir + "/").startswith(path.rstrip("/") + "/")
            for owner, path in chowns
        ), f"{artifact_dir} is not owned by {user}"


# --- Dockerfile -----------------------------------------------------------------------------------------


def test_dockerfile_base_image_meets_requires_python() -> None:
    match = re.fullmatch(r"python:(\d+\.\d+)\S*", _docker("FROM")[0].split()[0])
    assert match, "the image should start from an official python image"
    assert match.group(1) + ".0" in SpecifierSet(PYPROJECT["project"]["requires-python"])


@pytest.mark.parametrize("target", [API_TARGET, WORKER_TARGET])
def test_dockerfile_installs_the_project(target: str) -> None:
    runs = _docker("RUN", _stage_chain(target))
    # The project without its dependencies, after a layer installing the target's set.
    assert any(re.search(r"pip install --no-deps \.(\s|$)", run) for run in runs), (
        "no `pip install --no-deps .`"
    )
    installs = [run for run in runs if f"python requirements.py {target}" in run]
    assert len(installs) == 1 and "pip install -r" in installs[0], f"{target} installs no requirement set"
    copied = {p for args in _docker("COPY", _stage_chain(target)) for p in shlex.split(args)}
    assert {"pyproject.toml", "scripts/requirements.py"} <= copied


def test_only_the_worker_target_installs_tensorflow_as_tf_package_says() -> None:
    """The API's set has no TensorFlow (tests/unit/test_requirements.py); TF_PACKAGE swaps the worker's."""
    assert _dockerfile_args().get("TF_PACKAGE") == "tensorflow"
    worker, api = _stage_chain(WORKER_TARGET), _stage_chain(API_TARGET)
    assert "TF_PACKAGE=tensorflow" in _docker("ARG", worker)
    assert any('--tf-package "$TF_PACKAGE"' in run for run in _docker("RUN", worker))
    assert not any("TF_PACKAGE" in args for _, args in api)
    names = [Requirement(dep).name for dep in PYPROJECT["project"]["dependencies"]]
    assert "tensorflow" in names


def test_the_default_target_is_the_complete_install() -> None:
    """`docker build .` without --target: the image that runs everything, as before the split."""
    assert list(STAGES)[-1] == WORKER_TARGET


def test_dockerfile_copies_what_the_build_needs() -> None:
    sources = set(_copied_sources())
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*").rstrip(".") for pattern in include}
    needed = {"pyproject.toml", PYPROJECT["project"]["readme"], *packages}
    assert needed <= sources, f"the Dockerfile does not copy {sorted(needed - sources)}"
    for source in sources:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which is not in the repository"


def test_dockerignore_keeps_the_build_inputs_and_drops_local_state() -> None:
    patterns = _dockerignore()
    inputs = ["pyproject.toml", PYPROJECT["project"]["readme"], *_copied_sources()]
    for package in ("service", "worker"):
        inputs += [p.relative_to(ROOT).as_posix() for p in (ROOT / package).rglob("*.py")]
        inputs += [p.relative_to(ROOT).as_posix() for p in (ROOT / package).rglob("*.arrow")]
    dropped = [path for path in inputs if _ignored(path, patterns)]
    assert not dropped, f".dockerignore drops build inputs: {dropped[:5]}"
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "var/artifacts/jobs/x/best-model.keras",
        "bench/results/run.json",
        ".env",
        "service/__pycache__/x.cpython-311.pyc",
        "model.keras",
    ):
        assert _ignored(path, patterns), f".dockerignore keeps {path}"


def test_the_api_target_runs_the_api_as_non_root_by_default() -> None:
    settings = _settings_from(_ours(_dockerfile_env()))
    assert settings.host == "0.0.0.0", "the image's API must listen on all interfaces"
    api = _stage_chain(API_TARGET)
    exposed = {int(port.split("/")[0]) for args in _docker("EXPOSE", api) for port in args.split()}
    assert settings.port in exposed
    assert _effective_settings("api").port in exposed
    assert json.loads(_docker("CMD", api)[-1]) == ["python", "-m", "service"], "CMD must be exec form"


@pytest.mark.parametrize(("target", "command"), [(API_TARGET, "service"), (WORKER_TARGET, "worker")])
def test_each_target_runs_as_non_root(target: str, command: str) -> None:
    chain = _stage_chain(target)
    assert json.loads(_docker("CMD", chain)[-1]) == ["python", "-m", command], "CMD must be exec form"
    assert not _docker("ENTRYPOINT", chain), "an ENTRYPOINT would wrap the compose commands"
    users = _docker("USER", chain)
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    undocumented = {
        name
        for name in SETTINGS_ENV
        if f"`{name}`" not in readme and name not in ("KTUNE_LIMITS", "KTUNE_QUOTAS")
    }
    assert not undocumented, f"add these to the README's configuration table: {sorted(undocumented)}"


# --- hardening: Redis' password, where the API is published, the hosts it answers ----------------------


def _compose_variables() -> set[str]:
    """Every variable the compose file reads from `.env` or the shell."""
    return {m.group(2) or m.group(5) for m in _VARIABLE.finditer(COMPOSE_FILE.read_text()) if not m.group(1)}


def _env_example() -> dict[str, str]:
    """NAME -> value of the lines of .env.example, commented-out ones (`#NAME=value`) included."""
    pairs = re.findall(r"^#?([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE.read_text(), re.MULTILINE)
    return dict(pairs)


@pytest.mark.parametrize("env", [{}, {"KTUNE_REDIS_PASSWORD": ""}], ids=["unset", "empty"])
def test_compose_refuses_to_start_without_a_redis_password(env: dict[str, str]) -> None:
    with pytest.raises(MissingVariable, match=r"KTUNE_REDIS_PASSWORD.*\.env"):
        _interpolate(RAW_COMPOSE, env)


def test_the_env_example_names_every_compose_variable_and_ships_no_password() -> None:
    example = _env_example()
    assert _compose_variables() <= set(example), f"not in .env.example: {_compose_variables() - set(example)}"
    assert example["KTUNE_REDIS_PASSWORD"] == "", "a password shipped in the repository is no secret"


def test_redis_requires_the_password_and_is_published_nowhere() -> None:
    command = _command(REDIS)
    assert "--requirepass" in command, "Redis must refuse clients without the password"
    assert command[command.index("--requirepass") + 1] == REDIS_PASSWORD
    assert not REDIS.get("ports"), "Redis is for the services on the compose network only"


@pytest.mark.parametrize("name", sorted(KTUNE_SERVICES))
def test_every_service_reaches_redis_with_the_password(name: str) -> None:
    url = _effective_settings(name).redis_url
    assert urlsplit(url).hostname == REDIS_NAME
    # As the job store (redis-py) and the broker (kombu) read it.
    assert redis.connection.parse_url(url)["password"] == REDIS_PASSWORD
    assert url_to_parts(url).password == REDIS_PASSWORD


def test_redis_healthcheck_authenticates_and_wants_a_pong() -> None:
    test = REDIS["healthcheck"]["test"]
    probe = " ".join(test) if isinstance(test, list) else test
    authenticated = _environment(REDIS).get("REDISCLI_AUTH") == REDIS_PASSWORD or re.search(
        r"\s(-a|--pass|--user)\s", probe
    )
    assert authenticated, "redis-cli must authenticate: REDISCLI_AUTH in redis' environment, or -a"
    # redis-cli exits 0 on an error reply (NOAUTH, WRONGPASS): only the PONG itself shows Redis is usable.
    assert test[0] == "CMD-SHELL" and re.search(r"\|\s*grep\b.*\bPONG\b", probe), probe


def _published(service: dict[str, Any]) -> list[tuple[str, int]]:
    """(host address, container port) of each port a service publishes; "" is every interface."""
    published = []
    for mapping in service.get("ports") or []:
        if isinstance(mapping, dict):
            published.append((str(mapping.get("host_ip", "")), int(mapping["target"])))
        else:
            parts = str(mapping).split("/")[0].rsplit(":", 2)
            published.append((parts[0] if len(parts) == 3 else "", int(parts[-1])))
    return published


def test_the_api_is_published_on_this_machine_only_by_default() -> None:
    assert _published(SERVICES["api"]) == [("127.0.0.1", _effective_settings("api").port)]
    for name in set(SERVICES) - {"api", "flower"}:
        assert not _published(SERVICES[name]), f"{name} publishes a port"
    # The README's way of exposing it.
    exposed = _interpolate(RAW_COMPOSE, {**COMPOSE_ENV, "KTUNE_PUBLISH_ADDRESS": "0.0.0.0"})
    assert _published(exposed["services"]["api"]) == [("0.0.0.0", _effective_settings("api").port)]


def _api_trusted_hosts(env: dict[str, str]) -> list[str]:
    api = _interpolate(RAW_COMPOSE, {**COMPOSE_ENV, **env})["services"]["api"]
    return _settings_from(_ours({**_dockerfile_env(), **_environment(api)})).trusted_hosts


@pytest.mark.parametrize("public", ["", "ktune.example.com", "ktune.example.com,*.example.org"])
def test_the_api_answers_its_health_check_local_use_and_its_public_names(public: str) -> None:
    hosts = _api_trusted_hosts({"KTUNE_PUBLIC_HOSTS": public} if public else {})
    test = SERVICES["api"]["healthcheck"]["test"]
    health_url = re.findall(r"https?://[^'\"\s]+", " ".join(test) if isinstance(test, list) else test)[0]
    assert {urlsplit(health_url).hostname, "127.0.0.1", "localhost"} <= set(hosts), hosts
    assert "*" not in hosts, "the API must not answer any Host by default"
    assert set(filter(None, public.split(","))) <= set(hosts)


def test_the_readme_documents_the_compose_variables() -> None:
    readme = (ROOT / "README.md").read_text()
    undocumented = {name for name in _compose_variables() if f"`{name}`" not in readme}
    assert not undocumented, f"document these in the README's Docker section: {sorted(undocumented)}"
    assert "cp .env.example .env" in readme


# --- Flower ---------------------------------------------------------------------------------------------


def test_the_services_besides_redis_and_flower_are_ktunes() -> None:
    assert set(KTUNE_SERVICES) == set(SERVICES) - {REDIS_NAME, "flower"}
    assert {"api", "worker-cpu"} <= set(KTUNE_SERVICES)


def test_flower_is_optional_and_published_on_this_machine_only() -> None:
    assert FLOWER["profiles"] == ["monitoring"], "started only with --profile monitoring"
    # It can shut workers down: never on another interface.
    assert _published(FLOWER) == [("127.0.0.1", 5555)]
    assert "--port=5555" in _command(FLOWER)
    limit = _memory_limit(FLOWER)
    assert limit is not None and limit >= 256 * 1024**2


def test_flower_watches_the_broker_the_workers_consume() -> None:
    broker = _environment(FLOWER)["CELERY_BROKER_URL"]
    assert broker == _effective_settings("worker-cpu").redis_url
    assert url_to_parts(broker).password == REDIS_PASSWORD
    assert _depends_on(FLOWER).get(REDIS_NAME) == "service_healthy"
    assert str(FLOWER["image"]).startswith("mher/flower:2"), "Flower 2 speaks Celery 5's protocol"
