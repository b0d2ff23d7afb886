"""docker-compose.yml and the Kubernetes manifests, validated offline.

Compose: the compose-spec JSON schema shipped by check-jsonschema. Kubernetes: every kustomization
rendered by a real kustomize (kubectl kustomize) and every object checked by kubernetes-validate
against the bundled Kubernetes schemas in strict mode; KEDA's ScaledObject (a CRD without a bundled
schema) is checked field by field here. Both: images, commands, env vars, ports, probes and grace
periods must agree with the repository (Settings fields, python -m modules, drain timings).
"""

from __future__ import annotations

import base64
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from shared.settings import Settings
from tests.deploy.dockerfile import Dockerfile
from tests.deploy.support import (
    COMPOSE_FILE,
    DOCKERFILE,
    K8S,
    PROMETHEUS,
    REPO,
    find_kubectl,
    interpolate,
    known_series,
    load_yaml,
    module_file,
    promql_job_values,
    promql_metric_names,
    python_module_of,
    run,
    settings_env_names,
)

OVERLAYS = ["base", "overlays/dev", "overlays/production"]
K8S_VERSIONS = ["1.29.0", None]  # oldest supported here, and the newest schema kubernetes-validate bundles
DRAIN_MARGIN_S = 5  # beyond the drain: closing sockets, stopping the loop, flushing logs
SERVICE_MODULES = {"gateway": "gateway", "worker": "worker"}
PROD_SECRET_FILES = ["gateway.secrets.env", "worker.secrets.env", "redis.secrets.env"]


# ---- compose -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


def _drain_s(env: dict[str, str]) -> float:
    return float(env.get("DRAIN_GRACE_S", Settings.drain_grace_s))


def _duration_s(text: str) -> float:
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        total += float(num) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def _service_env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: str(interpolate(v)) for k, v in env.items()}


def test_compose_file_matches_the_compose_spec() -> None:
    proc = run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                str(COMPOSE_FILE)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_builds_existing_dockerfile_targets(compose: dict[str, Any]) -> None:
    stages = {s.name for s in Dockerfile.parse(DOCKERFILE).stages}
    built = {name: svc["build"] for name, svc in compose["services"].items() if "build" in svc}
    assert set(built) == set(SERVICE_MODULES)
    for name, build in built.items():
        context = (REPO / build["context"]).resolve()
        assert context == REPO, f"{name}: build context must be the repository root"
        dockerfile = context / build["dockerfile"]
        assert dockerfile.resolve() == DOCKERFILE.resolve(), dockerfile
        assert build["target"] in stages, f"{name}: no stage {build['target']!r} in the Dockerfile"
        assert build["target"] == name


