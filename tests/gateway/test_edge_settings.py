"""Settings that guard the edge: finite numbers, strong secrets, a keyless gateway on loopback."""

from __future__ import annotations

import pytest

from shared.settings import Settings, SettingsError


@pytest.mark.parametrize("raw", ["inf", "-inf", "nan", "1e999"])
def test_non_finite_numbers_are_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError, match="CACHE_TTL_S"):
        Settings.from_env({"CACHE_TTL_S": raw})


@pytest.mark.parametrize(("name", "weak"), [("ADMIN_TOKEN", "changeme"), ("ADMIN_TOKEN", "ab" * 20),
                                            ("TOKEN_SECRET", "x" * 64), ("TOKEN_SECRET", "password")])
def test_weak_secrets_stop_the_process_without_echoing_them(name: str, weak: str) -> None:
    with pytest.raises(SettingsError, match=name) as e:
        Settings.from_env({name: weak})
    assert weak not in str(e.value)


def test_strong_or_unset_secrets_pass() -> None:
    s = Settings.from_env({"ADMIN_TOKEN": "9f2c7e41d0b8a3f65e1c", "TOKEN_SECRET": ""})
    assert s.admin_token == "9f2c7e41d0b8a3f65e1c" and s.token_secret is None


def test_a_keyless_gateway_binds_loopback_unless_told_otherwise() -> None:
    assert Settings.from_env({"AUTH_DISABLED": "true"}).gateway_host == "127.0.0.1"
    assert Settings.from_env({"AUTH_DISABLED": "true", "GATEWAY_HOST": "0.0.0.0"}).gateway_host == "0.0.0.0"
    assert Settings.from_env({}).gateway_host == "0.0.0.0"
