"""Kernel-log parsing: every common log format, signature classes kept as data, one scan.

Pure functions over log text. ``scan`` finds each signature's literal keyword with
``str.find`` (C speed), parses only the lines that hold one, and counts repeated events
under one key (class, code, device, process) with their first and last time. The
signatures live in health/kernel_signatures.toml; a site adds its own in the profile.

Formats, detected per line (a saved file may mix them):
  dmesg --time-format=iso   2025-01-21T04:41:44,283302+00:00 msg
  dmesg --decode prefix     kern  :warn  : <any of these>
  dmesg -T                  [Sun Feb 23 16:24:18 2025] msg
  dmesg (raw) / dmesg -r    [ 1843.308145] msg   <4>[ 1843.308145] msg   (seconds since boot)
  journalctl -o short-iso   2024-05-14T11:02:44+0000 host kernel: msg
  classic syslog            Feb 14 05:03:41 host kernel: [ 12.5] msg
  /dev/kmsg records         6,3973,227996636,-;msg   (microseconds since boot)
Lines without a prefix (continuations of a multi-line message) have no time of their own.
"""

from __future__ import annotations

import calendar
import functools
import re
import time
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

Action = Literal["drain", "warn", "ignore"]
ACTIONS: tuple[str, ...] = ("drain", "warn", "ignore")
SEVERITY = {"ignore": 0, "warn": 1, "drain": 2}
CODE_TABLES = ("xid", "sxid")
SIGNATURE_KEYS = ("class", "keyword", "pattern", "action", "reason", "device", "codes",
                  "join", "join_lines", "storm_count", "storm_action")
MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}

_PREFIX = re.compile(
    r"(?:[a-z]+ *:[a-z]+ *: )?"                                           # dmesg --decode
    r"(?:(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?) "
    r"|(?:<\d+>)?\[ *(?P<raw>\d+\.\d+)\] ?"                                 # raw, dmesg -r
    r"|\[(?P<ctime>[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4})\] "  # dmesg -T
    r"|(?P<syslog>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) "                  # classic syslog
    r"|\d+,\d+,(?P<kmsg>\d+),[^;]*;)")                                     # /dev/kmsg
# After a journal or syslog time: "host kernel: " (a kernel line) or "host prog[pid]: " (not).
_TAG = re.compile(r" *(?:(?:\S+ +)?(?P<kernel>kernel:)|\S+ +(?P<prog>\S+\[\d+\]:)) *")
_INNER_RAW = re.compile(r"\[ *(?P<raw>\d+\.\d+)\] ?")
_PCI = re.compile(r"^(?:(?P<dom>[0-9a-fA-F]{4,8}):)?(?P<bus>[0-9a-fA-F]{2}):(?P<dev>[0-9a-fA-F]{2})"
                  r"(?:\.(?P<fn>[0-7]))?$")


class SignatureError(ValueError):
    """A signature table that cannot be used (bad key, action or regular expression)."""


@dataclass(frozen=True)
class Signature:
    cls: str
    keyword: str
    regex: re.Pattern[str]
    action: str
    reason: str
    device: str = ""
    codes: str = ""
    join: str = ""
    join_lines: int = 0
    storm_count: int = 0
    storm_action: str = "warn"


@dataclass(frozen=True)
class Stamp:
    """When a line was logged: seconds since the epoch, or since boot (``relative``)."""

    seconds: float
    relative: bool

    def text(self) -> str:
        if self.relative:
            return f"boot+{self.seconds:.6f}s"
        return datetime.fromtimestamp(self.seconds, timezone.utc).isoformat()


# ---------------------------------------------------------------- signatures as data

def signature(table: Mapping[str, Any]) -> Signature:
    """One signature from its TOML table; every mistake is a SignatureError naming it."""
    name = table.get("class", "?")
    unknown = sorted(set(table) - set(SIGNATURE_KEYS))
    if unknown:
        raise SignatureError(f"signature {name}: unknown keys {unknown}; valid: {SIGNATURE_KEYS}")
    for key in ("class", "keyword", "pattern", "action", "reason"):
        if not isinstance(table.get(key), str) or not table[key]:
            raise SignatureError(f"signature {name}: {key} must be a non-empty string")
    for key in ("action", "storm_action"):
        if table.get(key, "warn") not in ACTIONS:
            raise SignatureError(f"signature {name}: {key} {table[key]!r} not in {ACTIONS}")
    if table.get("codes", "") not in ("", *CODE_TABLES):
        raise SignatureError(f"signature {name}: codes must be one of {CODE_TABLES}")
    try:
        regex = re.compile(table["pattern"])
    except re.error as exc:
        raise SignatureError(f"signature {name}: pattern: {exc}") from exc
    return Signature(table["class"], table["keyword"], regex, table["action"], table["reason"],
                     str(table.get("device", "")), str(table.get("codes", "")),
                     str(table.get("join", "")), int(table.get("join_lines", 0)),
                     int(table.get("storm_count", 0)), str(table.get("storm_action", "warn")))


