"""What each Kubernetes pod may reach and hold, checked on the rendered manifests (issue 12, item 9).

Each service mounts only its own secrets (the gateway never the ElevenLabs key, workers never the
admin token or the token secret); REDIS_URL, which carries Redis' password, is in a Secret, never a
ConfigMap; the dev Redis requires the password the services use; and the NetworkPolicies, evaluated
here the way a CNI does (a pod selected by any ingress policy takes only what some rule admits),
let clients reach only the gateway, Prometheus scrape, and only gateways and workers reach Redis.
"""

from __future__ import annotations

import base64
from dataclasses import fields
from typing import Any
from urllib.parse import urlsplit

import pytest
from arq.connections import RedisSettings

from shared.redis_client import create_redis
from shared.settings import Settings
from tests.deploy.support import K8S
from tests.deploy.test_manifests import OVERLAYS, _by_kind, _deployments, rendered  # noqa: F401

SECRET_ENV = {f.metadata["env"] for f in fields(Settings) if f.metadata.get("secret")}
OWN_SECRETS = {"tts-gateway": {"ADMIN_TOKEN", "TOKEN_SECRET", "REDIS_URL"},
               "tts-worker": {"ELEVENLABS_API_KEY", "REDIS_URL"}}
NS = "kubernetes.io/metadata.name"
PROMETHEUS = ({NS: "monitoring"}, {"app.kubernetes.io/name": "prometheus"})


def _base_name(name: str) -> str:
    """A generated Secret's name without kustomize's content-hash suffix."""
    head, _, tail = name.rpartition("-")
    return head if head and len(tail) == 10 and tail.isalnum() else name


def _secret_keys(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, set[str]]:
    secrets = _by_kind(docs, "Secret")
    out: dict[str, set[str]] = {}
    for src in container.get("envFrom", []):
        if "secretRef" in src:
            name = src["secretRef"]["name"]
            out[name] = set(secrets[name].get("data", {})) | set(secrets[name].get("stringData", {}))
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_mounts_only_its_own_secrets(rendered: dict[str, list[dict[str, Any]]],  # noqa: F811
                                                  overlay: str) -> None:
    docs = rendered[overlay]
    mounted: dict[str, dict[str, set[str]]] = {}
    for name, _, c in _deployments(docs):
        mounted[name] = _secret_keys(docs, c)
        keys = set().union(*mounted[name].values())
        assert keys <= OWN_SECRETS[name], f"{overlay} {name} gets {sorted(keys - OWN_SECRETS[name])}"
        assert "REDIS_URL" in keys
        literal = {e["name"] for e in c.get("env", [])}
        assert not literal & (SECRET_ENV | {"REDIS_URL"}), f"{name}: a secret as a literal env value"
    assert "ELEVENLABS_API_KEY" not in set().union(*mounted["tts-gateway"].values())
    assert not {"ADMIN_TOKEN", "TOKEN_SECRET"} & set().union(*mounted["tts-worker"].values())
    shared = set(mounted["tts-gateway"]) & set(mounted["tts-worker"])
    assert [_base_name(n) for n in shared] == ["tts-redis"], f"{overlay}: Secrets mounted by both: {shared}"
    for cm in _by_kind(docs, "ConfigMap").values():
        exposed = set(cm.get("data", {})) & (SECRET_ENV | {"REDIS_URL"})
        assert not exposed, f"{overlay}: ConfigMap {cm['metadata']['name']} holds {exposed}"


