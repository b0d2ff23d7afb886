"""The container images, checked without a container engine.

The Dockerfile is read for what each target holds (COPY sources, ENV, USER, ports, HEALTHCHECK,
STOPSIGNAL); the requirement list is produced by the same script the build runs; and each image's
file layout is rebuilt in a temporary directory from the Dockerfile's own COPY lines (honouring
.dockerignore), then started the way the image starts it, probed with the image's own HEALTHCHECK
command and stopped with its STOPSIGNAL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.dockerfile import Dockerfile
from tests.deploy.support import (
    COMPOSE_FILE,
    DOCKERFILE,
    REPO,
    DockerIgnore,
    interpolate,
    load_yaml,
    module_file,
    python_module_of,
    run,
    settings_defaults,
    settings_env_names,
)

TARGETS = {"gateway": ("GATEWAY_PORT", "gateway"), "worker": ("WORKER_METRICS_PORT", "worker")}
# ENV an image may set that is not a Settings field: Python's own knobs and the process environment.
IMAGE_ENV = {"PATH", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "HOME",
             "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK", "PIP_ROOT_USER_ACTION"}


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return Dockerfile.parse(DOCKERFILE)


@pytest.fixture(scope="module")
def dockerignore() -> DockerIgnore:
    return DockerIgnore.load(REPO / ".dockerignore")


def test_targets_exist_and_build_on_slim_python_311(dockerfile: Dockerfile) -> None:
    names = [s.name for s in dockerfile.stages]
    assert {"gateway", "worker"} <= set(names), names
    base = dockerfile.global_args.get("PYTHON_IMAGE", "")
    assert base.startswith("python:3.11-slim"), base
    for s in dockerfile.stages:
        assert s.base in names or s.base == "${PYTHON_IMAGE}", (s.name, s.base)


def test_local_voice_is_a_build_arg_defaulting_on(dockerfile: Dockerfile) -> None:
    stages = [*dockerfile.lineage("worker"), dockerfile.stage("deps-worker")]
    args = {i.args for s in stages for i in s.all("ARG")}
    assert "WITH_LOCAL_VOICE=1" in args
    deps = dockerfile.stage("deps-worker")
    run = " ".join(i.args for i in deps.all("RUN"))
    assert "pyproject_deps.py" in run and " local " in run, run
    # The gateway never carries the GPL voice.
    assert all(src != "deps-worker" for src, _, _ in dockerfile.copies("gateway"))


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_runtime_contract(dockerfile: Dockerfile, target: str) -> None:
    port_var, module = TARGETS[target]
    user = dockerfile.last(target, "USER")
    assert user is not None
    uid = user.args.split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, f"{target}: run as a numeric non-root uid, got {user.args!r}"
    stop = dockerfile.last(target, "STOPSIGNAL")
    assert stop is not None and stop.args == "SIGTERM"
    cmd = dockerfile.last(target, "CMD")
    assert cmd is not None and cmd.exec_form() is not None
    assert python_module_of(cmd.exec_form() or []) == module
    assert module_file(module) is not None
    expose = dockerfile.last(target, "EXPOSE")
    env = dockerfile.env(target)
    assert expose is not None and expose.args == env[port_var] == str(settings_defaults()[port_var])
    hc = dockerfile.last(target, "HEALTHCHECK")
    assert hc is not None and "/healthz" in hc.args and port_var in hc.args and "curl" not in hc.args
    for name in env:
        assert name in settings_env_names() or name in IMAGE_ENV, f"{target}: ENV {name} is no Settings field"
    assert env["PYTHONPATH"].split(":") == ["/app", "/app/services"]
    assert env["LOG_FORMAT"] == "json"


def test_copied_sources_are_in_the_build_context(dockerfile: Dockerfile, dockerignore: DockerIgnore) -> None:
    stage_names = {s.name for s in dockerfile.stages}
    for s in dockerfile.stages:
        for src_stage, sources, dest in dockerfile.copies(s.name):
            if src_stage is not None:
                assert src_stage in stage_names, src_stage
                continue
            for src in sources:
                path = REPO / src
                assert path.exists(), f"COPY {src}: not in the repository"
                assert not dockerignore.excluded(src), f"COPY {src}: excluded by .dockerignore"
                if path.is_dir():
                    for f in path.rglob("*.py"):
                        rel = f.relative_to(REPO).as_posix()
                        assert "__pycache__" in rel or not dockerignore.excluded(rel), rel


def test_source_layout_matches_the_package_map(dockerfile: Dockerfile) -> None:
    """/app and /app/services on PYTHONPATH find exactly the packages pyproject maps."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    package_dir = data["tool"]["setuptools"]["package-dir"]
    for target, (_, module) in TARGETS.items():
        dests = {dest.rstrip("/"): srcs for src, srcs, dest in dockerfile.copies(target) if src is None}
        for pkg in ("shared", module):
            src = package_dir[pkg]
            expected = "/app/" + src
            assert dests.get(expected) == [src], f"{target}: expected COPY {src} {expected}, got {dests}"
            parent = str(Path(expected).parent)
            assert parent in dockerfile.env(target)["PYTHONPATH"].split(":")


