"""Bad configs are refused with one line naming the key or value and what was expected, and the
output folder is left as it was: unknown keys, wrong types and values, a missing base file, a
model that cannot fit in memory, a device that is not there, an output folder that cannot be
written."""

import os

import pytest
import torch
from engine_helpers import micro
from reliability_helpers import existing_run, expect_error

from detr_irpe.commands.train import main as train_main


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


@pytest.mark.parametrize("override,words", [
    ("model.hiden_dim=64", ["unknown key 'model.hiden_dim'", "did you mean 'model.hidden_dim'"]),
    ("train.epochs=ten", ["train.epochs must be an integer", "'ten'"]),
    ("train.lr=-0.001", ["train.lr must be a finite number >= 0", "-0.001"]),
    ("model.num_queries=0", ["model.num_queries must be > 0"]),
    ("model.irpe=rpe-0-product-ctx-1-k", ["model.irpe", "ratio", "rpe-{ratio}-{method}"]),
    ("model.irpe=rpe-2.0-product-bias-1-v", ["bias mode", "values"]),
    ("model.decoder=deformable", ["model.decoder must be one of detr, conditional, dab", "'deformable'"]),
    ("model.num_patterns=3", ["model.num_patterns=3 is an option of the DAB-DETR decoder", "model.decoder=dab"]),
    ("model.activation=prelu", ["model.activation=prelu is an option of the DAB-DETR decoder"]),
    ("model.pe_temperature=0", ["model.pe_temperature must be a finite number > 0"]),
    ("model.decoder=conditional model.position_embedding=none", ["model.position_embedding=none leaves the "
                                                                  "conditional decoder without the positions"]),
], ids=["unknown key", "wrong type", "negative lr", "zero queries", "ratio", "bias on values", "unknown decoder",
        "dab option elsewhere", "prelu elsewhere", "temperature", "no positions for a sigmoid decoder"])
def test_bad_configs_are_refused_with_one_line(override, words, tmp_path, cache, capsys):
    out = existing_run(tmp_path)
    expect_error(capsys, train_main, micro(cache, out) + override.split(), *words, out=out)


def test_a_missing_base_file_is_named(tmp_path, capsys):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("_base_: nowhere.yaml\n")
    expect_error(capsys, train_main, ["--config", str(cfg)], "nowhere.yaml", "does not exist")


def test_a_model_that_cannot_fit_is_refused_up_front_with_the_estimate_and_the_limit(tmp_path, cache, capsys):
    out = existing_run(tmp_path)
    expect_error(capsys, train_main, micro(cache, out, "model.num_queries=100000000"),
                 "model.num_queries=100000000 cannot fit", "GiB", "of the memory of this machine",
                 "lower model.num_queries", out=out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_cuda_device_without_cuda_is_a_one_line_error(tmp_path, cache, capsys):
    out = existing_run(tmp_path)
    expect_error(capsys, train_main, micro(cache, out, "train.device=cuda"), "train.device=cuda",
                 "CUDA is not available", out=out)


def test_an_unwritable_output_folder_is_refused_before_anything_runs(tmp_path, cache, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    expect_error(capsys, train_main, micro(cache, blocker / "out"), "cannot be written", "not a folder")
    ro = tmp_path / "readonly"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write read-only folders (root)")
        expect_error(capsys, train_main, micro(cache, ro / "out"), "cannot be written")
    finally:
        ro.chmod(0o700)
