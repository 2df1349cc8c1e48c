"""Hugging Face Conditional DETR and DAB-DETR folders made by transformers at test time
(``save_pretrained`` of its own models with random weights) and loaded through this project's
loader: the same logits, boxes and post-processed detections as transformers' on the same padded
batch of two sizes; the key maps written back give the saved tensors; transformers' running names
(``save_original_format=False``) read the same; folders of other architectures and configs this
project cannot follow are refused with one line."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (ConditionalDetrConfig, ConditionalDetrForObjectDetection, ConditionalDetrImageProcessor,
                          DabDetrConfig, DabDetrForObjectDetection, ResNetConfig)

from detr_irpe.commands.cli import run_main
from detr_irpe.core.errors import SourceError
from detr_irpe.hub.huggingface import CONFIG_FILE, SAFETENSORS_FILE, family_keys, project_to_hf, read_hf_folder
from detr_irpe.hub.huggingface_family import CONDITIONAL, DAB
from detr_irpe.hub.loader import load_model
from detr_irpe.models import TopKPostProcess, pad_images
from engine_helpers import tool_main

#: hidden size 256 as both references have (128 in two cases: transformers and this project follow
#: the width where the references hard-code 256); everything else small
SMALL = dict(encoder_layers=2, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=10,
             use_pretrained_backbone=False)
#: category ids 0..4 with two gaps, in the Hub's COCO style
ID2LABEL = {0: "N/A", 1: "cat", 2: "dog", 3: "N/A", 4: "bird"}
NAMES = ["", "cat", "dog", "", "bird"]
SIZES = ((96, 128), (128, 72))
RESNET18 = dict(use_timm_backbone=False, backbone=None,
                backbone_config=ResNetConfig(depths=[2, 2, 2, 2], layer_type="basic", hidden_sizes=[64, 128, 256, 512],
                                             out_features=["stage4"]))
TIMM18 = dict(use_timm_backbone=True, backbone="resnet18")

#: name -> (architecture, transformers' model class, its config class, config fields, overrides expected)
CASES = {
    "conditional-timm-r18": (CONDITIONAL, ConditionalDetrForObjectDetection, ConditionalDetrConfig, dict(TIMM18),
                             {"model.decoder=conditional", "model.backbone.name=resnet18", "model.enc_layers=2",
                              "model.dec_layers=2", "model.dim_feedforward=64", "model.num_queries=10",
                              "model.num_classes=5", "model.hidden_dim=256", "model.num_select=100",
                              "model.position_embedding=sine", "model.aux_loss=false", "loss.ce_loss_coef=2.0"}),
    "conditional-resnet18-learned": (CONDITIONAL, ConditionalDetrForObjectDetection, ConditionalDetrConfig,
                                     dict(RESNET18, position_embedding_type="learned", encoder_layers=1),
                                     {"model.backbone.name=resnet18", "model.position_embedding=learned",
                                      "model.enc_layers=1"}),
    "dab-timm-r18": (DAB, DabDetrForObjectDetection, DabDetrConfig, dict(TIMM18),
                     {"model.decoder=dab", "model.backbone.name=resnet18", "model.num_classes=5",
                      "model.activation=prelu", "model.pe_temperature=20.0", "model.num_patterns=0",
                      "model.num_select=300", "model.random_refpoints_xy=false", "loss.ce_loss_coef=1.0"}),
    "dab-resnet18-3-patterns": (DAB, DabDetrForObjectDetection, DabDetrConfig,
                                dict(RESNET18, num_patterns=3, random_refpoints_xy=True, temperature_height=10,
                                     temperature_width=10),
                                {"model.num_patterns=3", "model.random_refpoints_xy=true",
                                 "model.pe_temperature=10.0"}),
    "conditional-timm-r18-d128": (CONDITIONAL, ConditionalDetrForObjectDetection, ConditionalDetrConfig,
                                  dict(TIMM18, d_model=128, encoder_layers=1),
                                  {"model.hidden_dim=128", "model.nheads=8"}),
    "dab-timm-r18-d128": (DAB, DabDetrForObjectDetection, DabDetrConfig,
                          dict(TIMM18, hidden_size=128, encoder_attention_heads=4, decoder_attention_heads=4,
                               encoder_layers=1),
                          {"model.hidden_dim=128", "model.nheads=4"}),
    "dab-timm-r50-dc5-relu": (DAB, DabDetrForObjectDetection, DabDetrConfig,
                              dict(use_timm_backbone=True, backbone="resnet50", dilation=True, encoder_layers=1,
                                   decoder_layers=1, activation_function="relu"),
                              {"model.backbone.name=resnet50", "model.backbone.dilation=true", "model.activation=relu",
                               "model.enc_layers=1", "model.dec_layers=1"}),
}


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random biases, norm scales, batch-norm statistics and PReLU slopes (the defaults, zeros and
    ones, would hide a mix-up of them) and matrices of unit gain (transformers' std 0.02 makes every
    attention nearly uniform, which would hide a mix-up of q and k); convolutions as initialised.
    DAB-DETR's shared box head is one tensor in transformers' model, so it stays shared."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) * 1.5 + 0.5)
            elif name.endswith(("running_mean", "bias")):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith("activation_fn.weight"):
                t.copy_(0.25 + torch.randn(t.shape, generator=g) * 0.1)
            elif t.dim() == 1 and t.is_floating_point():
                t.copy_(1 + torch.randn(t.shape, generator=g) * 0.1)
            elif t.dim() == 2:
                t.copy_(torch.randn(t.shape, generator=g) * t.shape[1] ** -0.5)
    return model


def images(seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, h, w, generator=g) for h, w in SIZES]


def transformers_model(case: str, seed: int = 0, **config):
    _, model_class, config_class, fields, _ = CASES[case]
    torch.manual_seed(seed)
    # auxiliary_loss false: with it, transformers' Conditional DETR feeds normalised states forward
    cfg = config_class(**{**SMALL, **fields, "auxiliary_loss": False, "id2label": ID2LABEL, **config})
    return randomize(model_class(cfg), seed).eval()


@pytest.fixture(scope="module", params=list(CASES))
def saved(request, tmp_path_factory):
    """(case, folder written by transformers' save_pretrained, transformers' model)."""
    hf = transformers_model(request.param)
    folder = tmp_path_factory.mktemp("hf") / request.param
    hf.save_pretrained(folder)
    return request.param, folder, hf


def forward_both(model, hf, imgs):
    batch, mask = pad_images(imgs)
    with torch.no_grad():
        return model(imgs), hf(pixel_values=batch, pixel_mask=(~mask).long())


def assert_same_detections(ours: list, theirs: list):
    for d, e in zip(ours, theirs, strict=True):
        assert torch.equal(d["labels"], e["labels"])
        torch.testing.assert_close(d["scores"], e["scores"], atol=1e-5, rtol=0)
        torch.testing.assert_close(d["boxes"], e["boxes"], atol=1e-3, rtol=0)  # pixels


def test_folder_gives_transformers_outputs_and_detections(saved):
    case, folder, hf = saved
    arch, expected = CASES[case][0], CASES[case][4]
    read = read_hf_folder(folder)
    assert expected <= set(read.overrides)
    assert read.class_names == NAMES
    loaded = load_model(folder, device="cpu")
    assert loaded.cfg.model.decoder == arch.decoder and loaded.class_names == NAMES
    imgs = images()
    ours, theirs = forward_both(loaded.model, hf, imgs)
    torch.testing.assert_close(ours["pred_logits"], theirs.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours["pred_boxes"], theirs.pred_boxes, atol=1e-5, rtol=0)
    if arch is DAB:
        # transformers' logit clamps at 1e-5, the reference's at 1e-3: the anchors stay clear of both
        assert 1e-3 < ours["anchors"].min() and ours["anchors"].max() < 1 - 1e-3
    # the same top-k as transformers' post-processing (threshold below every score): the
    # recipe's count (which keeps every pair of these small models) and a count that truncates
    sizes = torch.tensor(SIZES)
    processor = ConditionalDetrImageProcessor()
    k = loaded.cfg.model.num_select
    assert_same_detections(loaded.postprocess(ours, sizes),
                           processor.post_process_object_detection(theirs, threshold=-1, target_sizes=sizes, top_k=k))
    assert_same_detections(TopKPostProcess(7)(ours, sizes),
                           processor.post_process_object_detection(theirs, threshold=-1, target_sizes=sizes, top_k=7))


@pytest.mark.parametrize("saved", [c for c in CASES if "-timm-" in c], indirect=True)  # written with timm names
def test_key_map_writes_back_the_saved_names(saved):
    case, folder, _ = saved
    arch = CASES[case][0]
    read = read_hf_folder(folder)
    written = project_to_hf(arch.untie(read.state), family_keys(arch))
    stored = load_file(folder / SAFETENSORS_FILE)
    assert written.keys() == stored.keys()
    assert all(torch.equal(written[k], v) for k, v in stored.items())


@pytest.mark.parametrize("case", ["conditional-timm-r18", "dab-timm-r18"])
def test_transformers_running_names_read_the_same(case, tmp_path):
    """``save_original_format=False`` writes Conditional DETR's load-time names (``o_proj``,
    ``mlp.fc1``, ``self_attn.q_content_proj``...); DAB-DETR's folder may hold the decoder's copy of
    its shared box head."""
    hf = transformers_model(case)
    hf.save_pretrained(tmp_path / "hub")
    hf.save_pretrained(tmp_path / "running", save_original_format=False)
    running = load_file(tmp_path / "running" / SAFETENSORS_FILE)
    if case.startswith("dab"):
        copy = {k: v.contiguous() for k, v in hf.state_dict().items() if k.startswith("model.decoder.bbox_embed.")}
        assert copy and all(k.replace("model.decoder.bbox_embed.", "bbox_predictor.") in running for k in copy)
        running.update(copy)
        save_file(running, tmp_path / "running" / SAFETENSORS_FILE)
    else:
        assert "model.decoder.layers.0.self_attn.q_content_proj.weight" in running
    a, b = read_hf_folder(tmp_path / "hub").state, read_hf_folder(tmp_path / "running").state
    assert a.keys() == b.keys() and all(torch.equal(a[k], v) for k, v in b.items())


def test_conditional_auxiliary_loss_folder_warns_and_keeps_the_reference_computation(tmp_path, caplog):
    """With auxiliary_loss true transformers' Conditional DETR feeds each decoder layer's
    normalised output to the next one; the reference, and this project, the un-normalised one."""
    with_aux = transformers_model("conditional-timm-r18", encoder_layers=1, auxiliary_loss=True)
    without = transformers_model("conditional-timm-r18", encoder_layers=1)
    without.load_state_dict(with_aux.state_dict())
    with_aux.save_pretrained(tmp_path)
    with caplog.at_level("WARNING"):
        loaded = load_model(tmp_path, device="cpu")
    assert "auxiliary_loss is true" in caplog.text and loaded.cfg.model.aux_loss
    ours, theirs = forward_both(loaded.model, without, images())
    torch.testing.assert_close(ours["pred_logits"], theirs.logits, atol=1e-5, rtol=0)
    _, theirs_aux = forward_both(loaded.model, with_aux, images())
    assert (ours["pred_logits"] - theirs_aux.logits).abs().max() > 1e-3


def copy_folder(src, dst, config=None, drop=(), add=None):
    """``src`` with ``config`` fields replaced and tensors dropped or added."""
    dst.mkdir(exist_ok=True)
    data = json.loads((src / CONFIG_FILE).read_text())
    (dst / CONFIG_FILE).write_text(json.dumps({**data, **(config or {})}))
    state = {k: v for k, v in load_file(src / SAFETENSORS_FILE).items() if k not in drop}
    save_file({**state, **(add or {})}, dst / SAFETENSORS_FILE)
    return dst


@pytest.fixture(scope="module")
def small_folders(tmp_path_factory):
    """One folder of each architecture, 1 encoder and 2 decoder layers."""
    root = tmp_path_factory.mktemp("small")
    for case in ("conditional-timm-r18", "dab-timm-r18"):
        transformers_model(case, encoder_layers=1).save_pretrained(root / case.split("-")[0])
    return root


@pytest.mark.parametrize("which, edit, expected", [
    ("dab", dict(config={"temperature_height": 20, "temperature_width": 10}),
     "temperature_height=20 and temperature_width=10 differ"),
    ("dab", dict(config={"keep_query_pos": True}), "keep_query_pos=true is not supported"),
    ("dab", dict(config={"query_dim": 2}), "query_dim=2 is not supported"),
    ("dab", dict(config={"normalize_before": True}), "normalize_before=true is not supported"),
    ("dab", dict(config={"sine_position_embedding_scale": 1.0}), "sine_position_embedding_scale=1.0: expected null"),
    ("dab", dict(config={"activation_function": "gelu"}), "activation_function 'gelu' is not supported"),
    ("dab", dict(config={"decoder_ffn_dim": 128}), "encoder_ffn_dim=64 and decoder_ffn_dim=128 differ"),
    ("dab", dict(config={"num_patterns": 2}), "missing 1, e.g. model.patterns.weight"),
    ("dab", dict(config={"id2label": {"0": "cat"}}), "id2label has 1 labels but the class head has 5 classes;"),
    ("dab", dict(drop={"model.decoder.layers.1.mlp.fc1.weight"}),
     "missing 1, e.g. model.decoder.layers.1.mlp.fc1.weight"),
    ("dab", dict(add={"model.decoder.extra.weight": torch.zeros(2)}),
     "1 tensor(s) match no DAB-DETR parameter, e.g. model.decoder.extra.weight"),
    ("dab", dict(add={"model.decoder.bbox_embed.layers.0.bias": torch.zeros(256)}),
     "model.decoder.bbox_embed.layers.0.bias differs from bbox_predictor.layers.0.bias"),
    ("dab", dict(config={"tie_word_embeddings": False}), "tie_word_embeddings is false"),
    ("conditional", dict(config={"d_model": 128}), "shapes differ for"),
    # sizes the config or the model's constructor refuse (the fit check builds the model)
    ("dab", dict(config={"hidden_size": 100, "encoder_attention_heads": 3, "decoder_attention_heads": 3}),
     "config.json describes a model this project cannot build: "),
    ("dab", dict(config={"hidden_size": 250, "encoder_attention_heads": 5, "decoder_attention_heads": 5}),
     "config.json describes a model this project cannot build: DAB-DETR needs"),
    ("conditional", dict(config={"position_embedding_type": "none"}), "position_embedding_type 'none'"),
    ("conditional", dict(drop={"model.encoder.layers.0.self_attn.v_proj.bias"}),
     "missing model.encoder.layers.0.self_attn.v_proj.bias (q, k and v are needed"),
    ("conditional", dict(config={"decoder_layers": 1}),
     "not in the model 34, e.g. model.decoder.layers.1."),
    ("conditional", dict(config={"architectures": ["ConditionalDetrForSegmentation"]}),
     "describes ConditionalDetrForSegmentation: expected architectures ['ConditionalDetrForObjectDetection']"),
])
def test_bad_folder_is_refused_with_one_line(small_folders, tmp_path, which, edit, expected):
    folder = copy_folder(small_folders / which, tmp_path / "bad", **edit)
    with pytest.raises(SourceError) as err:
        read_hf_folder(folder)
    message = str(err.value)
    assert expected in message and str(folder) in message and "\n" not in message


def evaluate_error(capsys, folder) -> str:
    status = run_main(tool_main("evaluate"), ["--checkpoint", str(folder)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.parametrize("model_type, architecture", [
    ("deformable_detr", "DeformableDetrForObjectDetection"), ("dino_detr", "DinoDetrForObjectDetection"),
    ("rt_detr", "RTDetrForObjectDetection"), ("rf_detr", "RfDetrForObjectDetection"),
    ("lw_detr", "LwDetrForObjectDetection"), ("detr", "DetrForSegmentation"),
])
def test_evaluate_refuses_another_family_model_with_one_line(small_folders, tmp_path, capsys, model_type,
                                                             architecture):
    folder = copy_folder(small_folders / "conditional", tmp_path / model_type,
                         config={"model_type": model_type, "architectures": [architecture]})
    line = evaluate_error(capsys, folder)
    assert str(folder / CONFIG_FILE) in line and architecture in line
    if model_type != "detr":
        assert f"model_type {model_type!r}" in line
        assert all(f"'{t}' ({a})" in line for t, a in (("detr", "DetrForObjectDetection"),
                                                       ("conditional_detr", "ConditionalDetrForObjectDetection"),
                                                       ("dab-detr", "DabDetrForObjectDetection")))


def test_evaluate_refuses_unequal_dab_temperatures_with_one_line(small_folders, tmp_path, capsys):
    folder = copy_folder(small_folders / "dab", tmp_path / "dab-t", config={"temperature_width": 10})
    line = evaluate_error(capsys, folder)
    assert str(folder) in line and "temperature_height=20 and temperature_width=10 differ" in line
