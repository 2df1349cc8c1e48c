"""Plain data (as read from YAML) to a validated Config: types checked and coerced, unknown keys
refused with the nearest known one, the iRPE spec parsed."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any


from ..core.rpe_spec import RPESpec, RPESpecError
from .schema import Config, ConfigError

def config_from_dict(data: dict, source: str = "config") -> Config:
    """Build and validate a Config from nested plain data (as read from YAML)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    cfg = _build(Config, data, "", source)
    _validate(cfg, "", source)
    return cfg


def _sections(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _build(cls, data: dict, at: str, source: str):
    fields = _sections(cls)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {at or 'config'} must be a mapping, got {_show(data)}")
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        near = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f" (did you mean '{_join(at, near[0])}'?)" if near else f" (known: {', '.join(fields)})"
        raise ConfigError(f"{source}: unknown key '{_join(at, key)}'{hint}")
    kwargs = {}
    for name, tp in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], tp, _join(at, name), source)
        elif dataclasses.is_dataclass(tp):
            kwargs[name] = tp()
    return cls(**kwargs)


def _coerce(value, tp, at: str, source: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if RPESpec in args:
            return _coerce_rpe(value, at, source)
        return _coerce(value, args[0], at, source)
    if tp is RPESpec:
        return _coerce_rpe(value, at, source)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, at, source)
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and item is not str:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {at} must be a list, got {_show(value)}")
        return [_coerce(v, item, f"{at}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {at} must be a mapping, got {_show(value)}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {at} must be true or false, got {_show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{source}: {at} must be an integer, got {_show(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{source}: {at} must be a number, got {_show(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{source}: {at} must be a string, got {_show(value)}")
    return value


def _coerce_rpe(value, at: str, source: str) -> RPESpec | None:
    try:
        if value is None or value is False:
            return None
        if isinstance(value, RPESpec):
            return value
        if isinstance(value, str):
            return RPESpec.parse(value)
        if isinstance(value, dict):
            known = {f.name for f in dataclasses.fields(RPESpec)}
            unknown = [k for k in value if k not in known]
            if unknown:
                near = difflib.get_close_matches(str(unknown[0]), list(known), n=1)
                hint = f" (did you mean '{at}.{near[0]}'?)" if near else f" (known: {', '.join(sorted(known))})"
                raise ConfigError(f"{source}: unknown key '{at}.{unknown[0]}'{hint}")
            return RPESpec(**value)
    except RPESpecError as exc:
        raise ConfigError(f"{source}: {at}: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"{source}: {at}: {exc}") from None
    raise ConfigError(f"{source}: {at} must be an iRPE string, a mapping or null, got {_show(value)}")


def _validate(obj, at: str, source: str) -> None:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, RPESpec):
        for name in (f.name for f in dataclasses.fields(obj)):
            _validate(getattr(obj, name), _join(at, name), source)
        if hasattr(obj, "validate"):
            try:
                obj.validate(at)
            except ConfigError as exc:
                raise ConfigError(f"{source}: {exc}") from None


def _join(at: str, name) -> str:
    return f"{at}.{name}" if at else str(name)


def _show(value) -> str:
    return f"{value!r} ({type(value).__name__})"
