"""What a resumed run may change: the one list of settings that a ``train --resume`` command line
may set to other values than the run's own (applied, and logged); any other difference is refused,
because the stored optimizer, schedule and progress would silently keep the old value."""

from __future__ import annotations

import logging

from .files import flat_config
from .schema import Config, ConfigError

log = logging.getLogger(__name__)

#: settings a resume may change: ``section.key``, or a prefix ending in ``.`` for a whole section.
#: Extending a run, where and how it logs and evaluates, where its data lives, the device and the
#: kernels (the same numbers, computed elsewhere or otherwise).
RESUME_MAY_CHANGE = (
    "train.epochs", "train.eval_every", "train.log_every", "train.writers", "train.experiment", "train.output_dir",
    "train.device", "train.dist_timeout_s", "train.compile", "train.channels_last", "train.tf32", "train.on_nonfinite",
    "train.eval_raw", "train.early_stop_metric", "train.early_stop_patience", "train.early_stop_min_delta",
    "model.attention_kernel", "model.backbone.weights", "model.backbone.allow_random_init",
    "data.root", "data.train_images", "data.train_annotations", "data.val_images", "data.val_annotations",
    "data.synthetic.cache_dir", "data.num_workers", "data.invalid_images", "data.max_image_pixels", "eval.",
)


def may_change_on_resume(key: str) -> bool:
    """Whether ``key`` (``section.key``) may differ from the run's own value when it is resumed."""
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUME_MAY_CHANGE)


def check_resume_changes(stored: dict, cfg, source: str) -> dict[str, tuple]:
    """The settings in which ``cfg`` differs from ``stored`` (the run's config, from its
    checkpoint ``source``) as key -> (run's value, new value), each logged; a ConfigError naming
    the first setting a resume may not change."""
    # a setting the stored config lacks came after the run was made: the run had its default
    old, new = {**flat_config(Config()), **flat_config(stored)}, flat_config(cfg)
    changes = {k: (old.get(k), new[k]) for k in sorted(new) if old.get(k) != new[k]}
    refused = [k for k in changes if not may_change_on_resume(k)]
    if refused:
        k = refused[0]
        more = f" (and {len(refused) - 1} more: {', '.join(refused[1:4])})" if len(refused) > 1 else ""
        raise ConfigError(f"{k}={changes[k][1]} differs from the run's {k}={changes[k][0]} in {source}{more}: a "
                          f"resumed run keeps it; start a new run with --init-from {source} to change it")
    for k, (a, b) in changes.items():
        log.info("resume: %s changed from %s to %s", k, a, b)
    return changes
