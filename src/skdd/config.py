"""Typed stage params: loaded from `params.yaml` (one section per stage, DVC's convention) plus CLI
overrides, and validated at the edge so a typo fails in one line naming the key, not deep in training.

Each stage declares a dataclass whose fields use `param(...)` for their constraints; this module
holds the one loader/validator every stage shares.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from skdd.errors import SkddError

T = TypeVar("T")
_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def param(default: Any, *, choices: tuple | None = None, ge: float | None = None, gt: float | None = None,
          le: float | None = None, items: tuple | None = None, help: str = "") -> Any:
    """A dataclass field with validation metadata (choices, bounds, allowed list items)."""
    meta = {"choices": choices, "ge": ge, "gt": gt, "le": le, "items": items, "help": help}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against annotation `tp`; ints are accepted for floats, nothing else is converted."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except SkddError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise SkddError(f"{key}: expected a list of {_type_name(item_tp)}, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
            return float(value)   # PyYAML reads `2e-4` (no dot) as a string; users mean the number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SkddError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):   # NaN passes every bounds check (all comparisons are False): refuse it here
            raise SkddError(f"{key}: must be a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SkddError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise SkddError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise SkddError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported param type {tp!r} for {key}")


def _check_bounds(key: str, value: Any, meta: typing.Mapping) -> None:
    values = value if isinstance(value, list) else [value]
    if meta.get("items") is not None:
        for v in values:
            if v not in meta["items"]:
                raise SkddError(f"{key}: unknown item {v!r} (allowed: {', '.join(map(str, meta['items']))})")
    if value is None:
        return
    if meta.get("choices") is not None and value not in meta["choices"]:
        raise SkddError(f"{key}: {value!r} is not one of {', '.join(map(str, meta['choices']))}")
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if meta.get("ge") is not None and v < meta["ge"]:
            raise SkddError(f"{key}: must be >= {meta['ge']}, got {v!r}")
        if meta.get("gt") is not None and v <= meta["gt"]:
            raise SkddError(f"{key}: must be > {meta['gt']}, got {v!r}")
        if meta.get("le") is not None and v > meta["le"]:
            raise SkddError(f"{key}: must be <= {meta['le']}, got {v!r}")


def from_dict(cls: type[T], data: typing.Mapping[str, Any] | None, section: str) -> T:
    """Build and validate a params dataclass; every error names `section.key`."""
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SkddError(f"{section}.{unknown[0]}: unknown key (allowed: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        key = f"{section}.{name}"
        if name in data:
            value = _coerce(key, data[name], hints[name])
        else:
            value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        _check_bounds(key, value, f.metadata)
        values[name] = value
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if check is not None:
        check(section)
    return obj


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """`key=value` pairs from the command line; values are parsed as YAML (so `5`, `0.1`, `[a, b]`, `null` work)."""
    result: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise SkddError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        try:
            result[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise SkddError(f"override {key}: cannot parse value {raw!r}") from None
    return result


def read_params_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise SkddError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise SkddError(f"{path}: not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise SkddError(f"{path}: expected a mapping of stage sections at the top level")
    return data


def load_stage_params(cls: type[T], section: str, params_file: str | Path | None = None,
                      overrides: list[str] | None = None) -> T:
    """Params for one stage: the file's section (if a file is given) updated by CLI overrides."""
    data: dict[str, Any] = {}
    if params_file is not None:
        content = read_params_file(params_file)
        raw = content.get(section) or {}
        if not isinstance(raw, dict):
            raise SkddError(f"{params_file}: section '{section}' must be a mapping")
        data.update(raw)
    data.update(parse_overrides(overrides))
    try:
        return from_dict(cls, data, section)
    except SkddError as exc:
        prefix = f"{params_file}: " if params_file is not None else ""
        raise SkddError(f"{prefix}{exc}") from None


def as_dict(params: Any) -> dict[str, Any]:
    return dataclasses.asdict(params)


def params_hash(params: Any) -> str:
    """Stable hash of a params object (canonical JSON), recorded in manifests and checkpoints."""
    blob = json.dumps(as_dict(params), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()
