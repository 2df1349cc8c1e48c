"""Make tests/data/conditional_detr_fixture.pt from the reference Conditional DETR code.

    .venv/bin/python tests/fixture_makers/conditional_detr.py /path/to/ConditionalDETR \
        [--commit 8ea7c3f] [--out tests/data/conditional_detr_fixture.pt]

The path is a checkout of Atten4Vis/ConditionalDETR (the folder holding ``models/`` and
``util/``); it is imported, never copied. The script builds the reference model small (ResNet-50,
hidden 256, 8 heads, 2 encoder and 3 decoder layers, feed-forward 64, 10 queries, 7 classes,
dropout 0, auxiliary loss), gives every state-dict entry its value by name
(tests/family_fixtures.py), runs two padded images, computes the reference focal set loss (matcher
costs 2/5/2, coefficients 2/5/2, alpha 0.25, auxiliary terms re-matched), back-propagates the
weighted total and saves: the config, the images and their padding mask, the targets, the
state-dict names and shapes, every output (auxiliary ones and the reference points included),
every loss term, the matches, and per parameter the gradient's sum, L2 norm and first 8 values.
tests/test_conditional_detr.py checks the project's ConditionalDETR against it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from family_fixtures import fill_by_name, gradient_summary  # noqa: E402

CONFIG = dict(backbone="resnet50", hidden_dim=256, nheads=8, enc_layers=2, dec_layers=3, dim_feedforward=64,
              num_queries=10, num_classes=7, dropout=0.0, aux_loss=True, position_embedding="sine",
              set_cost_class=2.0, set_cost_bbox=5.0, set_cost_giou=2.0, cls_loss_coef=2.0, bbox_loss_coef=5.0,
              giou_loss_coef=2.0, focal_alpha=0.25, lr_backbone=1e-5, dilation=False, masks=False)

#: two images whose padding reaches the stride-32 feature map (the second is 32 x 48 in a 64 x 96 batch)
IMAGE_SHAPES = [(3, 64, 96), (3, 32, 48)]
IMAGE_SEED = 20240611

TARGETS = [
    {"labels": [1, 4, 6], "boxes": [[0.30, 0.40, 0.25, 0.30], [0.70, 0.55, 0.20, 0.40], [0.50, 0.20, 0.60, 0.15]]},
    {"labels": [2, 4], "boxes": [[0.45, 0.50, 0.50, 0.60], [0.20, 0.75, 0.15, 0.20]]},
]


def import_reference(path: Path):
    """Import the reference's modules from ``path`` with the patches current torch needs: its
    attention module picks old torch's import paths on torch 2 (a version test that reads 2.x as
    old), and its backbone downloads ImageNet weights on the main process."""
    torch.nn.modules.linear._LinearWithBias = torch.nn.Linear
    sys.modules.setdefault("torch._overrides", torch.overrides)
    sys.path.insert(0, str(path))
    import models.backbone as backbone
    import models.conditional_detr as conditional_detr
    import models.matcher as matcher
    import models.transformer as transformer
    import util.misc as misc

    backbone.is_main_process = lambda: False  # pretrained=False: no download
    return backbone, conditional_detr, matcher, transformer, misc


def make_images() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(IMAGE_SEED)
    return [torch.randn(shape, generator=g) for shape in IMAGE_SHAPES]


def make_targets() -> list[dict]:
    return [{"labels": torch.tensor(t["labels"], dtype=torch.int64),
             "boxes": torch.tensor(t["boxes"], dtype=torch.float32)} for t in TARGETS]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", type=Path, help="checkout of Atten4Vis/ConditionalDETR")
    parser.add_argument("--commit", default="8ea7c3f", help="the reference commit (recorded in the fixture)")
    parser.add_argument("--out", type=Path, default=TESTS / "data" / "conditional_detr_fixture.pt")
    args = parser.parse_args(argv)
    if not (args.reference / "models" / "conditional_detr.py").is_file():
        parser.error(f"{args.reference} holds no models/conditional_detr.py")

    torch.manual_seed(0)
    torch.set_num_threads(1)  # as the tests (tests/conftest.py): the same reduction order
    backbone_mod, cd, matcher_mod, transformer_mod, misc = import_reference(args.reference)
    c = CONFIG
    ns = argparse.Namespace(**c)
    backbone = backbone_mod.build_backbone(ns)
    transformer = transformer_mod.Transformer(
        d_model=c["hidden_dim"], nhead=c["nheads"], num_queries=c["num_queries"],
        num_encoder_layers=c["enc_layers"], num_decoder_layers=c["dec_layers"],
        dim_feedforward=c["dim_feedforward"], dropout=c["dropout"], normalize_before=False,
        return_intermediate_dec=True)
    model = cd.ConditionalDETR(backbone, transformer, num_classes=c["num_classes"], num_queries=c["num_queries"],
                               aux_loss=c["aux_loss"])
    fill_by_name(model)
    model.train()  # the training path; dropout is 0, so it is deterministic

    matcher = matcher_mod.HungarianMatcher(cost_class=c["set_cost_class"], cost_bbox=c["set_cost_bbox"],
                                           cost_giou=c["set_cost_giou"])
    weight_dict = {"loss_ce": c["cls_loss_coef"], "loss_bbox": c["bbox_loss_coef"], "loss_giou": c["giou_loss_coef"]}
    weight_dict.update({f"{k}_{i}": v for i in range(c["dec_layers"] - 1) for k, v in list(weight_dict.items())})
    criterion = cd.SetCriterion(c["num_classes"], matcher=matcher, weight_dict=weight_dict,
                                focal_alpha=c["focal_alpha"], losses=["labels", "boxes", "cardinality"])

    matches = []
    solve = matcher.forward

    def recording_matcher(outputs, targets):
        indices = solve(outputs, targets)
        matches.append([(i.tolist(), j.tolist()) for i, j in indices])
        return indices

    matcher.forward = recording_matcher

    captured = {}
    model.transformer.register_forward_hook(lambda m, i, o: captured.update(reference_points=o[1]))

    images = make_images()
    targets = make_targets()
    batch = misc.nested_tensor_from_tensor_list(images)
    outputs = model(batch)
    losses = criterion(outputs, targets)
    total = sum(losses[k] * weight_dict[k] for k in losses if k in weight_dict)
    model.zero_grad()
    total.backward()

    grads = gradient_summary(model)
    fixture = {
        "reference": {"repository": "Atten4Vis/ConditionalDETR", "commit": args.commit,
                      "torch": str(torch.__version__)},
        "config": dict(c),
        "images": images,
        "mask": batch.mask.clone(),
        "targets": make_targets(),
        "state_dict": [(k, tuple(v.shape)) for k, v in model.state_dict().items()],
        "trainable": [k for k, p in model.named_parameters() if p.requires_grad],
        "outputs": {
            "pred_logits": outputs["pred_logits"].detach().clone(),
            "pred_boxes": outputs["pred_boxes"].detach().clone(),
            "aux_outputs": [{k: v.detach().clone() for k, v in a.items()} for a in outputs["aux_outputs"]],
            "reference_points": captured["reference_points"].detach().clone(),
        },
        "weight_dict": weight_dict,
        "losses": {k: float(v.detach()) for k, v in losses.items()},
        "total_loss": float(total.detach()),
        # the matcher runs on the last layer first, then on each auxiliary output in order
        "matches": matches,
        # one (parameters, 11) float64 table: [sum, L2 norm, n, first n values zero-padded to 8]
        "gradient_names": list(grads),
        "gradients": torch.stack(list(grads.values())),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes): total loss {float(total):.6f}, "
          f"{len(grads)} gradients, {len(fixture['state_dict'])} state-dict entries")


if __name__ == "__main__":
    main()