def test_dockerignore_keeps_secrets_and_clutter_out(dockerignore: DockerIgnore) -> None:
    for rel in (".git/config", ".venv/bin/python", ".env", "tests/conftest.py", "shared/__pycache__/x.pyc",
                "services/gateway/__pycache__/app.cpython-311.pyc", "deploy/k8s/base/gateway-secrets.env",
                "deploy/k8s/overlays/production/redis.secrets.env"):
        assert dockerignore.excluded(rel), rel
    for rel in ("pyproject.toml", "deploy/docker/pyproject_deps.py", "shared/settings.py",
                "services/worker/app.py", "services/gateway/app.py"):
        assert not dockerignore.excluded(rel), rel


def _deps(*extras: str) -> list[str]:
    proc = subprocess.run([sys.executable, str(REPO / "deploy/docker/pyproject_deps.py"),
                           str(REPO / "pyproject.toml"), *extras], capture_output=True, text=True, check=True)
    return proc.stdout.splitlines()


def test_requirements_come_from_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert _deps() == project["dependencies"]
    assert _deps("local") == project["dependencies"] + project["optional-dependencies"]["local"]
    assert any(r.startswith("piper-tts") for r in _deps("local"))
    assert not any(r.startswith("piper-tts") for r in _deps())
    bad = run([sys.executable, str(REPO / "deploy/docker/pyproject_deps.py"), str(REPO / "pyproject.toml"),
               "no-such-extra"])
    assert bad.returncode != 0 and "no-such-extra" in bad.stderr


# ---- the images' file layout, run for real ---------------------------------------------------------

