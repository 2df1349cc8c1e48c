"""config/resume.py: what a resumed run may change is decided in one place; other changes are
refused with the key and the way to change it (a new run with --init-from)."""

import logging

import pytest

from detr_irpe.config import ConfigError, config_to_dict, load_config
from detr_irpe.config.resume import check_resume_changes, may_change_on_resume


def test_extending_a_run_is_a_logged_change(caplog):
    stored = config_to_dict(load_config(None, ["train.epochs=2"]))
    with caplog.at_level(logging.INFO):
        changes = check_resume_changes(stored, load_config(None, ["train.epochs=3", "eval.batch_size=8"]), "ck.pth")
    assert changes == {"train.epochs": (2, 3), "eval.batch_size": (2, 8)}
    assert "resume: train.epochs changed from 2 to 3" in caplog.text


def test_a_learning_rate_change_is_refused_naming_the_key_and_init_from():
    stored = config_to_dict(load_config(None, ["train.lr=2e-4"]))
    with pytest.raises(ConfigError, match=r"train.lr=0.001 differs from the run's train.lr=0.0002 in ck.pth: a resumed "
                                          r"run keeps it; start a new run with --init-from ck.pth"):
        check_resume_changes(stored, load_config(None, ["train.lr=1e-3"]), "ck.pth")


def test_an_unchanged_config_changes_nothing():
    cfg = load_config(None, ["model.irpe=rpe-2.0-product-ctx-1-k"])
    assert check_resume_changes(config_to_dict(cfg), cfg, "ck.pth") == {}


@pytest.mark.parametrize("key, allowed", [("train.epochs", True), ("eval.backend", True), ("data.root", True),
                                          ("train.lr", False), ("model.irpe", False), ("train.batch_size", False),
                                          ("evaluation.x", False)])
def test_which_settings_a_resume_may_change(key, allowed):
    assert may_change_on_resume(key) is allowed


def test_a_setting_newer_than_the_run_counts_as_its_default():
    stored = config_to_dict(load_config(None, []))
    del stored["train"]["ema"]  # a checkpoint written before the option existed
    assert check_resume_changes(stored, load_config(None, []), "old.pth") == {}
    with pytest.raises(ConfigError, match="train.ema=True differs from the run's train.ema=False"):
        check_resume_changes(stored, load_config(None, ["train.ema=true"]), "old.pth")
