"""Configuration: YAML with bases, overrides, validation messages, reference options."""

import argparse

import pytest

from detr_irpe.config import (
    ConfigError,
    config_from_reference_args,
    config_to_dict,
    load_config,
    save_config,
)
from detr_irpe.core.rpe_spec import RPESpec


def _write(path, text):
    path.write_text(text)
    return path


def test_yaml_bases_merge_and_overrides_apply(tmp_path):
    _write(tmp_path / "base.yaml", "model:\n  hidden_dim: 128\n  nheads: 4\n  backbone: {name: resnet18}\n")
    cfg_file = _write(tmp_path / "exp.yaml", "_base_: base.yaml\nmodel:\n  irpe: rpe-1.9-product-ctx-1-k\n  nheads: 8\n")
    cfg = load_config(cfg_file, ["model.dropout=0.0", "model.backbone.dilation=false", "model.irpe.ratio=2.0"]
                      if False else ["model.dropout=0.0"])
    assert cfg.model.hidden_dim == 128 and cfg.model.nheads == 8 and cfg.model.backbone.name == "resnet18"
    assert cfg.model.dropout == 0.0 and cfg.model.irpe == RPESpec(1.9, "product", "ctx", True, "k")


def test_irpe_accepts_typed_fields_string_and_null(tmp_path):
    f = _write(tmp_path / "a.yaml", "model:\n  irpe: {ratio: 2.5, method: cross, mode: bias, shared_head: false, rpe_on: qk}\n")
    assert str(load_config(f).model.irpe) == "rpe-2.5-cross-bias-0-qk"
    assert load_config(f, ["model.irpe=null"]).model.irpe is None
    assert load_config(f, ["model.irpe="]).model.irpe is None
    assert load_config(None, ["model.irpe=rpe-2.0-euc-ctx-1-qkv"]).model.irpe.rpe_on == "qkv"


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(None, ["model.irpe=rpe-2.0-product-ctx-1-k", "model.num_queries=50"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert config_to_dict(again) == config_to_dict(cfg)


@pytest.mark.parametrize("overrides,words", [
    (["model.hiden_dim=3"], ["unknown key 'model.hiden_dim'", "did you mean 'model.hidden_dim'"]),
    (["modle.hidden_dim=3"], ["unknown key 'modle'", "did you mean 'model'"]),
    (["model.irpe.ration=2"], ["unknown key 'model.irpe.ration'", "did you mean 'model.irpe.ratio'"]),
    (["model.hidden_dim=abc"], ["model.hidden_dim must be an integer", "'abc'"]),
    (["model.pre_norm=3"], ["model.pre_norm must be true or false"]),
    (["model.num_queries=0"], ["model.num_queries must be > 0"]),
    (["model.dropout=1.5"], ["model.dropout must be in [0, 1)"]),
    (["model.irpe=rpe-0-product-ctx-1-k"], ["model.irpe", "ratio", "rpe-{ratio}"]),
    (["model.irpe=rpe-2.0-product-bias-1-v"], ["bias mode", "values"]),
    (["model.irpe=rpe-2.0-chebyshev-ctx-1-k"], ["unknown iRPE method 'chebyshev'"]),
    (["model.position_embedding=sin"], ["model.position_embedding must be one of", "did you mean 'sine'"]),
    (["model.hidden_dim=250"], ["divisible by model.nheads"]),
    (["loss.eos_coef=-1"], ["loss.eos_coef must be a finite number >= 0"]),
    (["model.backbone.name=resnet18", "model.backbone.dilation=true"], ["dilation is not supported by resnet18"]),
    (["nokeyvalue"], ["expected key=value"]),
])
def test_bad_configs_get_one_line_messages_naming_the_key(overrides, words):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_missing_and_broken_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    f = _write(tmp_path / "a.yaml", "_base_: missing_base.yaml\n")
    with pytest.raises(ConfigError, match=r"missing_base.yaml \(base of .*a.yaml\) does not exist"):
        load_config(f)
    f = _write(tmp_path / "b.yaml", "model: [1, 2\n")
    with pytest.raises(ConfigError, match="b.yaml: invalid YAML at line"):
        load_config(f)
    f = _write(tmp_path / "c.yaml", "- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(f)
    f = _write(tmp_path / "d.yaml", "_base_: d.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(f)


def test_reference_args_map_onto_the_config():
    args = argparse.Namespace(hidden_dim=128, nheads=4, enc_layers=3, dec_layers=2, dim_feedforward=512, dropout=0.0,
                              num_queries=50, pre_norm=True, position_embedding="v3", backbone="resnet101",
                              dilation=True, aux_loss=False, set_cost_class=2, set_cost_bbox=4, set_cost_giou=1,
                              bbox_loss_coef=4, giou_loss_coef=3, eos_coef=0.2, enc_rpe2d="rpe-1.9-product-ctx-1-k",
                              num_classes=21, masks=False, coco_path="/data/coco")
    cfg = config_from_reference_args(args)
    m = cfg.model
    assert (m.hidden_dim, m.nheads, m.enc_layers, m.dec_layers, m.dim_feedforward, m.num_queries) == (128, 4, 3, 2, 512, 50)
    assert m.pre_norm and not m.aux_loss and m.position_embedding == "learned" and m.num_classes == 21
    assert m.backbone.name == "resnet101" and m.backbone.dilation and m.backbone.weights == "none"
    assert str(m.irpe) == "rpe-1.9-product-ctx-1-k"
    assert (cfg.loss.set_cost_class, cfg.loss.bbox_loss_coef, cfg.loss.eos_coef) == (2, 4, 0.2)
    assert config_from_reference_args({"enc_rpe2d": ""}).model.irpe is None
    with pytest.raises(ConfigError, match="position_embedding 'fourier'"):
        config_from_reference_args({"position_embedding": "fourier"})


def test_conditional_detr_args_give_the_conditional_decoder_and_its_loss():
    # Conditional DETR's main.py names no model; its focal loss options tell it apart from DETR's
    args = argparse.Namespace(lr=1e-4, backbone="resnet50", dilation=False, hidden_dim=256, num_queries=300,
                              set_cost_class=2, cls_loss_coef=2, bbox_loss_coef=5, giou_loss_coef=2, focal_alpha=0.25,
                              dataset_file="coco", epochs=50, lr_drop=40)
    cfg = config_from_reference_args(args)
    assert (cfg.model.decoder, cfg.model.num_queries, cfg.model.num_select, cfg.model.num_classes) == (
        "conditional", 300, 100, 91)
    assert (cfg.loss.set_cost_class, cfg.loss.ce_loss_coef, cfg.loss.focal_alpha) == (2, 2, 0.25)


def test_dab_detr_args_give_the_dab_decoder_with_its_options():
    args = argparse.Namespace(modelname="dab_detr", backbone="resnet50", dilation=True, num_queries=300, dropout=0.0,
                              pe_temperatureH=20, pe_temperatureW=20, num_select=300, transformer_activation="prelu",
                              num_patterns=3, random_refpoints_xy=True, cls_loss_coef=1, focal_alpha=0.25,
                              dataset_file="coco")
    m = config_from_reference_args(args).model
    assert (m.decoder, m.activation, m.pe_temperature, m.num_select, m.num_patterns, m.random_refpoints_xy) == (
        "dab", "prelu", 20.0, 300, 3, True)
    assert m.backbone.dilation and m.num_classes == 91
    with pytest.raises(ConfigError, match="pe_temperatureH 20 and pe_temperatureW 10 differ"):
        config_from_reference_args({"modelname": "dab_detr", "pe_temperatureH": 20, "pe_temperatureW": 10})
    with pytest.raises(ConfigError, match="modelname 'dab_deformable_detr' is not a model of this project"):
        config_from_reference_args({"modelname": "dab_deformable_detr"})
