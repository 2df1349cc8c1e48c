"""Hugging Face DETR folders made by transformers at test time: the weights read into this
project's model give transformers' own logits, boxes and post-processed detections on the same
pixels, a padded batch of two sizes included; the exported folder loads into transformers with the
same outputs; bad folders are refused with one line."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor, ResNetConfig

from detr_irpe.config import load_config
from detr_irpe.core.errors import SourceError
from detr_irpe.hub.huggingface import (CONFIG_FILE, SAFETENSORS_FILE, TORCH_FILE, HFExportError, is_hf_folder,
                                       read_hf_folder, write_hf_folder)
from detr_irpe.models import PostProcess, build_model, pad_images

SMALL = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
             encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=6, use_pretrained_backbone=False)
#: category ids 0..4 with two gaps, in the Hub's COCO style
ID2LABEL = {0: "N/A", 1: "cat", 2: "dog", 3: "N/A", 4: "bird"}
SIZES = ((96, 128), (128, 72))


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random biases, norm scales and batch-norm statistics (the defaults, zeros and ones, would
    hide a mix-up of them) and matrices of unit gain (transformers' std 0.02 makes every attention
    nearly uniform, which would hide a mix-up of q and k); convolutions as initialised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) * 1.5 + 0.5)
            elif name.endswith(("running_mean", "bias")):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.dim() == 1 and t.is_floating_point():
                t.copy_(1 + torch.randn(t.shape, generator=g) * 0.1)
            elif t.dim() == 2:
                t.copy_(torch.randn(t.shape, generator=g) * t.shape[1] ** -0.5)
    return model


def hf_detr(seed: int = 0, **config) -> DetrForObjectDetection:
    torch.manual_seed(seed)
    cfg = DetrConfig(**{**SMALL, "id2label": ID2LABEL, **config})
    return randomize(DetrForObjectDetection(cfg), seed).eval()


def images(seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, h, w, generator=g) for h, w in SIZES]


def project_model(overrides):
    model = build_model(load_config(None, overrides))[0]
    return model.eval()


def hf_forward(hf, imgs):
    batch, mask = pad_images(imgs)
    with torch.no_grad():
        return hf(pixel_values=batch, pixel_mask=(~mask).long())


def threshold_between(scores: torch.Tensor) -> float:
    """A score threshold in the widest gap among the middle half of ``scores``: some detections
    kept, some not, none near the boundary."""
    s = scores.flatten().sort().values
    lo, hi = len(s) // 4, 3 * len(s) // 4
    gaps = s[lo + 1:hi + 1] - s[lo:hi]
    i = lo + int(gaps.argmax())
    return float(s[i] + s[i + 1]) / 2


def assert_same_detections(model, hf, imgs):
    """Logits and boxes to 1e-4 and the same post-processed detections."""
    with torch.no_grad():
        ours = model(imgs)
    theirs = hf_forward(hf, imgs)
    torch.testing.assert_close(ours["pred_logits"], theirs.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours["pred_boxes"], theirs.pred_boxes, atol=1e-4, rtol=0)
    sizes = torch.tensor(SIZES)
    dets = PostProcess()(ours, sizes)
    t = threshold_between(torch.stack([d["scores"] for d in dets]))
    their_dets = DetrImageProcessor().post_process_object_detection(theirs, threshold=t, target_sizes=sizes)
    kept = 0
    for d, e in zip(dets, their_dets):
        keep = d["scores"] > t
        kept += int(keep.sum())
        assert torch.equal(d["labels"][keep], e["labels"])
        torch.testing.assert_close(d["scores"][keep], e["scores"], atol=1e-4, rtol=0)
        torch.testing.assert_close(d["boxes"][keep], e["boxes"], atol=1e-2, rtol=0)
    assert 0 < kept < sum(len(d["scores"]) for d in dets)


def copy_folder(src, dst, config=None, drop=(), add=None, state=None):
    """``src`` with ``config`` fields replaced, tensors dropped or added (or all given as ``state``)."""
    dst.mkdir(exist_ok=True)
    data = json.loads((src / CONFIG_FILE).read_text())
    (dst / CONFIG_FILE).write_text(json.dumps({**data, **(config or {})}))
    state = state if state is not None else load_file(src / SAFETENSORS_FILE)
    state = {k: v for k, v in state.items() if k not in drop}
    save_file({**state, **(add or {})}, dst / SAFETENSORS_FILE)
    return dst


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory):
    """A timm ResNet-18 DETR saved by transformers (safetensors), with the model itself."""
    hf = hf_detr(use_timm_backbone=True, backbone="resnet18")
    folder = tmp_path_factory.mktemp("hf") / "detr-r18"
    hf.save_pretrained(folder)
    return folder, hf


def test_safetensors_folder_gives_transformers_detections(hub_folder):
    folder, hf = hub_folder
    assert (folder / SAFETENSORS_FILE).is_file() and is_hf_folder(folder)
    read = read_hf_folder(folder)
    assert read.class_names == ["", "cat", "dog", "", "bird"]
    assert {"model.backbone.name=resnet18", "model.backbone.dilation=false", "model.hidden_dim=32",
            "model.enc_layers=2", "model.dec_layers=2", "model.nheads=4", "model.dim_feedforward=64",
            "model.num_queries=6", "model.num_classes=5", "model.position_embedding=sine"} <= set(read.overrides)
    model = project_model(read.overrides)
    model.load_state_dict(read.state, strict=True)
    assert_same_detections(model, hf, images())


def test_pytorch_model_bin_folder_reads_the_same_weights(hub_folder, tmp_path):
    folder, _ = hub_folder
    shutil.copy(folder / CONFIG_FILE, tmp_path / CONFIG_FILE)
    torch.save(load_file(folder / SAFETENSORS_FILE), tmp_path / TORCH_FILE)
    from_bin, from_safetensors = read_hf_folder(tmp_path), read_hf_folder(folder)
    assert from_bin.overrides == from_safetensors.overrides
    assert from_bin.state.keys() == from_safetensors.state.keys()
    assert all(torch.equal(from_bin.state[k], v) for k, v in from_safetensors.state.items())


def test_dilated_resnet50_folder_gives_transformers_detections(tmp_path):
    hf = hf_detr(use_timm_backbone=True, backbone="resnet50", dilation=True, encoder_layers=1, decoder_layers=1)
    hf.save_pretrained(tmp_path)
    read = read_hf_folder(tmp_path)
    assert {"model.backbone.name=resnet50", "model.backbone.dilation=true"} <= set(read.overrides)
    model = project_model(read.overrides)
    model.load_state_dict(read.state, strict=True)
    assert_same_detections(model, hf, images())


def test_transformers_resnet_and_learned_embedding_give_transformers_detections(tmp_path):
    resnet18 = ResNetConfig(depths=[2, 2, 2, 2], layer_type="basic", hidden_sizes=[64, 128, 256, 512],
                            out_features=["stage4"])
    hf = hf_detr(use_timm_backbone=False, backbone_config=resnet18, position_embedding_type="learned")
    hf.save_pretrained(tmp_path)
    read = read_hf_folder(tmp_path)
    assert {"model.backbone.name=resnet18", "model.position_embedding=learned"} <= set(read.overrides)
    model = project_model(read.overrides)
    model.load_state_dict(read.state, strict=True)
    assert_same_detections(model, hf, images())
    # transformers before 5.0 stored the learned embedding under the backbone
    old = {k.replace("model.position_embedding.", "model.backbone.position_embedding."): v
           for k, v in load_file(tmp_path / SAFETENSORS_FILE).items()}
    assert len([k for k in old if k.startswith("model.backbone.position_embedding.")]) == 2
    again = read_hf_folder(copy_folder(tmp_path, tmp_path / "older", state=old)).state
    assert again.keys() == read.state.keys() and all(torch.equal(again[k], v) for k, v in read.state.items())


@pytest.mark.parametrize("embedding", ["sine", "learned"])
def test_written_folder_loads_into_transformers_with_the_same_detections(tmp_path, embedding):
    overrides = ["model.backbone.name=resnet18", "model.backbone.weights=none", "model.hidden_dim=32",
                 "model.nheads=4", "model.enc_layers=2", "model.dec_layers=2", "model.dim_feedforward=64",
                 "model.num_queries=6", "model.num_classes=5", f"model.position_embedding={embedding}"]
    cfg = load_config(None, overrides)
    torch.manual_seed(0)
    model = randomize(build_model(cfg)[0]).eval()
    names = ["", "cat", "dog", "", "bird"]
    write_hf_folder(model, cfg, names, tmp_path)
    hf = DetrForObjectDetection.from_pretrained(tmp_path).eval()
    assert hf.config.id2label == ID2LABEL
    assert_same_detections(model, hf, images())
    read = read_hf_folder(tmp_path)
    assert read.class_names == names
    assert read.state.keys() == model.state_dict().keys()
    assert all(torch.equal(read.state[k], v) for k, v in model.state_dict().items())


def test_export_refuses_what_transformers_cannot_represent(tmp_path):
    cfg = load_config(None, ["model.backbone.name=resnet18", "model.backbone.weights=none", "model.hidden_dim=32",
                             "model.nheads=4", "model.num_classes=5", "model.irpe=rpe-2.0-product-ctx-1-k"])
    model = build_model(cfg)[0]
    with pytest.raises(HFExportError, match="iRPE rpe-2.0-product-ctx-1-k"):
        write_hf_folder(model, cfg, None, tmp_path)


@pytest.mark.parametrize("edit, expected", [
    (dict(config={"model_type": "rt_detr", "architectures": ["RTDetrForObjectDetection"]}),
     "model_type 'rt_detr', architectures ['RTDetrForObjectDetection']"),
    # a DETR folder relabelled Conditional DETR: read as one, its DETR weights are refused
    (dict(config={"model_type": "conditional_detr", "architectures": ["ConditionalDetrForObjectDetection"]}),
     "match no Conditional DETR parameter"),
    (dict(config={"model_type": "deformable_detr", "architectures": ["DeformableDetrForObjectDetection"]}),
     "model_type 'deformable_detr'"),
    (dict(config={"architectures": ["DetrForSegmentation"]}), "describes DetrForSegmentation: expected architectures ['DetrForObjectDetection']"),
    (dict(config={"backbone_config": None, "backbone": "resnet50d", "use_timm_backbone": True}),
     "timm backbone 'resnet50d' is not supported"),
    (dict(config={"backbone_config": {"model_type": "resnet", "layer_type": "bottleneck", "depths": [2, 2, 2, 2]}}),
     "depths [2, 2, 2, 2]"),
    (dict(config={"backbone_config": {"model_type": "swin"}}), "backbone_config model_type 'swin'"),
    (dict(config={"decoder_ffn_dim": 128}), "encoder_ffn_dim=64 and decoder_ffn_dim=128 differ"),
    (dict(config={"id2label": {"0": "cat"}}), "id2label has 1 labels but the class head has 5 classes"),
    (dict(add={"model.encoder.layers.0.extra.weight": torch.zeros(2)}),
     "1 tensor(s) match no DETR parameter, e.g. model.encoder.layers.0.extra.weight"),
    (dict(drop={"model.decoder.layers.1.fc1.weight"}), "missing 1, e.g. model.decoder.layers.1.fc1.weight"),
    (dict(drop={"model.encoder.layers.0.self_attn.k_proj.weight"}),
     "missing model.encoder.layers.0.self_attn.k_proj.weight (q, k and v are needed"),
    (dict(config={"encoder_layers": 1}), "not in the model 12, e.g. model.encoder.layers.1."),
    (dict(config={"d_model": 64}), "shapes differ for"),
])
def test_bad_folder_is_refused_with_one_line(hub_folder, tmp_path, edit, expected):
    folder = copy_folder(hub_folder[0], tmp_path / "bad", **edit)
    with pytest.raises(SourceError) as err:
        read_hf_folder(folder)
    message = str(err.value)
    assert expected in message and str(folder) in message and "\n" not in message


def test_unreadable_config_and_missing_weights_are_refused(hub_folder, tmp_path):
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(SourceError, match=r"config\.json cannot be read as JSON"):
        read_hf_folder(tmp_path)
    shutil.copy(hub_folder[0] / CONFIG_FILE, tmp_path / CONFIG_FILE)
    with pytest.raises(SourceError, match=f"{tmp_path} has no weights: expected model.safetensors or "
                                          f"pytorch_model.bin"):
        read_hf_folder(tmp_path)
    assert is_hf_folder(tmp_path) and not is_hf_folder(tmp_path / CONFIG_FILE) and not is_hf_folder(tmp_path / "x")
