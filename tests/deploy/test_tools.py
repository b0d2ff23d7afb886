"""The packages the deployment checks need are installed (otherwise their modules are not collected)."""

from __future__ import annotations

import pytest

from tests.deploy.conftest import MISSING


def test_deploy_check_packages_are_installed() -> None:
    if MISSING:
        pytest.fail(f"tests/deploy needs {', '.join(MISSING)} (pyproject's `test` extra): "
                    f"pip install {' '.join(MISSING)}")
