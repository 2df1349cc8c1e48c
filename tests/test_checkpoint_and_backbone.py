"""Checkpoint loading is safe and explicit; backbone weights are optional and clearly reported."""

import logging

import pytest
import torch
from helpers import tiny_config

from detr_irpe.hub.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from detr_irpe.models import build_model
from detr_irpe.models.backbone import Backbone, BackboneWeightsError


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("touch /tmp/detr_irpe_pwned_by_test",))


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = "/tmp/detr_irpe_pwned_by_test"
    import os
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="refused.*nothing was executed"):
        load_checkpoint(path)
    assert not os.path.exists(marker)


def test_truncated_and_foreign_files_are_refused(tmp_path):
    model, _, _ = build_model(tiny_config())
    good = tmp_path / "good.pth"
    save_checkpoint({"model": model.state_dict(), "epoch": 1}, good)
    data = good.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        load_checkpoint(tmp_path / "cut.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="text.pth"):
        load_checkpoint(tmp_path / "text.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="expected a dict with a 'model'"):
        load_checkpoint(tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pth")


def test_another_architecture_gets_the_mismatching_keys_listed(tmp_path):
    a, _, _ = build_model(tiny_config("model.irpe=rpe-2.0-product-ctx-1-k"))
    b, _, _ = build_model(tiny_config("model.num_queries=7"))
    path = tmp_path / "a.pth"
    save_checkpoint({"model": a.state_dict()}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, b)
    msg = str(err.value)
    assert "unexpected 2 key(s)" in msg and "rpe_k.lookup_table_weight" in msg
    assert "query_embed.weight: checkpoint (10, 32) vs model (7, 32)" in msg
    state = load_checkpoint(path, a)["model"]
    assert torch.equal(state["query_embed.weight"], a.state_dict()["query_embed.weight"])


def test_imagenet_weights_absent_stop_or_fall_back_clearly(tmp_path, caplog):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        with pytest.raises(BackboneWeightsError, match=r"ImageNet weights for resnet18 are not on this machine \(expected .*resnet18-f37072fd.pth\)"):
            Backbone("resnet18", "imagenet")
        with caplog.at_level(logging.WARNING):
            Backbone("resnet18", "imagenet", allow_random_init=True)
        assert "starting from random initialisation" in caplog.text
        # present in the cache: loaded
        ref = Backbone("resnet18", "none", norm="frozen_bn")
        sd = {k.replace("body.", ""): v for k, v in ref.state_dict().items()}
        (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
        torch.save(sd, tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
        got = Backbone("resnet18", "imagenet")
        assert torch.equal(got.body.layer3[0].conv1.weight, ref.body.layer3[0].conv1.weight)
    finally:
        torch.hub.set_dir(old)


def test_backbone_weights_from_a_file_and_bad_files(tmp_path):
    ref = Backbone("resnet18", "none")
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {k.replace("body.", ""): v for k, v in ref.state_dict().items()}}, path)
    assert torch.equal(Backbone("resnet18", str(path)).body.conv1.weight, ref.body.conv1.weight)
    with pytest.raises(BackboneWeightsError, match="does not exist"):
        Backbone("resnet18", str(tmp_path / "nope.pth"))
    torch.save({"conv9.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(BackboneWeightsError, match="do not fit resnet18"):
        Backbone("resnet18", str(tmp_path / "bad.pth"))


def test_frozen_stages_and_strides():
    bb = Backbone("resnet50", "none")
    trainable = {n.split(".")[1] for n, p in bb.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}
    assert not any("bn" in n for n, p in bb.named_parameters())  # frozen batch norm: buffers only
    x, m = torch.rand(1, 3, 128, 160), torch.zeros(1, 128, 160, dtype=torch.bool)
    assert bb(x, m)[0].shape == (1, 2048, 4, 5)
    assert Backbone("resnet50", "none", dilation=True)(x, m)[0].shape == (1, 2048, 8, 10)
    assert Backbone("cnn_tiny", "none", norm="gn", width=8)(x, m)[0].shape == (1, 64, 4, 5)
    bn = Backbone("resnet18", "none", norm="bn", trainable_layers=["stem", "layer1", "layer2", "layer3", "layer4"])
    assert all(p.requires_grad for p in bn.parameters())


def test_padding_mask_follows_the_feature_stride():
    bb = Backbone("cnn_tiny", "none", width=8)
    m = torch.zeros(1, 128, 160, dtype=torch.bool)
    m[:, :, 96:] = True
    _, fm = bb(torch.rand(1, 3, 128, 160), m)
    assert fm.shape == (1, 4, 5) and fm[0, :, 3:].all() and not fm[0, :, :3].any()
