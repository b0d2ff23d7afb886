"""Debian's chromium for browser tests: installed on demand with apt, never downloaded by Playwright.

Nothing is skipped: when the browser is missing and cannot be installed, the test fails and says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# What the browser needs to run headless in a container without reaching anything but this machine.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
_APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def _apt(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=180", *args], env=_APT_ENV, timeout=timeout,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)


def ensure_chromium() -> str:
    """Path of the system chromium, installing the Debian package first when it is missing."""
    if CHROMIUM.exists():
        return str(CHROMIUM)
    if shutil.which("apt-get") is None:
        pytest.fail(f"{CHROMIUM} is missing and there is no apt-get to install it: install Debian's "
                    "'chromium' package (or your distribution's) and run again")
    if os.geteuid() != 0:
        pytest.fail(f"{CHROMIUM} is missing and installing it needs root: run "
                    "'sudo apt-get update && sudo apt-get install -y chromium' and run again")
    update = _apt("update", timeout=300)
    install = _apt("install", "-y", "chromium", timeout=900)
    if install.returncode != 0 or not CHROMIUM.exists():
        tail = "\n".join((update.stderr + install.stdout + install.stderr).strip().splitlines()[-20:])
        pytest.fail(f"could not install Debian's chromium (apt-get exited {install.returncode}):\n{tail}")
    return str(CHROMIUM)
