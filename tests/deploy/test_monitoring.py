"""Prometheus configs, alert rules, the Grafana dashboard and YAML hygiene of everything deploy/ ships.

promtool (Debian's prometheus package; installed with apt-get when missing, never skipped) checks
both Prometheus configs, the rules, and runs the rules' unit tests; the dashboard's PromQL is parsed
by promtool too. Every metric any of them queries must exist in shared/metrics.py (or be a standard
series, or one listed as pending in tests/deploy/support.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.support import (
    COMPOSE_FILE,
    DEPLOY,
    GRAFANA,
    PENDING_METRICS,
    PROMETHEUS,
    REPO,
    ensure_promtool,
    exported_series,
    known_series,
    load_yaml,
    promql_job_values,
    promql_metric_names,
    run,
)

DASHBOARD = GRAFANA / "dashboards" / "tts-gateway.json"
ALERTS = PROMETHEUS / "alerts.yml"
JOBS = {"tts-gateway", "tts-worker"}
REQUIRED_ALERTS = {"TTSHighTimeToFirstAudio", "TTSQueueGrowing", "TTSNoWorkers", "TTSHighErrorRate"}


@pytest.fixture(scope="module")
def promtool() -> str:
    return ensure_promtool()


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return [p for p in out if p.get("type") != "row"]


def _exprs(dash: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in _panels(dash) for t in p.get("targets", [])]


def _alert_rules() -> list[dict[str, Any]]:
    return [r for g in load_yaml(ALERTS)["groups"] for r in g["rules"] if "alert" in r]


# ---- promtool ----------------------------------------------------------------------------------------

@pytest.mark.timeout(900)
@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-k8s.yml"])
def test_promtool_check_config(promtool: str, config: str) -> None:
    proc = run([promtool, "check", "config", config], cwd=PROMETHEUS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.timeout(900)
def test_promtool_check_rules(promtool: str) -> None:
    proc = run([promtool, "check", "rules", ALERTS.name], cwd=PROMETHEUS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.timeout(900)
def test_promtool_rule_unit_tests(promtool: str) -> None:
    proc = run([promtool, "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.timeout(900)
def test_dashboard_promql_parses(promtool: str, dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Each panel query becomes a recording rule, which promtool parses (Grafana's variables filled in)."""
    rules = [{"record": f"dashboard:panel_{i}", "expr": expr.replace("$__rate_interval", "1m")}
             for i, (_, expr) in enumerate(_exprs(dashboard))]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    proc = run([promtool, "check", "rules", str(path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---- what the queries select -------------------------------------------------------------------------

def test_promql_name_extraction() -> None:
    expr = ('histogram_quantile(0.9, sum by (le, provider) (rate(tts_x_bucket{job="a", code=~"b|c"}[5m])))'
            ' / on () group_left sum(up{job="tts-worker"} offset 5m) or vector(0) and absent(tts_y)')
    assert promql_metric_names(expr) == {"tts_x_bucket", "up", "tts_y"}
    assert promql_job_values(expr) == {"a", "tts-worker"}


def test_alerts_query_existing_metrics_and_jobs() -> None:
    rules = _alert_rules()
    assert REQUIRED_ALERTS <= {r["alert"] for r in rules}
    for r in rules:
        names = promql_metric_names(r["expr"])
        assert names, r["alert"]
        for name in names:
            assert known_series(name), f"{r['alert']}: {name} is not in shared/metrics.py"
        assert promql_job_values(r["expr"]) <= JOBS, r["alert"]
        assert r["labels"]["severity"] in ("info", "warning", "critical")
        assert r["annotations"]["summary"] and r["annotations"]["description"]
        assert re.fullmatch(r"\d+[smh]", r["for"]), r["alert"]


def test_every_alert_has_a_firing_unit_test() -> None:
    tests = load_yaml(PROMETHEUS / "alerts_test.yml")["tests"]
    fired = {c["alertname"] for t in tests for c in t["alert_rule_test"] if c["exp_alerts"]}
    assert {r["alert"] for r in _alert_rules()} <= fired


def test_dashboard_queries_existing_metrics_and_jobs(dashboard: dict[str, Any]) -> None:
    for title, expr in _exprs(dashboard):
        for name in promql_metric_names(expr):
            assert known_series(name), f"panel {title!r}: {name} is not in shared/metrics.py"
        assert promql_job_values(expr) <= JOBS, title


def test_pending_metrics_are_declared_as_expected() -> None:
    """Once another change exports a pending metric, it must have the type the queries assume."""
    for name, kind in PENDING_METRICS.items():
        if name in exported_series():
            assert exported_series()[name] == kind, f"{name} should be a {kind}"


def test_prometheus_job_names_are_the_ones_queried() -> None:
    for config in ("prometheus.yml", "prometheus-k8s.yml"):
        jobs = {j["job_name"] for j in load_yaml(PROMETHEUS / config)["scrape_configs"]}
        assert JOBS <= jobs, config


# ---- the dashboard -----------------------------------------------------------------------------------

def test_dashboard_shows_what_operators_need(dashboard: dict[str, Any]) -> None:
    exprs = [e for _, e in _exprs(dashboard)]

    def has(metric: str, *fragments: str) -> bool:
        return any(metric in e and all(f in e for f in fragments) for e in exprs)

    for q in ("0.5", "0.9", "0.99"):
        assert has("tts_time_to_first_audio_seconds_bucket", f"histogram_quantile({q},"), q
        assert has("tts_queue_wait_seconds_bucket", f"histogram_quantile({q},"), q
        assert has("tts_upstream_ttfb_seconds_bucket", f"histogram_quantile({q},"), q
    assert has("tts_active_sessions")
    assert has("tts_errors_total", "by (code)")
    assert has("tts_jobs_total", "outcome")
    assert has("tts_pool_sockets", "state")
    assert has("tts_pool_live_contexts")
    assert has("tts_queue_depth")
    assert has("up", 'job="tts-worker"')


def test_dashboard_structure(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "tts-gateway"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    var = {v["name"]: v for v in dashboard["templating"]["list"]}["datasource"]
    assert var["type"] == "datasource" and var["query"] == "prometheus"
    cells: set[tuple[int, int]] = set()
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
    for p in _panels(dashboard):
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]


def test_grafana_provisioning() -> None:
    ds = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    assert ds["apiVersion"] == 1
    (only,) = ds["datasources"]
    assert only["type"] == "prometheus" and only["isDefault"] is True
    prov = load_yaml(GRAFANA / "provisioning" / "dashboards" / "tts.yml")
    assert prov["apiVersion"] == 1 and prov["providers"][0]["type"] == "file"


# ---- YAML hygiene ------------------------------------------------------------------------------------

def test_yamllint() -> None:
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    conf = YamlLintConfig(file=str(DEPLOY / "yamllint.yml"))
    files = [COMPOSE_FILE, *sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml"))]
    problems = []
    for f in files:
        for problem in linter.run(f.read_text(encoding="utf-8"), conf, str(f)):
            problems.append(f"{f.relative_to(REPO)}:{problem.line}:{problem.column}: {problem.desc} "
                            f"({problem.rule})")
    assert not problems, "\n".join(problems)
