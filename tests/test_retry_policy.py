"""The one retry policy (issue 14, item 2): its docstring table is the spec, and every layer agrees with it."""

from __future__ import annotations

import pytest
from worker.providers.elevenlabs import messages

from shared import retry
from shared.errors import ERRORS_BY_CODE, UpstreamBusy
from shared.retry import decide

ASKERS: tuple[retry.Asker, ...] = ("worker_pool", "gateway", "client")


def _table() -> dict[str, dict[str, str]]:
    """The docstring table: code -> {asker: yes|no|--}."""
    lines = (retry.__doc__ or "").splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("=====") and set(line) <= {"=", " "}]
    body = lines[rules[1] + 1:rules[2]]  # header rule, header, rule, rows, closing rule
    rows: dict[str, dict[str, str]] = {}
    for line in body:
        cells = line.split()
        if len(cells) < 4 or line.startswith(" "):
            continue  # a wrapped "why" column
        if line.startswith("anything else"):
            continue
        codes_part, rest = line[:26].strip(), line[26:].split()
        for code in (c.strip() for c in codes_part.split(",")):
            rows[code] = dict(zip(ASKERS, rest[:3], strict=True))
    return rows


def test_the_docstring_table_is_what_decide_answers() -> None:
    table = _table()
    assert "upstream_busy" in table and "worker_lost" in table and len(table) >= 14
    for code, answers in table.items():
        assert code in ERRORS_BY_CODE, f"{code} is not an error code"
        for asker, said in answers.items():
            assert said in ("yes", "no", "--")
            got = decide(code, audio_sent=False, attempt=1, asker=asker)  # type: ignore[arg-type]
            assert got == (said == "yes"), f"{code} asked by {asker}: table says {said}, decide says {got}"


def test_codes_outside_the_table_are_never_retried() -> None:
    listed = set(_table())
    for code in set(ERRORS_BY_CODE) - listed:
        for asker in ASKERS:
            assert not decide(code, audio_sent=False, attempt=1, asker=asker), (code, asker)


def test_the_client_flag_on_every_error_is_the_client_answer() -> None:
    for code, cls in ERRORS_BY_CODE.items():
        assert cls.retryable is decide(code, audio_sent=False, attempt=1, asker="client"), code
        assert cls("x").to_dict()["retryable"] is cls.retryable


def test_upstream_busy_means_the_client_and_the_pool_retry_but_not_the_gateway() -> None:
    # The old double meaning: retryable=True for the client, yet the gateway never re-ran it.
    assert UpstreamBusy.retryable
    assert decide("upstream_busy", audio_sent=False, attempt=1, asker="worker_pool")
    assert not decide("upstream_busy", audio_sent=False, attempt=1, asker="gateway")


@pytest.mark.parametrize("asker", ["worker_pool", "gateway"])
def test_no_retry_once_audio_went_out(asker: retry.Asker) -> None:
    for code in retry.POOL | retry.GATEWAY:
        assert not decide(code, audio_sent=True, attempt=1, asker=asker)
    # The client flag is about the request, not this context's progress.
    assert decide("worker_lost", audio_sent=True, attempt=5, asker="client")


def test_budgets() -> None:
    # The pool places a context at most three times; the gateway re-enqueues MAX_RETRIES times.
    assert [decide("upstream_disconnected", audio_sent=False, attempt=n, asker="worker_pool")
            for n in (1, 2, 3)] == [True, True, False]
    assert [decide("worker_lost", audio_sent=False, attempt=n, asker="gateway") for n in (1, 2)] == [True, False]
    assert not decide("worker_lost", audio_sent=False, attempt=1, asker="gateway", max_retries=0)
    assert decide("overloaded", audio_sent=False, attempt=3, asker="gateway", max_retries=3)


@pytest.mark.parametrize(("code", "reason"), [
    (None, ""), (1000, ""), (1008, "max_active_conversations"), (1008, "voice_not_found"), (1008, "quota"),
    (1008, "invalid api key"), (1008, "invalid_output_format"), (1008, "system_busy"), (1008, "timeout"),
    (1008, "invalid_input_message"), (1011, "boom"),
])
def test_a_socket_failure_moves_contexts_exactly_when_the_policy_allows(code: int | None, reason: str) -> None:
    failure = messages.classify_close(code, reason)
    assert failure.retry is decide(failure.error.code, audio_sent=False, attempt=1, asker="worker_pool")
    assert failure.retry is (failure.error.code != "upstream_rejected")


@pytest.mark.parametrize("status", [None, 401, 403, 404, 429, 500, 503])
def test_a_refused_handshake_moves_contexts_unless_the_request_itself_was_refused(status: int | None) -> None:
    failure = messages.classify_handshake(status)
    assert failure.retry is (status not in (401, 403, 404))


def test_only_the_pool_may_resume_after_audio_and_only_within_its_failover_budget() -> None:
    # Resuming continues where the listener stopped (nothing replayed): the pool's codes, its budget.
    assert [decide("upstream_disconnected", audio_sent=True, attempt=n, asker="worker_pool", max_retries=2,
                   resumable=True) for n in (1, 2, 3)] == [True, True, False]
    assert decide("upstream_timeout", audio_sent=True, attempt=1, asker="worker_pool", resumable=True)
    assert not decide("upstream_rejected", audio_sent=True, attempt=1, asker="worker_pool", resumable=True)
    assert not decide("upstream_disconnected", audio_sent=True, attempt=1, asker="worker_pool", max_retries=0,
                      resumable=True)
    # The gateway re-runs whole jobs: a resumable flag does not let it replay audio.
    assert not decide("worker_lost", audio_sent=True, attempt=1, asker="gateway", resumable=True)
