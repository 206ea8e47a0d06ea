"""The deploy files (deploy/): Kubernetes manifests against the API schema, compose, Dockerfile.

No container engine or cluster is needed: the manifests are checked with the offline
schemas that `kubernetes-validate` ships, and compose.yaml, prometheus.yml and the
Dockerfile are parsed and held to what docs/deploy.md promises.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shlex
import socket
import tomllib
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from purchase_guard.config import _known_env_names

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
# The oldest Kubernetes the manifests promise to work on (docs/deploy.md): native gRPC probes
# are GA since 1.27 and the preStop `sleep` action is on by default since 1.30.
KUBERNETES_VERSION = "1.33"
NAMESPACE = "purchase-guard"
GRPC_PORT = 50051
METRICS_PORT = 9464
# Peak RSS measured for `python -m purchase_guard serve` with 29 s utterances at concurrency 8.
MEASURED_PEAK_RSS_MIB = 684
GE2E_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"


# ------------------------------------------------------------------------------ helpers
def load_manifests() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                docs.append((f"{path.name}#{index}", doc))
    return docs


MANIFESTS = load_manifests()


def manifest(kind: str, name: str = NAMESPACE) -> dict[str, Any]:
    found = [doc for _, doc in MANIFESTS if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = manifest("Deployment")["spec"]["template"]["spec"]
    return spec


def guard_container() -> dict[str, Any]:
    (container,) = [c for c in pod_spec()["containers"] if c["name"] == "guard"]
    return container


def pod_labels() -> dict[str, str]:
    labels: dict[str, str] = manifest("Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def guard_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose()["services"].items() if name.startswith("guard")}


def mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity) / 2**20


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    args: str


def dockerfile_stages() -> list[list[Instruction]]:
    """Instructions of deploy/Dockerfile grouped by stage (continuations joined, comments dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[list[Instruction]] = [[]]  # stage 0: global ARGs before the first FROM
    for line in logical:
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append(Instruction(keyword.upper(), args.strip()))
    return stages


def instructions(stage: list[Instruction], keyword: str) -> list[str]:
    return [i.args for i in stage if i.keyword == keyword]


def env_pairs(stage: list[Instruction]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for args in instructions(stage, "ENV"):
        for token in shlex.split(args):
            key, _, value = token.partition("=")
            pairs[key] = value
    return pairs


def load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_healthcheck", DEPLOY / "healthcheck.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- Kubernetes
@pytest.mark.parametrize(("where", "doc"), MANIFESTS, ids=[where for where, _ in MANIFESTS])
def test_manifest_validates_against_the_kubernetes_schema(where: str, doc: dict[str, Any]) -> None:
    """Every document in deploy/k8s is valid for its kind at KUBERNETES_VERSION, unknown fields refused."""
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_strict_validation_rejects_a_misspelt_field() -> None:
    """The schema check would catch a typo: a Deployment with `readinesProbe` fails validation."""
    broken = yaml.safe_load(yaml.safe_dump(manifest("Deployment")))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_in_one_namespace() -> None:
    """`apply -k` and `apply -f` deploy the same set: every manifest is listed, all in one namespace."""
    kustomization = yaml.safe_load((K8S / "Kustomization").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["namespace"] == NAMESPACE
    assert kustomization["resources"] == sorted(p.name for p in K8S.glob("*.yaml"))
    assert MANIFESTS[0][1]["kind"] == "Namespace", "the Namespace must sort first for `kubectl apply -f`"
    for where, doc in MANIFESTS:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, where
    kinds = {doc["kind"] for _, doc in MANIFESTS}
    expected = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    assert expected | {"ConfigMap", "Secret", "NetworkPolicy"} <= kinds


def test_probes_use_native_grpc_health_on_the_grpc_port() -> None:
    """Startup, readiness and liveness probes are native `grpc:` probes on the container's gRPC port."""
    container = guard_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert set(container[probe]) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}, probe
        assert container[probe]["grpc"]["port"] == GRPC_PORT, probe
    # Liveness must tolerate a longer outage than readiness, or a store outage restarts every pod.
    live, ready = container["livenessProbe"], container["readinessProbe"]
    assert (
        live["periodSeconds"] * live["failureThreshold"] > ready["periodSeconds"] * ready["failureThreshold"]
    )


def test_pod_runs_non_root_with_a_read_only_root_filesystem() -> None:
    """The pod meets the restricted Pod Security Standard: non-root, no escalation, read-only root."""
    spec = pod_spec()
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] != 0
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    container = guard_container()["securityContext"]
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]
    namespace = manifest("Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    mounts = {m["mountPath"] for m in guard_container()["volumeMounts"]}
    assert "/tmp" in mounts, "a read-only root needs a writable /tmp"


def test_resources_leave_room_above_the_measured_model_memory() -> None:
    """CPU and memory have requests and limits; the memory limit is at least 1.5x the measured peak RSS."""
    resources = guard_container()["resources"]
    requests, limits = resources["requests"], resources["limits"]
    assert mebibytes(requests["memory"]) >= MEASURED_PEAK_RSS_MIB
    assert mebibytes(limits["memory"]) >= 1.5 * MEASURED_PEAK_RSS_MIB
    assert mebibytes(limits["memory"]) >= mebibytes(requests["memory"])
    assert float(limits["cpu"]) >= float(requests["cpu"]) > 0
    config = manifest("ConfigMap")["data"]
    assert float(config["OMP_NUM_THREADS"]) == float(limits["cpu"]), "torch threads follow the CPU limit"


def test_selectors_match_the_pod_labels() -> None:
    """Services, PDB and NetworkPolicy select the guard pods, and the HPA scales the guard Deployment."""
    labels = pod_labels()
    deployment = manifest("Deployment")
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "Service": manifest("Service")["spec"]["selector"],
        "Service(headless)": manifest("Service", "purchase-guard-headless")["spec"]["selector"],
        "PodDisruptionBudget": manifest("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        "NetworkPolicy": manifest("NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector, kind
        assert selector.items() <= labels.items(), kind
    hpa = manifest("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAMESPACE}
    assert hpa["minReplicas"] >= 2
    assert hpa["maxReplicas"] >= hpa["minReplicas"]
    assert manifest("Service", "purchase-guard-headless")["spec"]["clusterIP"] == "None"


def test_network_policy_admits_only_the_voice_backend_and_prometheus() -> None:
    """Ingress: voice-backend on 50051, Prometheus on 9464; egress: PostgreSQL, Redis and DNS only."""
    spec = manifest("NetworkPolicy")["spec"]
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    ingress = {}
    for rule in spec["ingress"]:
        (port,) = [p["port"] for p in rule["ports"]]
        (peer,) = rule["from"]
        ingress[port] = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
    assert ingress == {GRPC_PORT: "voice-backend", METRICS_PORT: "monitoring"}
    egress_ports = {(p["protocol"], p["port"]) for rule in spec["egress"] for p in rule["ports"]}
    assert egress_ports == {("TCP", 5432), ("TCP", 6379), ("UDP", 53), ("TCP", 53)}
    assert all(rule.get("to") for rule in spec["egress"]), "an egress rule without `to` allows any address"


def test_config_and_secret_configure_postgres_redis_and_the_token_file() -> None:
    """The ConfigMap selects PostgreSQL and Redis; DSN, Redis URL and operator token come from the Secret."""
    config = manifest("ConfigMap")["data"]
    assert config["PURCHASE_GUARD_STORE"] == "postgres"
    assert config["PURCHASE_GUARD_BROADCAST_WINDOW"] == "redis"
    assert config["PURCHASE_GUARD_LISTEN"] == f"0.0.0.0:{GRPC_PORT}"
    assert config["PURCHASE_GUARD_METRICS_PORT"] == str(METRICS_PORT)
    secret = manifest("Secret")
    keys = set(secret["stringData"])
    container = guard_container()
    from_secret = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert set(from_secret) == {"PURCHASE_GUARD_POSTGRES_DSN", "PURCHASE_GUARD_REDIS_URL"}
    assert all(
        ref["name"] == secret["metadata"]["name"] and ref["key"] in keys for ref in from_secret.values()
    )
    (volume,) = [v for v in pod_spec()["volumes"] if "secret" in v]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    files = {f"{mount['mountPath']}/{item['path']}": item["key"] for item in volume["secret"]["items"]}
    assert files[config["PURCHASE_GUARD_OPERATOR_TOKEN_FILE"]] == "operator-token"
    assert set(files.values()) <= keys


def test_secret_placeholders_cannot_start_a_server() -> None:
    """The shipped operator token is a placeholder the guard refuses (under 24 characters)."""
    token = manifest("Secret")["stringData"]["operator-token"]
    assert len(token) < 24
    for value in manifest("Secret")["stringData"].values():
        assert "CHANGE-ME" in value


def test_every_setting_named_in_the_deploy_files_exists() -> None:
    """Every PURCHASE_GUARD_* variable the image, compose or Kubernetes sets is a known setting."""
    named: dict[str, str] = {}
    for key in manifest("ConfigMap")["data"]:
        named[key] = "k8s ConfigMap"
    for env in guard_container()["env"]:
        named[env["name"]] = "k8s Deployment"
    for service, svc in guard_services().items():
        for key in svc["environment"]:
            named[key] = f"compose {service}"
    for key in env_pairs(dockerfile_stages()[-1]):
        named[key] = "Dockerfile"
    known = _known_env_names()
    unknown = {k: where for k, where in named.items() if k.startswith("PURCHASE_GUARD_") and k not in known}
    assert not unknown, f"settings unknown to config.py: {unknown}"


# -------------------------------------------------------------------------------- compose
def test_compose_runs_two_guards_on_postgres_and_redis() -> None:
    """compose.yaml runs two guard replicas configured for PostgreSQL and the Redis broadcast window."""
    services = compose()["services"]
    assert {"postgres", "redis", "prometheus"} <= set(services)
    guards = guard_services()
    assert len(guards) >= 2
    for name, svc in guards.items():
        env = svc["environment"]
        assert env["PURCHASE_GUARD_STORE"] == "postgres", name
        assert env["PURCHASE_GUARD_POSTGRES_DSN"].startswith("postgresql://"), name
        assert "@postgres:5432/" in env["PURCHASE_GUARD_POSTGRES_DSN"], name
        assert env["PURCHASE_GUARD_REDIS_URL"] == "redis://redis:6379/0", name
        assert env["PURCHASE_GUARD_BROADCAST_WINDOW"] == "redis", name
        assert env["PURCHASE_GUARD_LISTEN"] == f"0.0.0.0:{GRPC_PORT}", name
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy", name
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy", name
        assert svc["read_only"] is True, name
        assert not str(svc["user"]).startswith("0"), name
    published = [port for svc in guards.values() for port in svc["ports"]]
    assert len(set(published)) == len(published), "each replica needs its own host port"


def test_compose_services_have_healthchecks() -> None:
    """The guards, PostgreSQL and Redis have health checks; the guards run the probe the image ships."""
    services = compose()["services"]
    for name in ("postgres", "redis", *guard_services()):
        assert services[name]["healthcheck"]["test"], name
    copied = [
        args.split()[-1] for args in instructions(dockerfile_stages()[-1], "COPY") if "healthcheck.py" in args
    ]
    for name in guard_services():
        assert copied[0] in services[name]["healthcheck"]["test"], name


def test_compose_takes_the_operator_token_from_a_secret() -> None:
    """The operator token reaches the guards as a compose secret file, never as an environment value."""
    data = compose()
    for name, svc in guard_services().items():
        (secret,) = svc["secrets"]
        assert secret["source"] in data["secrets"]
        assert svc["environment"]["PURCHASE_GUARD_OPERATOR_TOKEN_FILE"] == f"/run/secrets/{secret['target']}"
        assert "PURCHASE_GUARD_OPERATOR_TOKEN" not in svc["environment"], name
    ignored = (DEPLOY / "secrets" / ".gitignore").read_text().split()
    assert "*" in ignored, "local secrets must not be committed"


def test_prometheus_scrapes_every_guard_replica() -> None:
    """prometheus.yml scrapes the metrics port of each guard service, and compose mounts that file."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "purchase-guard"]
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    assert targets == {f"{name}:{METRICS_PORT}" for name in guard_services()}
    volumes = compose()["services"]["prometheus"]["volumes"]
    assert any(v.startswith("./prometheus.yml:/etc/prometheus/prometheus.yml") for v in volumes)


# ----------------------------------------------------------------------------- Dockerfile
def test_dockerfile_is_multi_stage_with_a_non_root_runtime() -> None:
    """The Dockerfile has a builder and a runtime stage, and the runtime runs as a non-root numeric user."""
    stages = dockerfile_stages()[1:]
    names = [instructions(s, "FROM")[0].split()[-1] for s in stages]
    assert "builder" in names
    assert names[-1] == "runtime"
    (user,) = instructions(stages[-1], "USER")
    uid = user.split(":")[0]
    assert uid.isdigit(), "a numeric uid lets Kubernetes verify runAsNonRoot"
    assert int(uid) != 0
    assert int(uid) == pod_spec()["securityContext"]["runAsUser"]


def test_dockerfile_has_a_grpc_healthcheck_and_exposes_both_ports() -> None:
    """The runtime stage has a HEALTHCHECK running the gRPC probe, and EXPOSEs 50051 and 9464."""
    runtime = dockerfile_stages()[-1]
    (check,) = instructions(runtime, "HEALTHCHECK")
    assert "healthcheck.py" in check
    assert "CMD" in check.split()
    exposed = {int(p) for args in instructions(runtime, "EXPOSE") for p in args.split()}
    assert exposed == {GRPC_PORT, METRICS_PORT}
    assert "tzdata" in " ".join(instructions(runtime, "RUN"))


def test_dockerfile_pins_torch_to_the_project_pin_from_the_cpu_index() -> None:
    """The builder installs exactly pyproject's torch version, from the PyTorch CPU index."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (pin,) = [d for d in project["dependencies"] if re.match(r"torch\b", d)]
    assert re.fullmatch(r"torch==[\d.]+", pin), "pyproject must pin torch exactly"
    text = (DEPLOY / "Dockerfile").read_text()
    assert f'"{pin}"' in text
    assert re.findall(r"torch==[\d.]+", text) == [pin] * len(re.findall(r"torch==[\d.]+", text))
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert '--index-url "${TORCH_INDEX_URL}"' in text


def test_dockerfile_bakes_the_checksummed_ge2e_weights() -> None:
    """The image carries the GE2E weights at the path its settings name, checked against the pinned sha256."""
    stages = dockerfile_stages()
    weights = env_pairs(stages[-1])["PURCHASE_GUARD_GE2E_WEIGHTS"]
    builder = " ".join(instructions(next(s for s in stages[1:] if "builder" in s[0].args), "RUN"))
    assert f"{GE2E_SHA256}  {weights}" in builder
    assert "sha256sum -c" in builder
    copied = " ".join(instructions(stages[-1], "COPY"))
    assert str(Path(weights).parent) in copied
    spec = importlib.util.find_spec("resemblyzer")
    assert spec is not None, "resemblyzer (the GE2E weights wheel) is installed by `make venv`"
    assert spec.submodule_search_locations is not None
    local = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    assert hashlib.sha256(local.read_bytes()).hexdigest() == GE2E_SHA256


def test_dockerfile_copies_only_files_in_its_build_context() -> None:
    """Every COPY from the build context names a path that exists and that the .dockerignore lets through."""
    allowed = [
        line[1:].rstrip("/")
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for stage in dockerfile_stages():
        for args in instructions(stage, "COPY"):
            parts = [p for p in args.split() if not p.startswith("--")]
            if any(p.startswith("--from") for p in args.split()):
                continue
            for source in parts[:-1]:
                if "${" in source:  # the optional ECAPA directory, given at build time
                    continue
                assert (ROOT / source).exists(), source
                assert any(source.rstrip("/") == a or source.startswith(a + "/") for a in allowed), source


# ---------------------------------------------------------------------------- healthcheck
@pytest.fixture
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(0).wait()


def test_healthcheck_follows_the_servers_health_status(
    health_server: tuple[str, health.HealthServicer],
) -> None:
    """The container probe exits 0 while the server says SERVING and 1 once it says NOT_SERVING."""
    target, servicer = health_server
    probe = load_healthcheck()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert probe.main(["--target", target, "--timeout", "5"]) == 0
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert probe.main(["--target", target, "--timeout", "5"]) == 1
    assert probe.check(target, "no.such.Service", 5.0) is False


def test_healthcheck_fails_when_nothing_answers() -> None:
    """With no server on the port the probe reports unhealthy instead of hanging or passing."""
    probe = load_healthcheck()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Bound but never listened on, then closed: nothing answers on this port.
    assert probe.check(f"127.0.0.1:{port}", "", 2.0) is False


def test_healthcheck_probes_wildcard_listen_addresses_on_loopback() -> None:
    """PURCHASE_GUARD_LISTEN=0.0.0.0:P (the image default) is probed at 127.0.0.1:P."""
    probe = load_healthcheck()
    assert probe.probe_target("0.0.0.0:50051") == "127.0.0.1:50051"
    assert probe.probe_target("[::]:6000") == "127.0.0.1:6000"
    assert probe.probe_target("10.1.2.3:7000") == "10.1.2.3:7000"
