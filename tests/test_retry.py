"""The one 40001 retry loop (sql/retry.py)."""

from __future__ import annotations

import asyncio

import pytest

from pillbug.sql.retry import retry_serialization_failures
from pillbug.util import errors


def conflict() -> errors.PgError:
    return errors.serialization_failure("lost")


def test_retries_until_success_and_reports_each_retry() -> None:
    failures = 3
    seen: list[int] = []

    async def attempt() -> str:
        nonlocal failures
        if failures:
            failures -= 1
            raise conflict()
        return "done"

    async def before(n: int) -> None:
        seen.append(n)
    assert asyncio.run(retry_serialization_failures(attempt, before_retry=before)) == "done"
    assert seen == [1, 2, 3]


def test_gives_up_after_max_retries_and_on_other_errors() -> None:
    calls = 0

    async def always_conflict() -> None:
        nonlocal calls
        calls += 1
        raise conflict()
    with pytest.raises(errors.PgError):
        asyncio.run(retry_serialization_failures(always_conflict, max_retries=4))
    assert calls == 5

    async def other() -> None:
        raise errors.syntax_error("no")
    with pytest.raises(errors.PgError) as info:
        asyncio.run(retry_serialization_failures(other))
    assert info.value.code != errors.SERIALIZATION_FAILURE


def test_may_retry_is_asked_last_and_can_refuse() -> None:
    asked: list[str] = []

    async def attempt() -> None:
        raise conflict()

    def may_retry(exc: errors.PgError) -> bool:
        asked.append(exc.code)
        return False
    with pytest.raises(errors.PgError):
        asyncio.run(retry_serialization_failures(attempt, may_retry=may_retry, max_retries=0))
    assert asked == []  # out of retries: the sink is not asked to rewind
    with pytest.raises(errors.PgError):
        asyncio.run(retry_serialization_failures(attempt, may_retry=may_retry))
    assert asked == [errors.SERIALIZATION_FAILURE]
