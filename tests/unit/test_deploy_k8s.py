"""The Kubernetes manifests (deploy/) must be valid objects and agree with the code they run.

No cluster needed: each kustomization is rendered here (resources, components, namespace, images: the
only kustomize features deploy/ uses; any other is refused, and `kubectl kustomize`, where installed, must
render the same), every object is validated against Kubernetes' own schemas (`kubernetes-validate`), and
KEDA's objects, custom resources outside those schemas, are checked field by field against KEDA's CRDs.
Expectations come from the code: settings fields, queue names and kombu's priority lists, health routes,
`python -m worker` argument handling, the Dockerfile's user, pyproject's version, compose's Redis.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import redis.connection
import yaml
from kombu.utils.url import url_to_parts

from service.api import routes_health
from service.core.queue import QUEUES
from service.core.settings import Settings
from service.core.store import broker_lists
from tests.unit.test_deploy_files import (
    PYPROJECT,
    ROOT,
    SETTINGS_ENV,
    _dockerfile_env,
    _ours,
    _queues,
    _redis_bytes,
    _settings_from,
)
from tests.unit.test_deploy_files import REDIS as COMPOSE_REDIS

DEPLOY = ROOT / "deploy"
# Kubernetes releases whose schemas every object must satisfy: an older one clusters still run, the newest.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
# Stand-ins for the Secrets' values, which the repository never holds.
SECRET_VALUES = {("ktune-redis", "password"): "0123456789abcdef0123456789abcdef"}
KUSTOMIZE_KEYS = {"apiVersion", "kind", "namespace", "resources", "components", "images"}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding"}


# --- rendering ------------------------------------------------------------------------------------------


def _kustomization(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(data) - KUSTOMIZE_KEYS
    assert not unknown, f"{directory}: this test's renderer does not implement {sorted(unknown)}"
    return data


def _set_image(doc: dict[str, Any], images: list[dict[str, str]]) -> None:
    """kustomize's image transformer: a container image named `name` gets `newName` and `newTag`."""
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        name, _, tag = container["image"].partition(":")
        for image in images:
            if image["name"] == name:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}".rstrip(":")


