import pytest

from aiinfra.launcher.slurmtime import TimeFormatError, format_time, parse_time


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90 * 60),
    ("5:30", 5 * 60 + 30),
    ("01:30:00", 5400),
    ("100:00:00", 360000),
    ("2-12", (2 * 24 + 12) * 3600),
    ("1-02:03", (26 * 60 + 3) * 60),
    ("1-02:03:04", ((26 * 60) + 3) * 60 + 4),
    (" 10 ", 600),
])
def test_valid_slurm_times(text: str, seconds: int) -> None:
    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", [
    "", "1h", "1:2:3:4", "00:61", "1:60:00", "1-24", "1-1:60", "0", "00:00:00", "-5",
    "1.5", "2-", "1--2", "a-b",
])
def test_invalid_slurm_times_are_rejected_with_the_formats(text: str) -> None:
    with pytest.raises(TimeFormatError) as err:
        parse_time(text)
    assert repr(text.strip()) in str(err.value) or repr(text) in str(err.value)


@pytest.mark.parametrize("seconds", [1, 59, 3600, 86399, 86400, 3 * 86400 + 5])
def test_format_round_trips(seconds: int) -> None:
    assert parse_time(format_time(seconds)) == seconds


def test_format_uses_days_only_past_a_day() -> None:
    assert format_time(5400) == "01:30:00"
    assert format_time(90000) == "1-01:00:00"
