"""Strict conversion of TOML tables into frozen dataclasses.

One mechanism serves job files and profiles: unknown keys are rejected with the valid
list, types are checked (``true`` is not an ``int``), per-field checks come from the
dataclass field's ``metadata["check"]``, and every error names where the value came from.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from .errors import SpecError

T = TypeVar("T")
Check = Callable[[Any], "str | None"]
EntryCheck = Callable[[str, Any], "str | None"]  # (key, value) of one table entry


class Origins:
    """Which source (file path or CLI flag) set each dotted key; the longest prefix wins."""

    def __init__(self, default: str) -> None:
        self.default = default
        self._by_path: dict[str, str] = {}

    def record(self, path: str, source: str) -> None:
        self._by_path[path] = source

    def source_of(self, path: str) -> str:
        parts = re.sub(r"\[\d+\]", "", path).split(".")  # a list is set whole: drop indices
        for end in range(len(parts), 0, -1):
            found = self._by_path.get(".".join(parts[:end]))
            if found is not None:
                return found
        return self.default

    def error(self, path: str, message: str, choices: typing.Iterable[str] = ()) -> SpecError:
        return SpecError(self.source_of(path), path, message, choices)


def merge(base: Mapping[str, Any], over: Mapping[str, Any], origins: Origins, source: str,
          prefix: str = "") -> dict[str, Any]:
    """Deep-merge ``over`` onto ``base``: tables merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value, origins, source, f"{path}.")
        else:
            out[key] = value
            origins.record(path, source)
    return out


def field(default: Any = dataclasses.MISSING, *, check: Check | None = None,
          entry: EntryCheck | None = None, doc: str = "") -> Any:
    """A dataclass field with an optional value check and a line of documentation.

    ``entry`` checks each (key, value) of a table on its own, so that an error names the
    entry and the file that set it (tables merge across files and flags)."""
    meta = {"check": check, "entry": entry, "doc": doc}
    if isinstance(default, (list, dict, tuple)) and default:
        raise TypeError("use an immutable, empty default")
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: types.MappingProxyType({}), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def build(cls: type[T], data: Any, origins: Origins, path: str = "") -> T:
    """Build the frozen dataclass ``cls`` from ``data``, or raise :class:`SpecError`."""
    return cls(**_values(cls, data, origins, path, partial=False))


def check_partial(cls: type, data: Any, origins: Origins, path: str = "") -> None:
    """Check the keys and values present in ``data`` against ``cls``; missing keys are fine
    (a partial table, completed later by layering, e.g. a per-node threshold override)."""
    _values(cls, data, origins, path, partial=True)


def _values(cls: type, data: Any, origins: Origins, path: str, partial: bool) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise origins.error(path or "(top level)", f"expected a table, got {_kind(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise origins.error(_join(path, key), "unknown key", sorted(fields))
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for name, fld in fields.items():
        sub = _join(path, name)
        if name not in data:
            required = (fld.default is dataclasses.MISSING
                        and fld.default_factory is dataclasses.MISSING)
            if required and not partial:
                raise origins.error(sub, "required key is missing")
            continue
        value = convert(hints[name], data[name], origins, sub)
        _check_value(fld, value, origins, sub)
        values[name] = value
    return values


def _check_value(fld: dataclasses.Field[Any], value: Any, origins: Origins, path: str) -> None:
    check: Check | None = fld.metadata.get("check")
    entry: EntryCheck | None = fld.metadata.get("entry")
    if value is None:
        return
    problem = check(value) if check else None
    if problem:
        raise origins.error(path, problem)
    for key, item in value.items() if entry else ():
        problem = entry(key, item) if entry else None
        if problem:
            raise origins.error(_join(path, key), problem)


def convert(tp: Any, value: Any, origins: Origins, path: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it in its frozen form."""
    if tp is Any:
        return value
    origin = get_origin(tp)
    args = get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return convert(inner[0], value, origins, path)
        if any(_is_scalar_match(candidate, value) for candidate in inner):
            return _scalar(value, origins, path)
        raise origins.error(path, f"expected {_describe(tp)}, got {_kind(value)}")
    if origin is Literal:
        if value not in args:
            raise origins.error(path, f"{value!r} is not allowed", [str(a) for a in args])
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise origins.error(path, f"expected a list, got {_kind(value)}")
        return tuple(convert(args[0], item, origins, f"{path}[{i}]") for i, item in enumerate(value))
    if origin in (dict, Mapping, typing.Mapping):
        if not isinstance(value, Mapping):
            raise origins.error(path, f"expected a table, got {_kind(value)}")
        return types.MappingProxyType(
            {k: convert(args[1], v, origins, _join(path, k)) for k, v in value.items()})
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return build(tp, value, origins, path)
    if _is_scalar_match(tp, value):
        return _scalar(value, origins, path)
    raise origins.error(path, f"expected {_describe(tp)}, got {_kind(value)}")


def _scalar(value: Any, origins: Origins, path: str) -> Any:
    """A checked scalar; no string may carry a NUL byte (no shell, argv or file name can)."""
    if isinstance(value, str) and "\x00" in value:
        raise origins.error(path, "must not contain a NUL character (\\u0000)")
    return value


def type_at(cls: type, path: str) -> Any:
    """The annotation of the dotted key ``path`` inside dataclass ``cls`` (None if unknown)."""
    tp: Any = cls
    for part in path.split("."):
        tp = _strip_optional(tp)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            tp = _hints(tp).get(part)
        elif get_origin(tp) in (dict, Mapping, typing.Mapping):
            tp = get_args(tp)[1]
        else:
            return None
        if tp is None:
            return None
    return _strip_optional(tp)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass (evaluating them is slow; they never change)."""
    return get_type_hints(cls)


def _strip_optional(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        if len(inner) == 1:
            return inner[0]
    return tp


def _is_scalar_match(tp: Any, value: Any) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return False


def _describe(tp: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    if tp in names:
        return names[tp]
    args = [a for a in get_args(tp) if a is not type(None)]
    if args:
        return " or ".join(_describe(a) for a in args)
    return getattr(tp, "__name__", str(tp))


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    return type(value).__name__


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def read_toml(path: Path, display: str | None = None) -> dict[str, Any]:
    """Parse a TOML file; syntax and I/O errors become a SpecError naming the file."""
    name = display or str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(name, "", f"cannot read: {exc.strerror or exc}") from exc
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SpecError(name, "", "not UTF-8 text") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(name, "", f"TOML syntax error: {exc}") from exc


def as_plain(value: Any) -> Any:
    """Frozen specs back to plain JSON-able data (for hashing and `profiles show`)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: as_plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [as_plain(v) for v in value]
    return value