def signatures_from_toml(text: str) -> tuple[Signature, ...]:
    return tuple(signature(t) for t in tomllib.loads(text).get("signature", []))


def check_site_signatures(tables: Sequence[Mapping[str, Any]]) -> str | None:
    """A schema check: None when every site signature loads, else the first reason."""
    try:
        for table in tables:
            signature(table)
    except SignatureError as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------- formats

def split_prefix(line: str, year: int) -> tuple[Stamp | None, str, bool]:
    """(time, message, is_kernel) of one line in any supported format."""
    match = _PREFIX.match(line)
    if match is None:
        return None, line.strip(), True
    rest = line[match.end():]
    kind = match.lastgroup
    value = match[kind] if kind else ""
    if kind in ("iso", "syslog", "ctime"):
        tag = _TAG.match(rest)
        if tag is not None and (tag["kernel"] or tag["prog"]):
            if tag["prog"]:
                return _stamp(kind, value, year), rest, False
            rest = rest[tag.end():]
            inner = _INNER_RAW.match(rest)
            rest = rest[inner.end():] if inner else rest
    return _stamp(kind, value, year), rest, True


def _stamp(kind: str | None, value: str, year: int) -> Stamp | None:
    if kind == "raw":
        return Stamp(float(value), True)
    if kind == "kmsg":
        return Stamp(int(value) / 1e6, True)
    seconds = _absolute(kind or "", value, year)
    return None if seconds is None else Stamp(seconds, False)


@functools.lru_cache(maxsize=65536)
def _absolute(kind: str, value: str, year: int) -> float | None:
    """Epoch seconds of an absolute stamp (cached: a busy log repeats its seconds)."""
    try:
        if kind == "iso":
            return _iso(value)
        if kind == "ctime":
            return calendar.timegm(time.strptime(value, "%a %b %d %H:%M:%S %Y"))
        if kind == "syslog":
            return _syslog(value, year)
    except ValueError:
        return None
    return None


def _iso(value: str) -> float:
    """dmesg and journal ISO stamps; one without an offset is local time."""
    return datetime.fromisoformat(value.replace(",", ".")).timestamp()


def _syslog(value: str, year: int) -> float:
    """'Feb 14 05:03:41' has no year: the given one (the reader's), taken as local time."""
    month, day, hms = value.split()
    hour, minute, second = (int(x) for x in hms.split(":"))
    return datetime(year, MONTHS[month], int(day), hour, minute, second).timestamp()


def normal_pci(address: str) -> str:
    """0000:38:00 / 38:00.0 / 00000000:18:00.0 -> 0000:38:00.0 (NVML's 8-digit domain cut)."""
    match = _PCI.match(address)
    if match is None:
        return address.lower()
    domain = (match["dom"] or "0000")[-4:]
    return f"{domain}:{match['bus']}:{match['dev']}.{match['fn'] or '0'}".lower()


# ---------------------------------------------------------------- scan

@dataclass(frozen=True)
class Window:
    """What a scan keeps: lines at or after ``since`` (epoch seconds; None keeps all).
    ``boot`` (epoch seconds) turns since-boot stamps into absolute ones (a live log)."""

    since: float | None = None
    boot: float | None = None
    year: int = 0


def scan(text: str, sigs: Sequence[Signature], window: Window = Window()) -> list[dict[str, Any]]:
    """Every signature event in ``text``, one group per (class, code, device, process)."""
    year = window.year or datetime.now().year
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    judged: dict[str, _Event | None] = {}  # a repeated message is classified once
    for start, end, candidates in _candidate_lines(text, sigs):
        line = text[start:end]
        stamp, message, kernel = split_prefix(line, year)
        if not kernel:
            continue
        stamp = _absolute_stamp(stamp, window.boot)
        if window.since is not None and stamp is not None and not stamp.relative \
                and stamp.seconds < window.since:
            continue
        if message not in judged:
            judged[message] = _classify(message, candidates)
        event = judged[message]
        if event is not None and (not event.sig.join or _joined(text, end, event.sig)):
            _count(groups, event, stamp, _line(text, start, end, event.sig))
    return sorted(groups.values(), key=lambda g: (g["class"], g["device"], g["code"] or 0))