def test_dev_redis_requires_the_password_the_services_use(rendered: dict[str, list[dict[str, Any]]]) -> None:  # noqa: F811
    docs = rendered["overlays/dev"]
    redis = _by_kind(docs, "Deployment")["redis"]["spec"]["template"]["spec"]["containers"][0]
    args = redis["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in redis["env"]}
    assert env["REDIS_PASSWORD"] == env["REDISCLI_AUTH"]  # the probe authenticates too
    ref = env["REDIS_PASSWORD"]
    secrets = _by_kind(docs, "Secret")
    password = base64.b64decode(secrets[ref["name"]]["data"][ref["key"]]).decode()
    redis_secret = next(s for n, s in secrets.items() if _base_name(n) == "tts-redis")
    url = base64.b64decode(redis_secret["data"]["REDIS_URL"]).decode()
    assert password and urlsplit(url).password == password
    assert urlsplit(url).hostname == "redis"


def test_production_redis_is_tls_with_a_password() -> None:
    example = (K8S / "overlays" / "production" / "redis.secrets.env.example").read_text(encoding="utf-8")
    assert "rediss://" in example  # the documented form
    url = "rediss://:s3cret@redis.example.internal:6380/0"
    assert RedisSettings.from_dsn(url).ssl is True and RedisSettings.from_dsn(url).password == "s3cret"
    client = create_redis(url)
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert client.connection_pool.connection_class.__name__ == "SSLConnection"
        assert kwargs["password"] == "s3cret"
    finally:
        client.connection_pool.reset()
    assert Settings.from_env({"REDIS_URL": url}).secrets() == ["s3cret"]  # scrubbed from logs


# ---- NetworkPolicy, evaluated ----------------------------------------------------------------------

def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return False
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def _port_ok(ports: list[dict[str, Any]] | None, name: str, number: int) -> bool:
    return not ports or any(p.get("port") in (name, number) and p.get("protocol", "TCP") == "TCP" for p in ports)


def _admits(docs: list[dict[str, Any]], namespace: str, src: tuple[dict[str, str], dict[str, str]] | None,
            dst_labels: dict[str, str], port_name: str, port: int) -> bool:
    """Whether a connection from ``src`` ((namespace labels, pod labels); None: outside the cluster) gets in."""
    policies = [p for p in docs if p["kind"] == "NetworkPolicy" and "Ingress" in p["spec"].get("policyTypes", [])
                and _selects(p["spec"]["podSelector"], dst_labels)]
    if not policies:
        return True
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            if not _port_ok(rule.get("ports"), port_name, port):
                continue
            peers = rule.get("from")
            if not peers:
                return True
            for peer in peers:
                if "ipBlock" in peer:
                    if src is None:
                        return True
                    continue
                if src is None:
                    continue
                ns_labels, pod_labels = src
                ns_ok = (_selects(peer["namespaceSelector"], ns_labels) if "namespaceSelector" in peer
                         else ns_labels.get(NS) == namespace)
                if ns_ok and ("podSelector" not in peer or _selects(peer["podSelector"], pod_labels)):
                    return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_open_only_the_gateway_to_clients(rendered: dict[str, list[dict[str, Any]]],  # noqa: F811
                                                           overlay: str) -> None:
    docs = rendered[overlay]
    pols = _by_kind(docs, "NetworkPolicy")
    deny = [p for p in pols.values() if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")]
    assert deny, f"{overlay}: no default-deny ingress policy"
    namespace = next((d["metadata"].get("namespace") for d in docs if d["kind"] == "Deployment"), None) or "default"
    here = {NS: namespace}
    pods = {name: dep["spec"]["template"]["metadata"]["labels"] for name, dep in _by_kind(docs, "Deployment").items()}
    gateway, worker = pods["tts-gateway"], pods["tts-worker"]
    stranger = (here, {"app.kubernetes.io/name": "debug-shell"})
    monitoring_other = ({NS: "monitoring"}, {"app.kubernetes.io/name": "grafana"})

    def can(src: tuple[dict[str, str], dict[str, str]] | None, dst: dict[str, str], name: str, port: int) -> bool:
        return _admits(docs, namespace, src, dst, name, port)

    # Clients (from outside, or any pod) reach the gateway's one port, and nothing else of it.
    assert can(None, gateway, "http", 8080) and can(stranger, gateway, "http", 8080)
    assert not can(None, gateway, "other", 9999)
    assert can(PROMETHEUS, gateway, "http", 8080)
    # Worker metrics: Prometheus only.
    assert can(PROMETHEUS, worker, "metrics", 9100)
    for src in (None, stranger, monitoring_other, (here, gateway)):
        assert not can(src, worker, "metrics", 9100), src
    if "redis" in pods:  # overlays/dev runs Redis in the namespace
        redis = pods["redis"]
        assert can((here, gateway), redis, "redis", 6379) and can((here, worker), redis, "redis", 6379)
        for src in (None, stranger, PROMETHEUS, ({NS: "elsewhere"}, gateway)):
            assert not can(src, redis, "redis", 6379), src


# ---- docker compose --------------------------------------------------------------------------------

def test_compose_secrets_reach_only_their_holder_and_grafana_has_no_default_password() -> None:
    from tests.deploy.support import COMPOSE_FILE, load_yaml

    services = load_yaml(COMPOSE_FILE)["services"]
    gateway, worker = services["gateway"]["environment"], services["worker"]["environment"]
    assert "ELEVENLABS_API_KEY" not in gateway and {"ADMIN_TOKEN", "TOKEN_SECRET"} <= set(gateway)
    assert "ELEVENLABS_API_KEY" in worker and not {"ADMIN_TOKEN", "TOKEN_SECRET"} & set(worker)
    # The health/metrics port defaults to loopback (make run); a container must say 0.0.0.0.
    assert Settings.worker_metrics_host == "127.0.0.1" and worker["WORKER_METRICS_HOST"] == "0.0.0.0"
    password = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    # ${VAR:?message}: compose refuses to start without it; never a default such as admin.
    assert password.startswith("${GRAFANA_ADMIN_PASSWORD:?") and ":-" not in password, password
    assert "ports" not in services["redis"], "Redis stays on the compose network"
