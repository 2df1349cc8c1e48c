"""Ablation files: a base config, named variants (each a set of overrides) and a list of seeds.

```yaml
name: tiny_position
base: ../tiny/base.yaml          # relative to this file
baseline: abs                    # differences are reported against this variant
seeds: [0, 1]
overrides: [train.epochs=4]      # applied to every run (optional)
variants:
  abs: {model.irpe: null}
  rel: [model.irpe=rpe-2.0-product-ctx-1-k, model.encoder_abs_pos=false]
```

Each variant x seed becomes one run in ``<study>/<variant>/seed<N>/``.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import ConfigError, load_config
from ..launch.local import RunSpec
from ..core.io import atomic_write_json


@dataclass
class Ablation:
    name: str
    path: Path
    base: Path
    variants: dict[str, list[str]]
    seeds: list[int]
    baseline: str
    overrides: list[str] = field(default_factory=list)
    description: str = ""


def _as_overrides(value, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [f"{k}={_yaml_value(v)}" for k, v in value.items()]
    if isinstance(value, list) and all(isinstance(v, str) and "=" in v for v in value):
        return list(value)
    raise ConfigError(f"{where} must be a mapping of key: value or a list of key=value strings, got {value!r}")


def _yaml_value(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def load_ablation(path: str | Path) -> Ablation:
    """Read and check an ablation file (every variant's config is built once, so that a bad
    override fails here and not hours later)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ablation file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"ablation file {path}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    known = {"name", "base", "variants", "seeds", "baseline", "overrides", "description"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"ablation file {path}: unknown key '{unknown[0]}' (known: {', '.join(sorted(known))})")
    for key in ("base", "variants"):
        if key not in data:
            raise ConfigError(f"ablation file {path}: missing '{key}'")
    variants = data["variants"]
    if not isinstance(variants, dict) or not variants:
        raise ConfigError(f"ablation file {path}: 'variants' must be a non-empty mapping of name -> overrides")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"ablation file {path}: 'seeds' must be a non-empty list of integers, got {seeds!r}")
    names = [str(n) for n in variants]
    baseline = str(data.get("baseline", names[0]))
    if baseline not in names:
        raise ConfigError(f"ablation file {path}: baseline '{baseline}' is not one of the variants ({', '.join(names)})")
    ab = Ablation(name=str(data.get("name", path.stem)), path=path, base=(path.parent / data["base"]).resolve(),
                  variants={str(n): _as_overrides(v, f"{path}: variant '{n}'") for n, v in variants.items()},
                  seeds=list(seeds), baseline=baseline, overrides=_as_overrides(data.get("overrides"), f"{path}: overrides"),
                  description=str(data.get("description", "")))
    for name, over in ab.variants.items():
        try:
            load_config(ab.base, ab.overrides + over)
        except ConfigError as exc:
            raise ConfigError(f"ablation file {path}: variant '{name}': {exc}") from None
    return ab


def run_specs(ab: Ablation, study_dir: Path, extra: list[str] = (), only: list[str] | None = None) -> list[RunSpec]:
    """One RunSpec per variant x seed, in ``study_dir/<variant>/seed<N>``, seed by seed (every
    variant of the first seed, then of the next), so that a study stopped early has seed-matched
    runs to pair."""
    specs = []
    for seed in ab.seeds:
        for name, over in ab.variants.items():
            if only and name not in only:
                continue
            overrides = ab.overrides + over + list(extra) + [f"train.seed={seed}"]
            cfg = load_config(ab.base, overrides)
            specs.append(RunSpec(f"{name}/seed{seed}", str(ab.base), study_dir / name / f"seed{seed}", cfg.train.epochs,
                                 overrides))
    return specs


def write_study(ab: Ablation, study_dir: Path, specs: list[RunSpec]) -> None:
    """``study.json`` in the study folder and ``variant.json`` in each run folder, so that
    compare.py can group runs without the ablation file."""
    study_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(study_dir / "study.json", {
        "name": ab.name, "ablation_file": str(ab.path), "base": str(ab.base), "baseline": ab.baseline,
        "seeds": ab.seeds, "variants": ab.variants, "overrides": ab.overrides, "description": ab.description},
        indent=1)
    for spec in specs:
        variant, seed = spec.name.split("/seed")
        spec.output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(spec.output_dir / "variant.json", {"study": ab.name, "variant": variant, "seed": int(seed),
                                                            "overrides": spec.overrides}, indent=1)


def shell_command(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)