@pytest.mark.parametrize("name", sorted(SERVICE_MODULES))
def test_compose_commands_env_and_grace(compose: dict[str, Any], name: str) -> None:
    svc = compose["services"][name]
    module = python_module_of(svc["command"])
    assert module == SERVICE_MODULES[name] and module_file(module) is not None
    env = _service_env(svc)
    unknown = set(env) - settings_env_names()
    assert not unknown, f"{name}: not Settings fields: {sorted(unknown)}"
    settings = Settings.from_env(env)  # every value parses, with the shell environment empty
    assert settings.redis_url.startswith("redis://redis:")
    assert _duration_s(svc["stop_grace_period"]) >= _drain_s(env) + DRAIN_MARGIN_S
    assert svc["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_ports_and_scaling(compose: dict[str, Any]) -> None:
    services = compose["services"]
    gw_env, wk_env = _service_env(services["gateway"]), _service_env(services["worker"])
    gw_port = Settings.from_env(gw_env).gateway_port
    published = [interpolate(p) for p in services["gateway"]["ports"]]
    assert published == [f"127.0.0.1:{gw_port}:{gw_port}"], "publish on loopback by default"
    worker = services["worker"]
    assert worker["deploy"]["replicas"] >= 2
    assert "ports" not in worker, "published ports collide between worker replicas"
    assert "container_name" not in worker
    assert [str(p) for p in worker["expose"]] == [str(Settings.from_env(wk_env).worker_metrics_port)]
    for name in ("prometheus", "grafana"):
        for p in services[name].get("ports", []):
            assert str(p).startswith("127.0.0.1:"), (name, p)


def test_compose_prometheus_scrapes_gateway_and_every_worker(compose: dict[str, Any]) -> None:
    services = compose["services"]
    volumes = services["prometheus"]["volumes"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in volumes if v.startswith("./")}
    assert (REPO / mounts["/etc/prometheus"]).resolve() == PROMETHEUS.resolve()
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    prom = load_yaml(PROMETHEUS / "prometheus.yml")
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    gw_port = Settings.from_env(_service_env(services["gateway"])).gateway_port
    wk_port = Settings.from_env(_service_env(services["worker"])).worker_metrics_port
    assert jobs["tts-gateway"]["static_configs"][0]["targets"] == [f"gateway:{gw_port}"]
    dns = jobs["tts-worker"]["dns_sd_configs"][0]
    assert dns["names"] == ["worker"] and dns["type"] == "A" and dns["port"] == wk_port
    for job in ("tts-gateway", "tts-worker"):
        assert jobs[job].get("metrics_path", "/metrics") == "/metrics"


def test_compose_grafana_mounts_what_provisioning_expects(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: REPO / v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}
    assert mounts["/etc/grafana/provisioning"].is_dir()
    provider = load_yaml(mounts["/etc/grafana/provisioning"] / "dashboards" / "tts.yml")["providers"][0]
    dash_dir = provider["options"]["path"]
    assert mounts[dash_dir].is_dir() and list(mounts[dash_dir].glob("*.json"))
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (mounts[dash_dir] / Path(home).relative_to(dash_dir)).is_file()
    ds = load_yaml(mounts["/etc/grafana/provisioning"] / "datasources" / "prometheus.yml")["datasources"][0]
    assert ds["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]


# ---- kubernetes --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Each kustomization rendered; production from a copy with its *.secrets.env made from the examples."""
    kubectl = find_kubectl()
    tree = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, tree)
    prod = tree / "overlays" / "production"
    for local in prod.glob("*secrets.env"):
        local.unlink()  # an operator's local copies, never used here
    out: dict[str, list[dict[str, Any]]] = {}
    for name in OVERLAYS:
        if name == "overlays/production":
            for holder in PROD_SECRET_FILES:  # each file missing alone stops the render
                for other in PROD_SECRET_FILES:
                    (prod / other).unlink(missing_ok=True)
                    if other != holder:
                        shutil.copy(prod / f"{other}.example", prod / other)
                missing = run([kubectl, "kustomize", str(tree / name)])
                assert missing.returncode != 0 and holder in missing.stderr, \
                    f"production must refuse to render without its uncommitted {holder}"
            for holder in PROD_SECRET_FILES:
                shutil.copy(prod / f"{holder}.example", prod / holder)
        proc = run([kubectl, "kustomize", str(tree / name)])
        assert proc.returncode == 0, f"{name}: {proc.stderr}"
        out[name] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return out


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _deployments(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for name, dep in _by_kind(docs, "Deployment").items():
        if name.startswith("tts-"):
            yield name, dep, dep["spec"]["template"]["spec"]["containers"][0]


def _container_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The environment a container starts with: envFrom sources, then env."""
    cms, secrets = _by_kind(docs, "ConfigMap"), _by_kind(docs, "Secret")
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        if "configMapRef" in src:
            ref = src["configMapRef"]["name"]
            assert ref in cms, f"envFrom ConfigMap {ref} is not in the render"
            env.update(cms[ref].get("data", {}))
        else:
            ref = src["secretRef"]["name"]
            assert ref in secrets, f"envFrom Secret {ref} is not in the render"
            env.update({k: base64.b64decode(v).decode() for k, v in secrets[ref].get("data", {}).items()})
            env.update(secrets[ref].get("stringData", {}))
    for e in container.get("env", []):
        assert "value" in e, f"{e['name']}: only literal env values are expected"
        env[e["name"]] = e["value"]
    return env


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate_against_kubernetes_schemas(rendered: dict[str, list[dict[str, Any]]],
                                                       overlay: str, version: str | None) -> None:
    from kubernetes_validate.utils import SchemaNotFoundError, latest_version

    version = version or latest_version()
    for doc in rendered[overlay]:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except SchemaNotFoundError:
            assert doc["apiVersion"] == "keda.sh/v1alpha1", f"no schema for {doc['kind']} {doc['apiVersion']}"
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{overlay}: {doc['kind']}/{doc['metadata']['name']} at {path}: {e.message}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployments_run_real_modules_with_real_settings(rendered: dict[str, list[dict[str, Any]]],
                                                         overlay: str) -> None:
    docs = rendered[overlay]
    seen = set()
    for name, dep, c in _deployments(docs):
        module = python_module_of(c["command"])
        assert module_file(module) is not None, f"{name}: python -m {module} is not in the repository"
        seen.add(module)
        assert c["image"].split("/")[-1].split(":")[0] == name
        env = _container_env(docs, c)
        unknown = set(env) - settings_env_names()
        assert not unknown, f"{overlay} {name}: not Settings fields: {sorted(unknown)}"
        settings = Settings.from_env(env)
        port = settings.gateway_port if module == "gateway" else settings.worker_metrics_port
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert list(ports.values()) == [port], f"{name}: container port {ports} vs settings {port}"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe in c:
                get = c[probe]["httpGet"]
                assert get["port"] in ports, f"{name} {probe}: unknown port {get['port']}"
                assert get["path"] in ("/healthz", "/readyz")
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        ann = dep["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/port"] == str(port) and ann["prometheus.io/path"] == "/metrics"
    assert seen == {"gateway", "worker"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_periods_cover_the_drain(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    for name, dep, c in _deployments(docs):
        drain = _drain_s(_container_env(docs, c))
        pre_stop = 0.0
        hook = c.get("lifecycle", {}).get("preStop")
        if hook:
            cmd = hook["exec"]["command"]
            assert cmd[0] == "sleep", cmd
            pre_stop = float(cmd[1])
        grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        needed = pre_stop + drain + DRAIN_MARGIN_S + (2 if name == "tts-gateway" else 0)
        assert grace >= needed, f"{overlay} {name}: {grace}s < preStop {pre_stop} + drain {drain} + margin"
    gateway = next(c for n, _, c in _deployments(docs) if n == "tts-gateway")
    assert gateway["lifecycle"]["preStop"], "the gateway must leave the Service before it drains"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_locked_down_and_fit_small_nodes(rendered: dict[str, list[dict[str, Any]]],
                                                   overlay: str) -> None:
    user = Dockerfile.parse(DOCKERFILE).last("worker", "USER")
    assert user is not None
    uid = int(user.args.split(":")[0])
    for name, dep, c in _deployments(rendered[overlay]):
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid
        assert pod.get("automountServiceAccountToken") is False
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        vols = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in vols[mounts["/tmp"]], f"{name}: writable /tmp (HOME for onnxruntime) missing"
        req, lim = c["resources"]["requests"], c["resources"]["limits"]
        assert _cpu(req["cpu"]) <= _cpu(lim["cpu"]) <= 2, f"{name}: a 2-core node"
        assert _mem(req["memory"]) <= _mem(lim["memory"])
    total = sum(_cpu(c["resources"]["requests"]["cpu"]) for _, _, c in _deployments(rendered[overlay]))
    assert total <= 1.5, "one gateway and one worker must fit a 2-core node's allocatable CPU"


def _cpu(v: str) -> float:
    return float(v[:-1]) / 1000 if str(v).endswith("m") else float(v)


def _mem(v: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    return int(v[:-2]) * units[v[-2:]] if v[-2:] in units else int(v)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_match_pods(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] == "Deployment"]
    for d in docs:
        if d["kind"] == "Deployment":
            sel = d["spec"]["selector"]["matchLabels"]
            assert sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        elif d["kind"] in ("Service", "PodDisruptionBudget"):
            sel = d["spec"]["selector"]
            sel = sel.get("matchLabels", sel)
            assert any(sel.items() <= labels.items() for labels in pod_labels), \
                f"{overlay}: {d['kind']}/{d['metadata']['name']} selects no pod"
        if d["kind"] == "Service":
            deps = [x for x in docs if x["kind"] == "Deployment"
                    and d["spec"]["selector"].items() <= x["spec"]["template"]["metadata"]["labels"].items()]
            names = {p["name"] for x in deps for p in x["spec"]["template"]["spec"]["containers"][0]["ports"]}
            for p in d["spec"]["ports"]:
                assert p["targetPort"] in names, f"{d['metadata']['name']}: targetPort {p['targetPort']}"
    pdbs = _by_kind(docs, "PodDisruptionBudget")
    assert set(pdbs) >= {"tts-gateway", "tts-worker"}


def test_committed_secrets_are_empty_placeholders() -> None:
    committed = [*(K8S / "base").glob("*-secrets.env"), *(K8S / "overlays" / "production").glob("*.secrets.env.example")]
    assert len(committed) == 6, committed
    for path in committed:
        if path.name == "redis-secrets.env":
            continue  # the base's in-namespace default (no password); overlays replace it
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                assert key in settings_env_names(), key
                assert value == "", f"{path.name}: {key} must stay empty in the repository"
    ignored = (K8S / "overlays" / "production" / ".gitignore").read_text(encoding="utf-8").split()
    assert "secrets.env" in ignored and "*.secrets.env" in ignored
    tracked = run(["git", "ls-files", "deploy/k8s"], cwd=REPO).stdout.splitlines()
    assert not [t for t in tracked if t.startswith("deploy/k8s/overlays/") and t.endswith("secrets.env")], tracked


def test_keda_scales_the_worker_on_queue_depth(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["overlays/production"]
    scaled = [d for d in docs if d["kind"] == "ScaledObject"]
    assert len(scaled) == 1
    so = scaled[0]
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    spec = so["spec"]
    allowed = {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod",
               "idleReplicaCount", "fallback", "advanced", "triggers", "initialCooldownPeriod"}
    assert set(spec) <= allowed, set(spec) - allowed
    target = spec["scaleTargetRef"]["name"]
    worker = _by_kind(docs, "Deployment")[target]
    assert worker["spec"]["template"]["spec"]["containers"][0]["command"][-1] == "worker"
    assert "replicas" not in worker["spec"], "KEDA owns the worker count; a replicas field fights it on apply"
    assert 2 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    assert isinstance(spec["fallback"]["replicas"], int) and spec["fallback"]["failureThreshold"] >= 1
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert set(behavior) <= {"scaleUp", "scaleDown"}
    namespace = so["metadata"]["namespace"]
    queries = []
    for trig in spec["triggers"]:
        known = {"type", "name", "metadata", "metricType", "authenticationRef", "useCachedMetrics"}
        assert set(trig) <= known, set(trig) - known
        for k, v in trig["metadata"].items():
            assert isinstance(v, str), f"KEDA trigger metadata must be strings: {k}={v!r}"
        if trig["type"] == "prometheus":
            md = trig["metadata"]
            assert md["serverAddress"].startswith("http")
            float(md["threshold"])
            queries.append(md["query"])
            assert f'namespace="{namespace}"' in md["query"], "query another namespace's workers?"
            for metric in promql_metric_names(md["query"]):
                assert known_series(metric), metric
            assert promql_job_values(md["query"]) <= {"tts-gateway", "tts-worker"}
        elif trig["type"] == "cpu":
            assert trig["metricType"] == "Utilization" and 0 < int(trig["metadata"]["value"]) <= 100
            container = trig["metadata"]["containerName"]
            assert container in [c["name"] for c in worker["spec"]["template"]["spec"]["containers"]]
        else:
            pytest.fail(f"unexpected trigger {trig['type']}")
    assert any("tts_queue_depth" in q for q in queries)
    # The queries select labels that the Kubernetes scrape config sets.
    prom = load_yaml(PROMETHEUS / "prometheus-k8s.yml")
    for job in prom["scrape_configs"]:
        relabel = {r["target_label"]: r["replacement"] for r in job["relabel_configs"]}
        assert relabel["namespace"] == namespace
        host = job["dns_sd_configs"][0]["names"][0]
        svc, ns = host.split(".")[:2]
        assert ns == namespace and svc in _by_kind(docs, "Service"), host
        port = job["dns_sd_configs"][0]["port"]
        assert port in [p["port"] for p in _by_kind(docs, "Service")[svc]["spec"]["ports"]]
        assert _by_kind(docs, "Service")[svc]["spec"]["clusterIP"] == "None", f"{svc} must be headless"