def _render(directory: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize directory` would give, in order."""
    kustomization = _kustomization(directory)
    docs: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            docs += _render(path)
        else:
            docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    images = list(kustomization.get("images", []))
    for entry in kustomization.get("components", []):
        component = (directory / entry).resolve()
        assert _kustomization(component)["kind"] == "Component", f"{component} is not a Component"
        docs += _render(component)
        images += _kustomization(component).get("images", [])
    for doc in docs:
        _set_image(doc, images)
        if "namespace" in kustomization and doc["kind"] not in CLUSTER_SCOPED:
            doc.setdefault("metadata", {})["namespace"] = kustomization["namespace"]
    return docs


def _kustomizations() -> dict[str, Path]:
    """Every Kustomization under deploy/ (Components are rendered through them)."""
    found = {}
    for path in sorted(DEPLOY.rglob("kustomization.yaml")):
        if yaml.safe_load(path.read_text())["kind"] == "Kustomization":
            found[path.parent.relative_to(DEPLOY).as_posix()] = path.parent
    return found


KUSTOMIZATIONS = _kustomizations()
RENDERED = {name: _render(path) for name, path in KUSTOMIZATIONS.items()}
EVERYTHING = RENDERED["overlays/gpu"]  # base, autoscaling, the GPU pool and its autoscaling


def _objects(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    objects = _objects(docs, kind)
    assert name in objects, f"no {kind} {name} (there are {sorted(objects)})"
    return objects[name]


def _pod(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def _containers(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload name, pod spec, container) of every container the manifests run."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for container in _pod(doc).get("containers", []) + _pod(doc).get("initContainers", []):
                yield doc["metadata"]["name"], _pod(doc), container


def _ktune_containers(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [item for item in _containers(docs) if item[2]["command"][:2] == ["python", "-m"]]


def _workers(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Deployment name -> its `python -m worker` container."""
    return {
        name: container
        for name, _, container in _ktune_containers(docs)
        if container["command"][:3] == ["python", "-m", "worker"]
    }


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(NAME)` expansion of env values and commands (`$$(NAME)` stays literal)."""
    return re.sub(
        r"\$(\$)?\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: m.group(0)[1:] if m.group(1) else env.get(m.group(2), m.group(0)),
        value,
    )


def _container_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The environment a container gets: envFrom ConfigMaps (Secrets' keys are unknown here), then env."""
    env: dict[str, str] = {}
    config_maps = _objects(docs, "ConfigMap")
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(config_maps[source["configMapRef"]["name"]]["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = _expand(item["value"], env)
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = SECRET_VALUES[(ref["name"], ref["key"])]
    return env


def _settings(docs: list[dict[str, Any]], container: dict[str, Any]) -> Settings:
    """A container's settings: the image's ENV, overridden by the manifests' environment."""
    return _settings_from(_ours({**_dockerfile_env(), **_container_env(docs, container)}))


def _port(container: dict[str, Any], port: int | str) -> int:
    """A container port by number or name."""
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    assert port in named, f"{container['name']} has no port named {port}"
    return int(named[port])


def _bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (`512Mi`, `2Gi`, `1G`, a number of bytes) in bytes."""
    match = re.fullmatch(r"(\d+)([KMGT]i?)?", str(quantity))
    assert match, f"{quantity!r} is not a memory quantity this test reads"
    unit = match.group(2) or ""
    if not unit:
        return int(match.group(1))
    power = "KMGT".index(unit[0]) + 1
    return int(match.group(1)) * int(1024**power if unit.endswith("i") else 1000**power)


# --- the rendering itself -------------------------------------------------------------------------------


def test_the_kustomizations_are_found() -> None:
    assert {"base", "overlays/autoscaled", "overlays/gpu"} <= set(KUSTOMIZATIONS)


def test_every_manifest_is_rendered_by_a_kustomization() -> None:
    """A YAML file no kustomization lists is never applied (and never tested)."""
    used: set[Path] = set()

    def walk(directory: Path) -> None:
        used.add(directory / "kustomization.yaml")
        kustomization = _kustomization(directory)
        for entry in kustomization.get("resources", []) + kustomization.get("components", []):
            path = (directory / entry).resolve()
            walk(path) if path.is_dir() else used.add(path)

    for directory in KUSTOMIZATIONS.values():
        walk(directory.resolve())
    orphans = {p for p in DEPLOY.resolve().rglob("*.yaml")} - used
    assert not orphans, f"not in any kustomization: {sorted(str(p) for p in orphans)}"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its kustomize) is not installed")
@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_kubectl_kustomize_renders_the_same(name: str) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(KUSTOMIZATIONS[name])], capture_output=True, text=True, check=True
    ).stdout
    theirs = [doc for doc in yaml.safe_load_all(out) if doc]

    def key(doc: dict[str, Any]) -> tuple[str, str]:
        return doc["kind"], doc["metadata"]["name"]

    assert sorted(theirs, key=key) == sorted(RENDERED[name], key=key)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_objects_are_valid_kubernetes(name: str, version: str) -> None:
    for doc in RENDERED[name]:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # KEDA's custom resources: test_keda_* below
        # strict: an unknown field (a typo, a field at the wrong level) is an error, not silently dropped.
        kubernetes_validate.validate(copy.deepcopy(doc), version, strict=True)


def test_a_broken_object_fails_validation() -> None:
    """The validation above can fail: a misplaced field is caught."""
    api = copy.deepcopy(_one(EVERYTHING, "Deployment", "ktune-api"))
    api["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["path"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(api, K8S_VERSIONS[-1], strict=True)


def test_everything_lives_in_one_namespace() -> None:
    namespaces = {doc["metadata"]["namespace"] for doc in EVERYTHING if doc["kind"] not in CLUSTER_SCOPED}
    assert namespaces == {_objects(EVERYTHING, "Namespace").popitem()[0]}


# --- settings -------------------------------------------------------------------------------------------


def test_every_ktune_variable_is_a_setting() -> None:
    named = set()
    for doc in _objects(EVERYTHING, "ConfigMap").values():
        named |= set(_ours(doc["data"]))
    for _, _, container in _ktune_containers(EVERYTHING):
        named |= set(_ours({item["name"]: "" for item in container.get("env", [])}))
    unknown = named - SETTINGS_ENV
    assert not unknown, f"the manifests set {sorted(unknown)}, which no settings field reads"


@pytest.mark.parametrize("name", sorted({n for n, _, _ in _ktune_containers(EVERYTHING)}))
def test_ktune_pods_get_the_cluster_settings(name: str) -> None:
    container = next(c for n, _, c in _ktune_containers(EVERYTHING) if n == name)
    settings = _settings(EVERYTHING, container)  # and they validate
    env = _container_env(EVERYTHING, container)
    assert settings.auth == "on", "never KTUNE_AUTH=off on a cluster"
    assert urlsplit(env["KTUNE_ARTIFACT_URL"]).scheme == "s3", "pods on other machines share no disk"
    names = {source.get("secretRef", {}).get("name") for source in container["envFrom"]}
    assert "ktune-s3" in names, "the artifact bucket's AWS_* credentials come from the ktune-s3 Secret"


@pytest.mark.parametrize("name", sorted({n for n, _, _ in _ktune_containers(EVERYTHING)}))
def test_ktune_pods_reach_redis_by_its_service_with_the_password(name: str) -> None:
    container = next(c for n, _, c in _ktune_containers(EVERYTHING) if n == name)
    url = _settings(EVERYTHING, container).redis_url
    redis_service = _one(
        EVERYTHING, "Service", _one(EVERYTHING, "StatefulSet", "ktune-redis")["spec"]["serviceName"]
    )
    assert urlsplit(url).hostname == redis_service["metadata"]["name"]
    assert (urlsplit(url).port or 6379) == redis_service["spec"]["ports"][0]["port"]
    password = SECRET_VALUES[("ktune-redis", "password")]
    # As the job store (redis-py) and the broker (kombu) read it.
    assert redis.connection.parse_url(url)["password"] == password
    assert url_to_parts(url).password == password


def test_config_maps_hold_no_secrets() -> None:
    for name, config_map in _objects(EVERYTHING, "ConfigMap").items():
        for key, value in config_map["data"].items():
            assert not re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL", key, re.I), f"{name}: {key}"
            assert urlsplit(str(value)).password is None, f"{name}: {key} holds a password"
    # Secrets are made with kubectl (README.md, Kubernetes), never committed.
    assert not _objects(EVERYTHING, "Secret"), "a Secret in the repository is no secret"


def test_the_readme_says_how_to_make_every_secret() -> None:
    readme = (ROOT / "README.md").read_text()
    secrets = {ref["name"] for _, _, c in _containers(EVERYTHING) for ref in _secret_refs(c)}
    for auth in _objects(EVERYTHING, "TriggerAuthentication").values():
        secrets |= {ref["name"] for ref in auth["spec"]["secretTargetRef"]}
    assert secrets == {"ktune-redis", "ktune-s3"}
    for secret in secrets:
        assert f"kubectl -n ktune create secret generic {secret}" in readme, f"README: how to make {secret}"


def _secret_refs(container: dict[str, Any]) -> list[dict[str, Any]]:
    refs = [item["valueFrom"]["secretKeyRef"] for item in container.get("env", []) if "valueFrom" in item]
    refs += [source["secretRef"] for source in container.get("envFrom", []) if "secretRef" in source]
    return refs


# --- the API --------------------------------------------------------------------------------------------


API = _one(EVERYTHING, "Deployment", "ktune-api")
API_CONTAINER = _pod(API)["containers"][0]
HEALTH_PATHS = {route.path for route in routes_health.router.routes}


def test_api_runs_two_replicas_of_the_service() -> None:
    assert API["spec"]["replicas"] == 2
    assert API_CONTAINER["command"] == ["python", "-m", "service"]
    budget = _one(EVERYTHING, "PodDisruptionBudget", "ktune-api")
    assert budget["spec"]["selector"]["matchLabels"].items() <= _pod_labels(API).items()


def _pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


@pytest.mark.parametrize(("probe", "path"), [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")])
def test_api_probes_its_health_routes_on_its_port(probe: str, path: str) -> None:
    settings = _settings(EVERYTHING, API_CONTAINER)
    assert settings.host == "0.0.0.0", "the API must listen on the pod's address"
    get = API_CONTAINER[probe]["httpGet"]
    assert get["path"] == path and path in HEALTH_PATHS
    assert _port(API_CONTAINER, get["port"]) == settings.port
    # The kubelet sends the pod's IP as the Host unless told otherwise, and the API refuses unknown hosts.
    host = {h["name"].lower(): h["value"] for h in get.get("httpHeaders", [])}.get("host")
    assert host in settings.trusted_hosts, f"{probe} sends Host {host}, which the API refuses"


def test_api_service_reaches_the_api_port() -> None:
    service = _one(EVERYTHING, "Service", "ktune-api")
    assert service["spec"]["selector"].items() <= _pod_labels(API).items()
    ports = [_port(API_CONTAINER, port["targetPort"]) for port in service["spec"]["ports"]]
    assert ports == [_settings(EVERYTHING, API_CONTAINER).port]


def test_the_api_answers_its_service_names_and_no_host_by_default() -> None:
    hosts = _settings(EVERYTHING, API_CONTAINER).trusted_hosts
    namespace = API["metadata"]["namespace"]
    service = "ktune-api"
    assert {service, f"{service}.{namespace}", f"{service}.{namespace}.svc"} <= set(hosts), hosts
    assert "*" not in hosts, "the API must not answer any Host"


# --- workers --------------------------------------------------------------------------------------------


def test_workers_consume_the_queues() -> None:
    workers = _workers(EVERYTHING)
    queues = {name: _queues(container["command"]) for name, container in workers.items()}
    assert queues == {"ktune-worker-cpu": {"cpu"}, "ktune-worker-gpu": {"gpu"}}
    assert set().union(*queues.values()) == set(QUEUES)


@pytest.mark.parametrize("name", ["ktune-worker-cpu", "ktune-worker-gpu"])
@pytest.mark.parametrize("probe", ["startupProbe", "livenessProbe", "readinessProbe"])
def test_worker_probes_run_the_health_check(name: str, probe: str) -> None:
    container = _workers(EVERYTHING)[name]
    assert container[probe]["exec"]["command"] == ["python", "-m", "worker.health"]
    assert (ROOT / "worker" / "health.py").exists()
    # worker.health checks `celery@<hostname>` (the pod's name) unless given the node's -n name.
    command = container["command"]
    assert not {"-n", "--hostname"} & set(command) and not any(a.startswith("--hostname=") for a in command)


def test_gpu_pool_asks_for_gpus_and_the_cpu_workers_do_not() -> None:
    workers = _workers(EVERYTHING)
    gpu = workers["ktune-worker-gpu"]["resources"]
    assert int(gpu["limits"]["nvidia.com/gpu"]) >= 1
    assert (
        gpu["requests"].get("nvidia.com/gpu", gpu["limits"]["nvidia.com/gpu"])
        == gpu["limits"]["nvidia.com/gpu"]
    )
    assert "nvidia.com/gpu" not in str(workers["ktune-worker-cpu"]["resources"])


def _concurrency(container: dict[str, Any]) -> int:
    command = container["command"]
    flag = next(i for i, arg in enumerate(command) if arg in ("-c", "--concurrency"))
    return int(command[flag + 1])


@pytest.mark.parametrize("name", ["ktune-worker-cpu", "ktune-worker-gpu"])
def test_worker_memory_covers_its_pool_processes(name: str) -> None:
    """docs/benchmarks.md: a pool process peaks at about 1.1 GB, TensorFlow's own footprint dominating."""
    container = _workers(EVERYTHING)[name]
    limit = _bytes(container["resources"]["limits"]["memory"])
    assert limit >= _concurrency(container) * 1024**3


def test_the_gpu_pool_runs_a_process_per_gpu() -> None:
    container = _workers(EVERYTHING)["ktune-worker-gpu"]
    assert _concurrency(container) == int(container["resources"]["limits"]["nvidia.com/gpu"])


def test_workers_have_time_to_hand_their_trials_back() -> None:
    for name in _workers(EVERYTHING):
        deployment = _one(EVERYTHING, "Deployment", name)
        assert _pod(deployment).get("terminationGracePeriodSeconds", 30) >= 60


# --- every pod: images, security, resources -------------------------------------------------------------


def test_images_are_the_project_images_at_its_version() -> None:
    version = PYPROJECT["project"]["version"]
    images = {name: container["image"] for name, _, container in _ktune_containers(EVERYTHING)}
    assert images == {
        "ktune-api": f"ktune:{version}",
        "ktune-worker-cpu": f"ktune:{version}",
        "ktune-worker-gpu": f"ktune-gpu:{version}",
    }
    redis_container = _pod(_one(EVERYTHING, "StatefulSet", "ktune-redis"))["containers"][0]
    assert redis_container["image"] == COMPOSE_REDIS["image"], "the Redis of compose, tested there"


def _uid() -> int:
    match = re.search(r"useradd\b[^\n]*--uid (\d+)", (ROOT / "Dockerfile").read_text())
    assert match, "the Dockerfile creates no user with a fixed uid"
    return int(match.group(1))


@pytest.mark.parametrize("name", sorted({n for n, _, _ in _containers(EVERYTHING)}))
def test_pods_meet_the_restricted_pod_security_standard(name: str) -> None:
    for workload, pod, container in _containers(EVERYTHING):
        if workload != name:
            continue
        pod_security = pod.get("securityContext", {})
        security = {**pod_security, **container.get("securityContext", {})}
        assert security.get("runAsNonRoot") is True
        assert security.get("runAsUser", 0) != 0
        assert security.get("allowPrivilegeEscalation") is False
        assert security.get("capabilities", {}).get("drop") == ["ALL"]
        assert security.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        assert security.get("readOnlyRootFilesystem") is True
        assert pod.get("automountServiceAccountToken") is False
        if container["command"][:2] == ["python", "-m"]:
            assert security["runAsUser"] == _uid(), "the image's user, who owns its directories"
    namespace = _objects(EVERYTHING, "Namespace").popitem()[1]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("name", sorted({n for n, _, _ in _ktune_containers(EVERYTHING)}))
def test_ktune_pods_can_write_where_they_write(name: str) -> None:
    """The root filesystem is read-only: scratch (/tmp) and KTUNE_ARTIFACT_DIR must be volumes."""
    container = next(c for n, _, c in _ktune_containers(EVERYTHING) if n == name)
    mounts = {mount["mountPath"] for mount in container.get("volumeMounts", []) if not mount.get("readOnly")}
    assert {"/tmp", _settings(EVERYTHING, container).artifact_dir} <= mounts


@pytest.mark.parametrize("name", sorted({n for n, _, _ in _containers(EVERYTHING)}))
def test_every_container_has_resources(name: str) -> None:
    container = next(c for n, _, c in _containers(EVERYTHING) if n == name)
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert {"cpu", "memory"} <= set(requests) and "memory" in limits
    assert _bytes(limits["memory"]) >= _bytes(requests["memory"])


def test_memory_quantities_parse() -> None:
    assert _bytes("2Gi") == 2 * 1024**3 and _bytes("512Mi") == 512 * 1024**2 and _bytes("1G") == 10**9
    assert _bytes("1000") == 1000


# --- Redis ----------------------------------------------------------------------------------------------


REDIS = _one(EVERYTHING, "StatefulSet", "ktune-redis")
REDIS_CONTAINER = _pod(REDIS)["containers"][0]


def _redis_command() -> list[str]:
    env = _container_env(EVERYTHING, REDIS_CONTAINER)
    return [_expand(arg, env) for arg in REDIS_CONTAINER["command"] + REDIS_CONTAINER.get("args", [])]


def test_redis_keeps_its_data_on_a_persistent_volume() -> None:
    command = _redis_command()
    assert command[command.index("--appendonly") + 1] == "yes"
    data_dir = command[command.index("--dir") + 1]
    claims = {claim["metadata"]["name"] for claim in REDIS["spec"]["volumeClaimTemplates"]}
    mounted = {m["name"] for m in REDIS_CONTAINER["volumeMounts"] if m["mountPath"] == data_dir}
    assert mounted and mounted <= claims, f"Redis' --dir {data_dir} is not on a PersistentVolumeClaim"
    assert REDIS["spec"]["replicas"] == 1, "one Redis: the queue and the job store are not replicated"


def test_redis_requires_the_password_of_the_secret() -> None:
    command = _redis_command()
    assert command[command.index("--requirepass") + 1] == SECRET_VALUES[("ktune-redis", "password")]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    maxmemory = _redis_bytes(command[command.index("--maxmemory") + 1])
    assert _bytes(REDIS_CONTAINER["resources"]["limits"]["memory"]) >= 1.5 * maxmemory


def test_redis_probes_authenticate_and_want_a_pong() -> None:
    assert (
        _container_env(EVERYTHING, REDIS_CONTAINER)["REDISCLI_AUTH"]
        == SECRET_VALUES[("ktune-redis", "password")]
    )
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        script = " ".join(REDIS_CONTAINER[probe]["exec"]["command"])
        assert re.search(r"redis-cli ping\s*\|\s*grep\b.*\bPONG\b", script), script


def test_only_ktune_and_keda_reach_redis() -> None:
    policy = _one(EVERYTHING, "NetworkPolicy", "ktune-redis")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= _pod_labels(REDIS).items()
    sources = policy["spec"]["ingress"][0]["from"]
    pods = [s["podSelector"]["matchLabels"] for s in sources if "podSelector" in s]
    for _, _, container in _ktune_containers(EVERYTHING):
        workload = next(
            d for d in EVERYTHING if d["kind"] == "Deployment" and _pod(d)["containers"][0] is container
        )
        assert any(labels.items() <= _pod_labels(workload).items() for labels in pods)
    assert {"kubernetes.io/metadata.name": "keda"} in [
        s.get("namespaceSelector", {}).get("matchLabels") for s in sources
    ]


# --- KEDA -----------------------------------------------------------------------------------------------

# The fields of KEDA's CRDs (kedacore/keda config/crd/bases, 2.x) these manifests may use.
SCALED_OBJECT_SPEC = {
    "scaleTargetRef",
    "minReplicaCount",
    "maxReplicaCount",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
ADVANCED = {"horizontalPodAutoscalerConfig", "restoreToOriginalReplicaCount", "scalingModifiers"}
SCALING_MODIFIERS = {"formula", "target", "activationTarget", "metricType"}
TRIGGER = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
# The redis (lists) scaler's metadata (pkg/scalers/redis_scaler.go).
REDIS_METADATA = {
    "address",
    "host",
    "port",
    "addressFromEnv",
    "hostFromEnv",
    "portFromEnv",
    "usernameFromEnv",
    "passwordFromEnv",
    "listName",
    "listLength",
    "activationListLength",
    "databaseIndex",
    "enableTLS",
    "unsafeSsl",
}

SCALED_OBJECTS = _objects(EVERYTHING, "ScaledObject")


def test_keda_scales_both_worker_pools() -> None:
    assert {so["spec"]["scaleTargetRef"]["name"] for so in SCALED_OBJECTS.values()} == set(
        _workers(EVERYTHING)
    )


@pytest.mark.parametrize("name", sorted(SCALED_OBJECTS))
def test_keda_scaled_object_fields(name: str) -> None:
    scaled = SCALED_OBJECTS[name]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert set(spec) <= SCALED_OBJECT_SPEC and {"scaleTargetRef", "triggers"} <= set(spec)
    assert set(spec["scaleTargetRef"]) <= {"apiVersion", "kind", "name", "envSourceContainerName"}
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    _one(EVERYTHING, "Deployment", spec["scaleTargetRef"]["name"])
    assert 0 <= spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100)
    advanced = spec.get("advanced", {})
    assert set(advanced) <= ADVANCED and set(advanced.get("scalingModifiers", {})) <= SCALING_MODIFIERS
    # KEDA hands horizontalPodAutoscalerConfig.behavior to the HPA: validate it as the HPA's own field.
    behavior = advanced.get("horizontalPodAutoscalerConfig", {}).get("behavior")
    if behavior:
        hpa = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name},
            "spec": {
                "scaleTargetRef": {"kind": "Deployment", "name": name},
                "maxReplicas": 1,
                "behavior": behavior,
            },
        }
        kubernetes_validate.validate(hpa, K8S_VERSIONS[-1], strict=True)
    for trigger in spec["triggers"]:
        assert set(trigger) <= TRIGGER and trigger["type"] == "redis"
        assert set(trigger["metadata"]) <= REDIS_METADATA, sorted(set(trigger["metadata"]) - REDIS_METADATA)
        assert all(isinstance(v, str) for v in trigger["metadata"].values()), (
            "KEDA's metadata values are strings"
        )
        auth = _one(EVERYTHING, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        assert set(auth["spec"]) == {"secretTargetRef"}
        refs = {(r["parameter"], r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
        assert refs == {("password", "ktune-redis", "password")}, "Redis' password, from its Secret"


@pytest.mark.parametrize("name", sorted(SCALED_OBJECTS))
def test_keda_counts_every_priority_list_of_the_workers_queue(name: str) -> None:
    spec = SCALED_OBJECTS[name]["spec"]
    worker = _workers(EVERYTHING)[spec["scaleTargetRef"]["name"]]
    (queue,) = _queues(worker["command"])
    triggers = spec["triggers"]
    assert sorted(t["metadata"]["listName"] for t in triggers) == sorted(broker_lists(queue))
    # One metric: the lists added up, per pool process of a pod.
    modifiers = spec["advanced"]["scalingModifiers"]
    names = [t["name"] for t in triggers]
    assert len(set(names)) == len(names)
    assert sorted(re.split(r"\s*\+\s*", modifiers["formula"].strip())) == sorted(names)
    assert modifiers["metricType"] == "AverageValue"
    assert float(modifiers["target"]) == _concurrency(worker)
    for trigger in triggers:
        assert float(trigger["metadata"]["listLength"]) == _concurrency(worker)


@pytest.mark.parametrize("name", sorted(SCALED_OBJECTS))
def test_keda_reaches_redis_from_its_own_namespace(name: str) -> None:
    namespace = SCALED_OBJECTS[name]["metadata"]["namespace"]
    service = _one(EVERYTHING, "Service", REDIS["spec"]["serviceName"])
    for trigger in SCALED_OBJECTS[name]["spec"]["triggers"]:
        host, _, port = trigger["metadata"]["address"].rpartition(":")
        assert host in (
            f"{service['metadata']['name']}.{namespace}.svc",
            f"{service['metadata']['name']}.{namespace}.svc.cluster.local",
        )
        assert int(port) == service["spec"]["ports"][0]["port"]
        assert trigger["metadata"].get("databaseIndex", "0") == str(
            redis.connection.parse_url(
                _settings(EVERYTHING, _workers(EVERYTHING)["ktune-worker-cpu"]).redis_url
            ).get("db", 0)
        )


def test_cpu_workers_never_scale_to_zero() -> None:
    """The API's /readyz is not ready while no worker consumes a queue: with none, it would take no job
    that could make KEDA start one."""
    cpu = next(
        so for so in SCALED_OBJECTS.values() if so["spec"]["scaleTargetRef"]["name"] == "ktune-worker-cpu"
    )
    assert cpu["spec"]["minReplicaCount"] >= 1


def test_base_runs_without_keda() -> None:
    assert not any(doc["apiVersion"].startswith("keda.sh/") for doc in RENDERED["base"])
