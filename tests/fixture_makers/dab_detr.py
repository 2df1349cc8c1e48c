"""Make tests/data/dab_detr_fixture.pt from the reference DAB-DETR code.

    .venv/bin/python tests/fixture_makers/dab_detr.py /path/to/DAB-DETR \
        [--commit 723ddb8] [--out tests/data/dab_detr_fixture.pt]

The path is a checkout of IDEA-Research/DAB-DETR (the folder holding ``models/DAB_DETR/`` and
``util/``); it is imported, never copied. For each setting of SETTINGS the script builds the
reference model small (ResNet-50 with frozen batch norm, hidden 256, 8 heads, feed-forward 64,
10 anchors, 7 classes, dropout 0, PReLU, image sine encoding at temperature 20, auxiliary loss),
gives every state-dict entry its value by name (tests/family_fixtures.py), runs two padded
images, computes the reference focal set loss (matcher costs 2/5/2, coefficients 1/5/2, alpha
0.25, auxiliary terms re-matched), back-propagates the weighted total and records: the state-dict
names, every output (auxiliary ones and the anchors each decoder layer used included), the
head-averaged encoder attention maps, every loss term, the matches, the top-k detections, and per
parameter the gradient's sum, L2 norm and first 8 values; then the outputs, loss terms and
gradients again in float64, where no rounding flips the sign of a ReLU input of the random
ResNet (in float32 a few such flips make its layer2-4 gradients differ by up to 1e-2 between
thread counts or machines). The images, their padding mask, the targets and probes of two small
reference functions are recorded once. tests/test_dab_detr.py checks the project's DABDETR
against it. The file is about 330 KiB.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from family_fixtures import fill_by_name, gradient_summary  # noqa: E402

#: the reference's arguments shared by every setting (its argparse names)
CONFIG = dict(backbone="resnet50", hidden_dim=256, nheads=8, dim_feedforward=64, num_queries=10, num_classes=7,
              dropout=0.0, transformer_activation="prelu", pre_norm=False, aux_loss=True,
              position_embedding="sine", pe_temperatureH=20, pe_temperatureW=20, lr_backbone=1e-5,
              dilation=False, masks=False, set_cost_class=2.0, set_cost_bbox=5.0, set_cost_giou=2.0,
              cls_loss_coef=1.0, bbox_loss_coef=5.0, giou_loss_coef=2.0, focal_alpha=0.25, num_select=20)

#: plain anchors (x, y initialised at random, as "fixxy" does) and three patterns
SETTINGS = {
    "anchors": dict(enc_layers=2, dec_layers=3, num_patterns=0, random_refpoints_xy=True),
    "patterns": dict(enc_layers=1, dec_layers=2, num_patterns=3, random_refpoints_xy=False),
}

#: two images whose padding reaches the stride-32 feature map (4 x 5 against 3 x 3); their values
#: are multiples of 1/IMAGE_STEPS (about N(0, 1)), stored as int8 counts of steps: exact, 1 byte each
IMAGE_SHAPES = [(3, 128, 160), (3, 96, 96)]
IMAGE_SEED = 20220124
IMAGE_STEPS = 32

TARGETS = [
    {"labels": [0, 3, 6], "boxes": [[0.35, 0.40, 0.30, 0.45], [0.72, 0.60, 0.25, 0.30], [0.50, 0.18, 0.70, 0.20]]},
    {"labels": [3, 5], "boxes": [[0.40, 0.55, 0.55, 0.50], [0.80, 0.25, 0.20, 0.25]]},
]


def import_reference(path: Path) -> types.SimpleNamespace:
    """Import the reference's modules from ``path`` with the patches current torch needs: its
    attention module falls back to old torch's import paths, its package imports the deformable
    variant whose compiled ops are not built here (stubbed: unused), and its backbone downloads
    ImageNet weights on the main process."""
    torch.nn.modules.linear._LinearWithBias = torch.nn.Linear
    sys.modules.setdefault("torch._overrides", torch.overrides)
    sys.modules.setdefault("MultiScaleDeformableAttention", types.ModuleType("MultiScaleDeformableAttention"))
    sys.path.insert(0, str(path))
    import models.DAB_DETR.backbone as backbone
    import models.DAB_DETR.DABDETR as dabdetr
    import models.DAB_DETR.matcher as matcher
    import models.DAB_DETR.transformer as transformer
    import util.misc as misc

    backbone.is_main_process = lambda: False  # pretrained=False: no download
    return types.SimpleNamespace(backbone=backbone, dabdetr=dabdetr, matcher=matcher, transformer=transformer,
                                 misc=misc)


def make_image_steps() -> list[torch.Tensor]:
    """The images as int8 counts of 1/IMAGE_STEPS (what the fixture stores)."""
    g = torch.Generator().manual_seed(IMAGE_SEED)
    return [(torch.randn(shape, generator=g, dtype=torch.float32) * IMAGE_STEPS).round().clamp(-127, 127).to(torch.int8)
            for shape in IMAGE_SHAPES]


def images_from_steps(steps: list[torch.Tensor]) -> list[torch.Tensor]:
    return [s.float() / IMAGE_STEPS for s in steps]


def make_targets() -> list[dict]:
    return [{"labels": torch.tensor(t["labels"], dtype=torch.int64),
             "boxes": torch.tensor(t["boxes"], dtype=torch.float32)} for t in TARGETS]


def build_reference(ref: types.SimpleNamespace, setting: dict):
    """(model, criterion, post-processor) of the reference at CONFIG + ``setting``."""
    args = argparse.Namespace(**CONFIG, **setting)
    model = ref.dabdetr.DABDETR(ref.backbone.build_backbone(args), ref.transformer.build_transformer(args),
                                num_classes=args.num_classes, num_queries=args.num_queries,
                                num_dec_layers=args.dec_layers, aux_loss=args.aux_loss, iter_update=True,
                                query_dim=4, random_refpoints_xy=args.random_refpoints_xy)
    weight_dict = {"loss_ce": args.cls_loss_coef, "loss_bbox": args.bbox_loss_coef, "loss_giou": args.giou_loss_coef}
    weight_dict.update({f"{k}_{i}": v for i in range(args.dec_layers - 1) for k, v in list(weight_dict.items())})
    criterion = ref.dabdetr.SetCriterion(args.num_classes, matcher=ref.matcher.build_matcher(args),
                                         weight_dict=weight_dict, focal_alpha=args.focal_alpha,
                                         losses=["labels", "boxes", "cardinality"])
    return model, criterion, ref.dabdetr.PostProcess(num_select=args.num_select)


def detach(x):
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, dict):
        return {k: detach(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [detach(v) for v in x]
    return x


def run_setting(ref: types.SimpleNamespace, setting: dict, images: list[torch.Tensor], targets: list[dict],
                dtype: torch.dtype) -> dict:
    """One forward, loss and backward of the reference at ``setting`` in ``dtype``."""
    torch.manual_seed(0)  # the reference's own initialisation, overwritten below, but reproducible
    model, criterion, postprocess = build_reference(ref, setting)
    requires_grad_at_init = model.refpoint_embed.weight.requires_grad
    fill_by_name(model)
    model.to(dtype).train()
    images = [img.to(dtype) for img in images]
    targets = [{"labels": t["labels"], "boxes": t["boxes"].to(dtype)} for t in targets]

    captured = {"attention": []}
    model.transformer.register_forward_hook(lambda m, i, o: captured.__setitem__("anchors", o[1]))
    for layer in model.transformer.encoder.layers:
        layer.self_attn.register_forward_hook(lambda m, i, o: captured["attention"].append(o[1]))
    outputs = model(ref.misc.nested_tensor_from_tensor_list(images))
    losses = criterion(outputs, targets)
    total = sum(losses[k] * w for k, w in criterion.weight_dict.items() if k in losses)
    total.backward()
    with torch.no_grad():
        matches = criterion.matcher({k: v for k, v in outputs.items() if k != "aux_outputs"}, targets)
        sizes = torch.tensor([img.shape[-2:] for img in images])
        detections = postprocess(outputs, sizes)
    grads = gradient_summary(model)
    return {
        "state_dict_keys": list(model.state_dict().keys()),
        "refpoint_requires_grad_at_init": bool(requires_grad_at_init),
        "outputs": {"pred_logits": detach(outputs["pred_logits"]), "pred_boxes": detach(outputs["pred_boxes"]),
                    "aux_outputs": detach(outputs["aux_outputs"]), "anchors": detach(captured["anchors"])},
        "encoder_attention_mean": detach(captured["attention"]),
        "losses": {k: float(v.detach()) for k, v in losses.items()},
        "total_loss": float(total.detach()),
        "weight_dict": dict(criterion.weight_dict),
        "matches": [(i.clone(), j.clone()) for i, j in matches],
        "detections": detach(detections),
        # packed: one row [sum, norm, n, v0 .. v7] per parameter with a gradient
        "gradient_names": list(grads),
        "gradients": torch.stack(list(grads.values())),
    }


def record_setting(ref: types.SimpleNamespace, setting: dict, images, targets) -> dict:
    """The float32 run in full; of the float64 run (where no rounding flips the sign of a ReLU
    input, so backbone gradients are reproducible) the outputs, losses and gradients."""
    f32 = run_setting(ref, setting, images, targets, torch.float32)
    # the reference makes its zero decoder input in the default dtype
    torch.set_default_dtype(torch.float64)
    try:
        f64 = run_setting(ref, setting, images, targets, torch.float64)
    finally:
        torch.set_default_dtype(torch.float32)
    return {
        "setting": dict(setting),
        "state_dict_keys": f32.pop("state_dict_keys"),
        "refpoint_requires_grad_at_init": f32.pop("refpoint_requires_grad_at_init"),
        "float32": f32,
        "float64": {k: f64[k] for k in ("outputs", "losses", "total_loss", "gradient_names", "gradients")},
    }


#: inputs of the reference's small functions: the logit (clamped at both ends) and the anchors'
#: sine embedding
PROBE_PROBABILITIES = [0.0, 1e-4, 1e-3, 0.2, 0.5, 0.9995, 1.0]
PROBE_ANCHORS = [[[0.1, 0.7, 0.3, 0.05], [0.9, 0.25, 0.6, 1.0]]]


def probes(ref: types.SimpleNamespace) -> dict:
    x = torch.tensor(PROBE_PROBABILITIES)
    anchors = torch.tensor(PROBE_ANCHORS)
    return {"inverse_sigmoid": (x, ref.misc.inverse_sigmoid(x)),
            "anchor_sine": (anchors, ref.transformer.gen_sineembed_for_position(anchors, 256))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", type=Path, help="checkout of IDEA-Research/DAB-DETR")
    parser.add_argument("--commit", default="723ddb8", help="the reference commit (recorded in the fixture)")
    parser.add_argument("--out", type=Path, default=TESTS / "data" / "dab_detr_fixture.pt")
    args = parser.parse_args(argv)
    if not (args.reference / "models" / "DAB_DETR" / "DABDETR.py").is_file():
        parser.error(f"{args.reference} holds no models/DAB_DETR/DABDETR.py")
    torch.set_num_threads(1)
    ref = import_reference(args.reference.resolve())
    steps, targets = make_image_steps(), make_targets()
    images = images_from_steps(steps)
    padded = ref.misc.nested_tensor_from_tensor_list(images)
    fixture = {
        "reference": {"repository": "IDEA-Research/DAB-DETR", "commit": args.commit,
                      "torch": str(torch.__version__)},
        "config": dict(CONFIG),
        "image_steps": steps,  # image = steps / image_step_count
        "image_step_count": IMAGE_STEPS,
        "mask": padded.mask.clone(),
        "targets": targets,
        "probes": probes(ref),
        "settings": {name: record_setting(ref, setting, images, targets) for name, setting in SETTINGS.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