@dataclass(frozen=True)
class _Event:
    """What one message says: its signature, group key and fixed fields."""

    sig: Signature
    key: tuple[Any, ...]
    fields: Mapping[str, Any]


def _candidate_lines(text: str,
                     sigs: Sequence[Signature]) -> Iterator[tuple[int, int, tuple[Signature, ...]]]:
    """(line start, line end, signatures whose keyword the line holds), in log order."""
    by_keyword: dict[str, tuple[Signature, ...]] = {}
    for sig in sigs:
        by_keyword[sig.keyword] = (*by_keyword.get(sig.keyword, ()), sig)
    order = {id(sig): i for i, sig in enumerate(sigs)}
    hits: dict[int, tuple[int, tuple[Signature, ...]]] = {}
    for keyword, group in by_keyword.items():
        for start, end in _line_spans(text, keyword):
            seen = hits.get(start)
            hits[start] = (end, group if seen is None else
                           tuple(sorted({*seen[1], *group}, key=lambda s: order[id(s)])))
    for start in sorted(hits):
        end, group = hits[start]
        yield start, end, group


def _line_spans(text: str, keyword: str) -> Iterator[tuple[int, int]]:
    find, rfind, size = text.find, text.rfind, len(text)
    pos = find(keyword)
    while pos >= 0:
        end = find("\n", pos)
        end = size if end < 0 else end
        yield rfind("\n", 0, pos) + 1, end
        pos = find(keyword, end)


def _absolute_stamp(stamp: Stamp | None, boot: float | None) -> Stamp | None:
    if stamp is not None and stamp.relative and boot is not None:
        return Stamp(boot + stamp.seconds, False)
    return stamp


def _classify(message: str, candidates: Iterable[Signature]) -> _Event | None:
    """The first signature the message matches, with its group key and captured fields."""
    for sig in candidates:
        match = sig.regex.search(message)
        if match is not None:
            return _event(sig, {k: v for k, v in match.groupdict().items() if v is not None})
    return None


def _event(sig: Signature, caught: Mapping[str, str]) -> _Event:
    device = _device(sig.device, caught)
    code = int(caught["code"]) if caught.get("code", "").isdigit() else None
    pci = caught.get("gpu") or caught.get("pci")
    fields = {"class": sig.cls, "code": code, "device": device,
              "process": caught.get("process"), "pid": _pid(caught),
              "severity": caught.get("severity"), "pci": None if pci is None else normal_pci(pci)}
    key = (sig.cls, code, device, fields["process"], fields["severity"])
    return _Event(sig, key, fields)


def _joined(text: str, end: int, sig: Signature) -> bool:
    """A multi-line message: its join text follows within ``join_lines`` lines."""
    return sig.join in text[end:_after_lines(text, end, sig.join_lines)]


def _after_lines(text: str, end: int, lines: int) -> int:
    stop = end
    for _ in range(lines):
        nxt = text.find("\n", stop + 1)
        stop = len(text) if nxt < 0 else nxt
    return stop


def _line(text: str, start: int, end: int, sig: Signature) -> str:
    """The log line; a multi-line message joined up to its join text."""
    if not sig.join:
        return text[start:end].strip()
    parts = [part.strip() for part in text[start:_after_lines(text, end, sig.join_lines)].split("\n")]
    upto = next((i for i, part in enumerate(parts) if sig.join in part), len(parts) - 1)
    return " ".join(parts[: upto + 1])


def _count(groups: dict[tuple[Any, ...], dict[str, Any]], event: _Event, stamp: Stamp | None,
           line: str) -> None:
    group = groups.get(event.key)
    when = None if stamp is None else stamp.text()
    if group is None:
        groups[event.key] = {**event.fields, "count": 1, "first": when, "last": when,
                             "line": line}
        return
    group["count"] += 1
    if when is not None:
        group["first"] = group["first"] or when
        group["last"] = when


def _pid(caught: Mapping[str, str]) -> int | None:
    pid = caught.get("pid", "")
    return int(pid) if pid.isdigit() else None


class _Captured(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "?"


def _device(template: str, caught: Mapping[str, str]) -> str:
    """The signature's device template filled from the captures, PCI addresses normalised."""
    if not template:
        return ""
    values = _Captured({k: normal_pci(v) if k in ("gpu", "pci") else v for k, v in caught.items()})
    return template.format_map(values)