_RUN_MODULE = """\
import runpy, sys
# Only the image's files: drop the editable install's finders so a missing COPY cannot hide.
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
sys.path_importer_cache.clear()
mod = sys.argv[1]
sys.argv = [mod]
runpy.run_module(mod, run_name="__main__", alter_sys=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _build_layout(dockerfile: Dockerfile, dockerignore: DockerIgnore, target: str, root: Path) -> None:
    for src_stage, sources, dest in dockerfile.copies(target):
        if src_stage is not None:
            continue  # the virtualenv: this interpreter's site-packages stand in for it
        for src in sources:
            for f in (REPO / src).rglob("*"):
                rel = f.relative_to(REPO).as_posix()
                if f.is_file() and not dockerignore.excluded(rel):
                    out = root / dest.lstrip("/") / f.relative_to(REPO / src)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, out)


def _image_env(dockerfile: Dockerfile, target: str, root: Path,
               service_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "REDIS", "GATEWAY", "WORKER"))}
    for key, value in dockerfile.env(target).items():
        if key == "PATH":
            continue
        parts = value.split(":")
        env[key] = ":".join(str(root / p.lstrip("/")) if p.startswith("/app") else p for p in parts)
    env["HOME"] = str(root / "tmp")
    (root / "tmp").mkdir(exist_ok=True)
    env.update(service_env)
    return env


def _compose_env(service: str) -> dict[str, str]:
    compose = load_yaml(COMPOSE_FILE)
    raw = compose["services"][service].get("environment", {})
    return {k: str(interpolate(v)) for k, v in raw.items()}


def _healthcheck(dockerfile: Dockerfile, target: str, env: dict[str, str]) -> int:
    hc = dockerfile.last(target, "HEALTHCHECK")
    assert hc is not None
    cmd = json.loads(hc.args[hc.args.index("CMD") + 3:])
    assert cmd[0] == "python"
    return subprocess.run([sys.executable, *cmd[1:]], env=env, check=False, capture_output=True,
                          timeout=10).returncode


def _wait_http(url: str, status: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"process exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                last = r.status
        except urllib.error.HTTPError as e:
            last = e.code
        except OSError as e:
            last = e
        if last == status:
            return
        time.sleep(0.2)
    pytest.fail(f"{url}: wanted {status}, last {last!r}")


_IMPORTS = {"gateway": ["gateway.app", "gateway.__main__"],
            "worker": ["worker.app", "worker.__main__", "worker.providers.local",
                       "worker.providers.elevenlabs"]}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_image_layout_holds_every_module_it_imports(dockerfile: Dockerfile, dockerignore: DockerIgnore,
                                                    tmp_path: Path, target: str) -> None:
    """Import the service from the image's files alone (the gateway image has no worker code, and so on)."""
    if target == "worker":
        import piper  # noqa: F401  (the `local` extra, which `make test` installs)
    _build_layout(dockerfile, dockerignore, target, tmp_path)
    env = _image_env(dockerfile, target, tmp_path, {})
    code = _RUN_MODULE.split("mod = ")[0] + (
        "import importlib\n"
        f"for name in {_IMPORTS[target]!r}:\n"
        "    print(importlib.import_module(name).__file__)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path / "app", env=env, check=False,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = proc.stdout.split()
    assert len(files) == len(_IMPORTS[target])
    for f in files:
        assert Path(f).is_relative_to(tmp_path / "app"), f"{f} came from outside the image layout"


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(10)


@pytest.mark.timeout(120)
def test_images_start_answer_their_healthchecks_and_drain_on_sigterm(
        dockerfile: Dockerfile, dockerignore: DockerIgnore, redis_url: str, tmp_path: Path,
        procs: list[subprocess.Popen[bytes]]) -> None:
    import piper  # noqa: F401  (the `local` extra, which `make test` installs)
    grace = 2.0
    ports = {"gateway": _free_port(), "worker": _free_port()}
    envs: dict[str, dict[str, str]] = {}
    logs: dict[str, Path] = {}
    for target in ("worker", "gateway"):
        root = tmp_path / target
        _build_layout(dockerfile, dockerignore, target, root)
        port_var, module = TARGETS[target]
        service_env = _compose_env(target)
        service_env.update({"REDIS_URL": redis_url, port_var: str(ports[target]), "DRAIN_GRACE_S": str(grace),
                            "GATEWAY_HOST": "127.0.0.1", "AUTH_DISABLED": "true"})
        env = envs[target] = _image_env(dockerfile, target, root, service_env)
        workdir = dockerfile.last(target, "WORKDIR")
        assert workdir is not None
        cwd = root / workdir.args.lstrip("/")
        logs[target] = tmp_path / f"{target}.log"
        with logs[target].open("wb") as log:
            procs.append(subprocess.Popen([sys.executable, "-c", _RUN_MODULE, module], cwd=cwd, env=env,
                                          stdout=log, stderr=subprocess.STDOUT))
    worker, gateway = procs
    try:
        _wait_http(f"http://127.0.0.1:{ports['worker']}/readyz", 200, 60, worker)
        _wait_http(f"http://127.0.0.1:{ports['gateway']}/readyz", 200, 30, gateway)
        for target in ("gateway", "worker"):
            assert _healthcheck(dockerfile, target, envs[target]) == 0, target
        t0 = time.monotonic()
        for p in (gateway, worker):
            p.send_signal(signal.SIGTERM)
        for p in (gateway, worker):
            assert p.wait(grace + 15) == 0
        assert time.monotonic() - t0 < grace + 15
        for target in ("gateway", "worker"):
            assert _healthcheck(dockerfile, target, envs[target]) != 0, f"{target}: healthy after exit"
    finally:
        for target, log_path in logs.items():
            text = log_path.read_text(encoding="utf-8", errors="replace")
            for bad in ("Traceback", "was never awaited", "Task exception was never retrieved"):
                assert bad not in text, f"{target} log has {bad!r}:\n{text[-3000:]}"
