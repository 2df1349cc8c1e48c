"""Config files: shipped configs found by name, YAML with ``_base_`` inheritance, ``key=value``
overrides, and writing a config back as YAML.

A YAML file may name one or more base files (paths relative to itself) under ``_base_``; its own
keys are merged over them, mapping by mapping. ``model.irpe`` accepts the reference string
(``rpe-2.0-product-ctx-1-k``), a mapping of the typed fields, or ``null`` / ``""`` for none.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path

import yaml

from ..core.rpe_spec import RPESpec
from .schema import Config, ConfigError
from .typed import config_from_dict


def config_dir() -> Path:
    """The shipped configs: ``detr_irpe/configs`` in an installed package, ``configs/`` in a checkout."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "configs"
    return installed if installed.is_dir() else package.parent / "configs"


def shipped_configs() -> list[str]:
    """Names of the shipped configs (``tiny/abs_irpe``, ``detr_r50_150e``, ...)."""
    root = config_dir()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def find_config(name: str | os.PathLike) -> Path:
    """A config file by path, or by the name of a shipped config (with or without ``.yaml``, with or
    without a leading ``configs/``)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    text = Path(name).as_posix()
    text = text[len("configs/"):] if text.startswith("configs/") else text
    for candidate in (config_dir() / text, config_dir() / f"{text}.yaml"):
        if candidate.is_file():
            return candidate
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder, not a YAML file")
    names = shipped_configs()
    near = difflib.get_close_matches(text.removesuffix(".yaml"), names, n=1)
    hint = f" (did you mean '{near[0]}'?)" if near else f"; shipped configs: {', '.join(names)}"
    raise ConfigError(f"config file {name} does not exist and is not the name of a shipped config{hint}")


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (a path or a shipped config's name, with its ``_base_`` files), apply
    ``key=value`` overrides, validate."""
    data: dict = {}
    source = "defaults"
    if path is not None:
        data = _read_yaml_tree(find_config(path), [])
        source = str(path)
    for item in overrides:
        _apply_override(data, item)
    return config_from_dict(data, source)


def apply_overrides(cfg: Config, overrides, source: str = "config") -> Config:
    """A new Config: ``cfg`` with ``key=value`` overrides applied and validated."""
    data = config_to_dict(cfg)
    for item in overrides:
        _apply_override(data, item)
    return config_from_dict(data, source)



def config_to_dict(cfg) -> dict:
    """Plain data of a config (for YAML), the iRPE spec written as its reference string."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, RPESpec):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, RPESpec):
        return str(cfg)
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(x) for x in cfg]
    return cfg


def flat_config(cfg) -> dict:
    """A config (or its plain data) as ``section.key`` -> value."""
    out = {}

    def walk(d, at):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{at}{k}.")
            else:
                out[f"{at}{k}"] = v

    walk(cfg if isinstance(cfg, dict) else config_to_dict(cfg), "")
    return out


def save_config(cfg, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    from ..core.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def _read_yaml_tree(path: Path, chain: list[Path]) -> dict:
    path = path.expanduser()
    if not path.is_file():
        where = f" (base of {chain[-1]})" if chain else ""
        what = "is a folder, not a YAML file" if path.is_dir() else "does not exist"
        raise ConfigError(f"config file {path}{where} {what}")
    if path.resolve() in chain:
        raise ConfigError(f"config {path}: _base_ files include each other in a cycle")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config {path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config {path}: cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: expected a mapping at the top level, got {type(data).__name__}")
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    merged: dict = {}
    for base in bases:
        merged = _merge(merged, _read_yaml_tree(path.parent / base, chain + [path.resolve()]))
    return _merge(merged, data)


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _apply_override(data: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. train.epochs=50")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value
