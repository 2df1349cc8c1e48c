"""The model memory estimate: exact parameter counts for the configs users size, and a refusal
that names the estimate, the limit and the field that costs the most, before any allocation."""

import pytest
import torch
from helpers import tiny_config

from detr_irpe.config import ConfigError, load_config
from detr_irpe.models import build_model
from detr_irpe.models.size import check_model_fits, estimate_memory, format_bytes, machine_memory

R50 = ["model.backbone.weights=none", "model.backbone.norm=bn"]


def _count(model) -> int:
    return sum(t.numel() for t in (*model.parameters(), *model.buffers()))


@pytest.mark.parametrize("overrides", [
    [], ["model.pre_norm=true", "model.position_embedding=learned", "model.num_queries=17", "model.num_classes=3"],
    ["model.dim_feedforward=96", "model.enc_layers=0", "model.aux_loss=false"],
], ids=["tiny", "pre-norm learned", "no encoder"])
def test_the_estimate_counts_every_parameter_and_buffer_of_small_models(overrides):
    cfg = tiny_config(*overrides)
    assert estimate_memory(cfg.model).parameters == _count(build_model(cfg)[0])


@pytest.mark.parametrize("overrides", [[], ["model.backbone.name=resnet101", "model.backbone.dilation=true"]],
                         ids=["r50", "r101-dc5"])
def test_the_estimate_counts_every_parameter_and_buffer_of_resnet_models(overrides):
    cfg = load_config(None, R50 + overrides)
    with torch.device("meta"):  # the real count, without the memory
        model = build_model(cfg)[0]
    assert estimate_memory(cfg.model).parameters == _count(model)


def test_irpe_tables_are_the_only_parameters_left_out_and_they_are_few():
    cfg = tiny_config("model.irpe=rpe-2.0-product-ctx-1-k")
    real, estimated = _count(build_model(cfg)[0]), estimate_memory(cfg.model).parameters
    assert 0 < real - estimated < 0.02 * real


@pytest.mark.parametrize("override,field", [
    ("model.num_queries=100000000", "num_queries"), ("model.num_classes=1000000000", "num_classes"),
    ("model.dim_feedforward=100000000", "dim_feedforward"),
])
def test_a_model_that_cannot_fit_is_refused_naming_the_estimate_the_limit_and_the_field(override, field, monkeypatch):
    import detr_irpe.models as models

    def no_allocation(*a, **k):
        raise AssertionError("the backbone was built: the refusal must come before any allocation")

    monkeypatch.setattr(models, "Backbone", no_allocation)  # build_model's own, not the estimate's
    cfg = load_config(None, R50 + [override])
    estimate = estimate_memory(cfg.model)
    assert estimate.total_bytes > machine_memory()
    with pytest.raises(ConfigError) as info:
        build_model(cfg)
    message = str(info.value)
    assert message.startswith(f"{override} cannot fit") and message.endswith(f"lower model.{field}")
    assert format_bytes(estimate.total_bytes) in message and format_bytes(machine_memory()) in message
    assert f"{estimate.parameters:,} parameters" in message


def test_ordinary_models_pass_the_check():
    for cfg in (load_config(None, R50), tiny_config()):
        assert check_model_fits(cfg).total_bytes < 2**30  # DETR-R50: about 170 MB of weights


def test_format_bytes():
    assert [format_bytes(n) for n in (512, 1536, 3 * 2**30, 5 * 2**40)] == ["512 B", "1.5 KiB", "3.0 GiB", "5.0 TiB"]
