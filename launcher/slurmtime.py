"""Slurm's time-limit formats, parsed strictly (pure functions)."""

from __future__ import annotations

import re

_FORMATS = ("MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS")
_PATTERN = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


class TimeFormatError(ValueError):
    """The text is not one of Slurm's time formats."""


def parse_time(text: str) -> int:
    """Seconds in a Slurm time limit such as ``90``, ``1:30:00`` or ``2-12``.

    Follows sbatch(1): without days, one number is minutes, two are MM:SS and three
    HH:MM:SS; with days, the parts after ``D-`` are HH, HH:MM or HH:MM:SS. Minutes and
    seconds must be below 60 (hours below 24 once days are given); zero is rejected.
    """
    match = _PATTERN.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise TimeFormatError(f"{text!r} is not a Slurm time; use one of {', '.join(_FORMATS)}")
    days_s, first, second, third = match.groups()
    parts = [int(p) for p in (first, second, third) if p is not None]
    if days_s is not None:
        hours, minutes, seconds = (parts + [0, 0])[:3]
        days = int(days_s)
        _bounded(text, hours, 24, "hours")
    elif len(parts) == 1:
        days, hours, minutes, seconds = 0, 0, parts[0], 0
    elif len(parts) == 2:
        days, hours, (minutes, seconds) = 0, 0, parts
        _bounded(text, minutes, 60, "minutes")
    else:
        days, (hours, minutes, seconds) = 0, parts
        _bounded(text, minutes, 60, "minutes")
    _bounded(text, seconds, 60, "seconds")
    if days_s is not None:
        _bounded(text, minutes, 60, "minutes")
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total == 0:
        raise TimeFormatError(f"{text!r} is a zero time limit")
    return total


def format_time(seconds: int) -> str:
    """``D-HH:MM:SS`` for a positive number of seconds (the form sbatch accepts)."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


def check_time(text: str) -> str | None:
    """A schema check: ``None`` when valid, else the reason."""
    try:
        parse_time(text)
    except TimeFormatError as exc:
        return str(exc)
    return None


def _bounded(text: str, value: int, limit: int, what: str) -> None:
    if value >= limit:
        raise TimeFormatError(f"{text!r}: {what} must be below {limit}")
