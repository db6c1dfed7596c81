"""The one parser of times and durations: the forms people write, and clear refusals of the rest."""

from __future__ import annotations

import pytest

from gpu_rca.schemas.errors import InputError, UsageError
from gpu_rca.schemas.timefmt import (
    parse_duration_ns,
    parse_instant_ns,
    parse_rfc3339_ns,
    parse_time_ns,
    rfc3339,
    short_utc,
)

S = 1_000_000_000
NOW = 1_767_261_600 * S  # 2026-01-01T10:00:00Z


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("90s", 90),
        ("15m", 900),
        ("2h", 7200),
        ("1d", 86_400),
        ("1.5h", 5400),
        ("1h30m", 5400),
        ("2m30s", 150),
        ("1h0m5s", 3605),
        ("1m5ms", 60.005),
        (" 1h 30m ", 5400),
    ],
)
def test_durations_single_and_compound(text: str, seconds: float) -> None:
    assert parse_duration_ns(text) == round(seconds * S)


@pytest.mark.parametrize("text", ["", "1x", "h", "1h30", "-1h", "1.h", "30 seconds", "1h-30m", "2w", "1e3s"])
def test_bad_durations_name_the_option_and_the_forms(text: str) -> None:
    with pytest.raises(UsageError) as error:
        parse_duration_ns(text, "--lookback")
    assert str(error.value) == f"--lookback: {text!r} is not a duration like 30s, 2h or 1h30m"
    assert error.value.exit_code == 2


def test_times_rfc3339_epoch_seconds_and_durations_back_from_now() -> None:
    assert parse_time_ns("2026-01-01T10:00:00Z") == NOW
    assert parse_time_ns("2026-01-01T11:30:00+01:30") == NOW
    assert parse_time_ns("2026-01-01T10:00:00.123456789Z") == NOW + 123_456_000  # sub-µs digits dropped
    assert parse_time_ns("1767261600") == NOW
    assert parse_time_ns("1767261600.5") == NOW + S // 2
    assert parse_time_ns(1767261600) == NOW
    assert parse_time_ns("1h30m", now_ns=NOW) == NOW - 5400 * S
    assert parse_time_ns("2h", now_ns=NOW) == NOW - 7200 * S


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1x", "--since: '1x' is not RFC 3339, epoch seconds or a duration like 2h or 1h30m"),
        ("yesterday", "--since: 'yesterday' is not RFC 3339, epoch seconds or a duration like 2h or 1h30m"),
        ("2026-01-01T10:00:00", "--since: '2026-01-01T10:00:00' has no time zone; add Z or an offset"),
        ("99999999999999999999", "--since: '99999999999999999999' is too far in the future for epoch seconds"),
    ],
)
def test_bad_times_are_usage_errors_naming_the_option(text: str, message: str) -> None:
    with pytest.raises(UsageError) as error:
        parse_time_ns(text, what="--since")
    assert str(error.value) == message


def test_an_instant_is_rfc3339_or_epoch_seconds_but_not_a_duration() -> None:
    assert parse_instant_ns("2026-01-01T10:00:00Z", "--boot-time") == NOW
    assert parse_instant_ns("1767261600", "--boot-time") == NOW
    with pytest.raises(UsageError, match=r"^--boot-time: '2h' is not RFC 3339 or epoch seconds$"):
        parse_instant_ns("2h", "--boot-time")


def test_rfc3339_data_errors_are_input_errors_and_utc_can_be_assumed() -> None:
    with pytest.raises(InputError, match="not an RFC 3339 time: 'later'"):
        parse_rfc3339_ns("later")
    with pytest.raises(InputError, match="without a UTC offset"):
        parse_rfc3339_ns("2026-01-01T10:00:00")
    assert parse_rfc3339_ns("2026-01-01T10:00:00", assume_utc=True) == NOW


def test_formatting_round_trips() -> None:
    assert rfc3339(NOW) == "2026-01-01T10:00:00Z"
    assert rfc3339(NOW + 250_000_000) == "2026-01-01T10:00:00.250Z"
    assert rfc3339(None) is None
    assert parse_rfc3339_ns(rfc3339(NOW + 250_000_000)) == NOW + 250_000_000
    assert short_utc(NOW) == "2026-01-01 10:00:00 UTC"
