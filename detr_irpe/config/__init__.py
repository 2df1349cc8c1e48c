"""Typed configuration: the sections (schema.py), plain data to a validated Config (typed.py),
config files with ``_base_`` inheritance and ``key=value`` overrides (files.py), and the mapping
from the reference code's command-line options (reference_args.py)."""

from .files import (apply_overrides, config_dir, config_to_dict, find_config, flat_config, load_config, save_config,
                    shipped_configs)
from .reference_args import config_from_reference_args
from .schema import (BackboneConfig, Config, ConfigError, DataConfig, EvalConfig, LossConfig, ModelConfig, Section,
                     SyntheticConfig, TrainConfig, freeze, is_frozen)
from .typed import config_from_dict

__all__ = [
    "BackboneConfig", "Config", "ConfigError", "DataConfig",
    "EvalConfig", "LossConfig", "ModelConfig", "Section", "SyntheticConfig", "TrainConfig", "apply_overrides",
    "config_dir", "config_from_dict", "config_from_reference_args", "config_to_dict", "find_config", "flat_config",
    "freeze",
    "is_frozen", "load_config", "save_config", "shipped_configs",
]
