"""The README documents every setting and every error code clients can see."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from shared.errors import ERRORS_BY_CODE
from shared.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_environment_variable_is_documented() -> None:
    missing = [f.metadata["env"] for f in fields(Settings) if f"`{f.metadata['env']}`" not in README]
    assert not missing, f"README lacks: {missing}"


def test_every_error_code_is_documented() -> None:
    missing = [code for code in ERRORS_BY_CODE if f"`{code}`" not in README]
    assert not missing, f"README lacks: {missing}"


def test_two_setup_commands() -> None:
    assert "make run" in README and "make test" in README
