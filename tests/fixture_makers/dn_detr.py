"""Make tests/data/dn_fixture.pt from the reference DN-DETR code (its DAB-DETR variant).

    .venv/bin/python tests/fixture_makers/dn_detr.py /path/to/DN-DETR \\
        [--commit ff3902a] [--out tests/data/dn_fixture.pt]

The path is a checkout of IDEA-Research/DN-DETR (the folder holding ``models/DN_DAB_DETR/`` and
``util/``); it is imported, never copied, on the CPU: its ``.cuda()`` and ``.to('cuda')`` calls
are made no-ops while it runs, its package ``models`` is entered without its ``__init__`` (which
imports the deformable variants and their compiled ops), and ``timm`` (imported by its unused
Swin backbone) is stubbed. For each setting of SETTINGS the script builds the reference
``dab_detr`` small (ResNet-50 with frozen batch norm, hidden 256, 8 heads, feed-forward 64, 10
anchors, 7 classes, dropout 0, PReLU, image sine encoding at temperature 20, auxiliary loss),
gives every state-dict entry its value by name (tests/family_fixtures.py), runs two padded images
in training with denoising (``dn_args`` as its engine builds them; the global generator seeded
with NOISE_SEED right before ``prepare_for_dn`` draws the noise), computes the reference loss
(matching and ``tgt_*`` denoising terms; matcher costs 2/5/2, coefficients 1/5/2, alpha 0.25),
back-propagates the weighted total and records: the state-dict names, the noise the reference
drew (the noised labels and the noised, clamped boxes before their logit), the decoder input
queries and the self-attention mask, every output (matching and denoising parts, auxiliary
layers included, the anchors of every layer), every loss term, and per parameter the gradient's
sum, L2 norm and first 8 values. It then records the reference's inference outputs (no
denoising part). Attention-mask probes of ``prepare_for_dn`` for a few (queries, groups, target
counts) are recorded once. tests/test_denoising.py checks the project against it. The file is
about 200 KiB.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import types
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from family_fixtures import fill_by_name, gradient_summary  # noqa: E402
from dab_detr import IMAGE_STEPS, images_from_steps, make_image_steps, make_targets  # noqa: E402

#: the reference's arguments shared by every setting (its argparse names)
CONFIG = dict(backbone="resnet50", hidden_dim=256, nheads=8, dim_feedforward=64, num_queries=10, num_classes=7,
              dropout=0.0, transformer_activation="prelu", pre_norm=False, aux_loss=True,
              position_embedding="sine", pe_temperatureH=20, pe_temperatureW=20, lr_backbone=1e-5,
              dilation=False, masks=False, set_cost_class=2.0, set_cost_bbox=5.0, set_cost_giou=2.0,
              cls_loss_coef=1.0, bbox_loss_coef=5.0, giou_loss_coef=2.0, focal_alpha=0.25, use_dn=True)

#: the reference's defaults (5 groups, label noise 0.2, box noise 0.4) with plain anchors; patterns
#: with fewer groups and stronger noise
SETTINGS = {
    "anchors": dict(enc_layers=1, dec_layers=3, num_patterns=0, random_refpoints_xy=True, scalar=5,
                    label_noise_scale=0.2, box_noise_scale=0.4),
    "patterns": dict(enc_layers=1, dec_layers=2, num_patterns=2, random_refpoints_xy=False, scalar=2,
                     label_noise_scale=0.5, box_noise_scale=1.0),
}

NOISE_SEED = 20220601

#: (matching queries, groups, per-image target counts) for the attention-mask probes
MASK_PROBES = [(4, 1, [2]), (3, 2, [2, 1]), (5, 3, [1, 3, 0]), (6, 5, [2, 2]), (2, 4, [1])]


@contextlib.contextmanager
def cpu_for_cuda():
    """``Tensor.cuda()`` returns the tensor, ``Tensor.to('cuda')`` leaves it where it is."""
    cuda, to = torch.Tensor.cuda, torch.Tensor.to

    def to_cpu(self, *args, **kwargs):
        args = tuple("cpu" if (isinstance(a, str) and a.startswith("cuda")) or
                     (isinstance(a, torch.device) and a.type == "cuda") else a for a in args)
        if "device" in kwargs and str(kwargs["device"]).startswith("cuda"):
            kwargs["device"] = "cpu"
        return to(self, *args, **kwargs)

    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.Tensor.to = to_cpu
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.Tensor.to = cuda, to


def import_reference(path: Path) -> types.SimpleNamespace:
    """Import the reference's DN_DAB_DETR modules from ``path`` with the patches current torch
    needs (see the module docstring)."""
    torch.nn.modules.linear._LinearWithBias = torch.nn.Linear
    sys.modules.setdefault("torch._overrides", torch.overrides)
    sys.modules.setdefault("MultiScaleDeformableAttention", types.ModuleType("MultiScaleDeformableAttention"))
    if "timm" not in sys.modules:  # only the Swin backbone, unused, imports it
        timm, timm_models, layers = (types.ModuleType(n) for n in ("timm", "timm.models", "timm.models.layers"))
        layers.DropPath = layers.to_2tuple = layers.trunc_normal_ = None
        timm.models, timm_models.layers = timm_models, layers
        sys.modules.update({"timm": timm, "timm.models": timm_models, "timm.models.layers": layers})
    models = types.ModuleType("models")  # the package without its __init__ (the deformable variants)
    models.__path__ = [str(path / "models")]
    sys.modules["models"] = models
    sys.path.insert(0, str(path))
    import models.DN_DAB_DETR.backbone as backbone
    import models.DN_DAB_DETR.DABDETR as dabdetr
    import models.DN_DAB_DETR.dn_components as dn
    import models.DN_DAB_DETR.matcher as matcher
    import models.DN_DAB_DETR.transformer as transformer
    import util.misc as misc

    backbone.is_main_process = lambda: False  # pretrained=False: no download
    return types.SimpleNamespace(backbone=backbone, dabdetr=dabdetr, dn=dn, matcher=matcher,
                                 transformer=transformer, misc=misc)


def build_reference(ref: types.SimpleNamespace, setting: dict):
    """(model, criterion, args) of the reference at CONFIG + ``setting``, weights set by name."""
    args = argparse.Namespace(**CONFIG, **setting)
    torch.manual_seed(0)
    model = ref.dabdetr.DABDETR(ref.backbone.build_backbone(args), ref.transformer.build_transformer(args),
                                num_classes=args.num_classes, num_queries=args.num_queries, aux_loss=args.aux_loss,
                                iter_update=True, query_dim=4, random_refpoints_xy=args.random_refpoints_xy)
    weight_dict = {"loss_ce": args.cls_loss_coef, "loss_bbox": args.bbox_loss_coef, "loss_giou": args.giou_loss_coef,
                   "tgt_loss_ce": args.cls_loss_coef, "tgt_loss_bbox": args.bbox_loss_coef,
                   "tgt_loss_giou": args.giou_loss_coef}
    weight_dict.update({f"{k}_{i}": v for i in range(args.dec_layers - 1) for k, v in list(weight_dict.items())})
    criterion = ref.dabdetr.SetCriterion(args.num_classes, matcher=ref.matcher.build_matcher(args),
                                         weight_dict=weight_dict, focal_alpha=args.focal_alpha,
                                         losses=["labels", "boxes", "cardinality"])
    fill_by_name(model)
    return model, criterion, args


def detach(x):
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, dict):
        return {k: detach(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [detach(v) for v in x]
    return x


def run_setting(ref: types.SimpleNamespace, setting: dict, images: list[torch.Tensor], targets: list[dict]) -> dict:
    """One training forward (with denoising), loss and backward, then one inference forward."""
    model, criterion, args = build_reference(ref, setting)
    model.train()
    captured = {"anchors": [], "noised_boxes": [], "label_enc_inputs": []}
    model.transformer.register_forward_hook(lambda m, i, o: captured["anchors"].append(o[1]))
    model.label_enc.register_forward_hook(lambda m, i, o: captured["label_enc_inputs"].append(i[0].clone()))
    prepare, logit = ref.dn.prepare_for_dn, ref.dn.inverse_sigmoid

    def recording_logit(x, *a, **k):
        captured["noised_boxes"].append(x.detach().clone())
        return logit(x, *a, **k)

    def seeded_prepare(*a, **k):
        torch.manual_seed(NOISE_SEED)
        ref.dn.inverse_sigmoid = recording_logit
        try:
            result = prepare(*a, **k)
        finally:
            ref.dn.inverse_sigmoid = logit
        captured["prepared"] = detach(result[:3])  # before the transformer adds the patterns in place
        return result

    ref.dabdetr.prepare_for_dn = seeded_prepare
    try:
        with cpu_for_cuda():
            dn_args = (targets, args.scalar, args.label_noise_scale, args.box_noise_scale, args.num_patterns)
            outputs, mask_dict = model(ref.misc.nested_tensor_from_tensor_list(images), dn_args=dn_args)
            losses = criterion(outputs, targets, mask_dict)
            total = sum(losses[k] * w for k, w in criterion.weight_dict.items() if k in losses)
            total.backward()
            query_label, query_bbox, attn_mask = captured["prepared"]
            dn_class, dn_coord = mask_dict["output_known_lbs_bboxes"]
            train = {
                "noised_labels": captured["label_enc_inputs"][1],  # [0] is the matching queries' row
                "noised_boxes": captured["noised_boxes"][0],
                "known_labels": mask_dict["known_lbs_bboxes"][0].clone(),
                "known_boxes": mask_dict["known_lbs_bboxes"][1].clone(),
                "map_known_indice": mask_dict["map_known_indice"].clone(),
                "pad_size": int(mask_dict["pad_size"]),
                "input_query_label": detach(query_label.transpose(0, 1)),  # (B, P + Q, C)
                "input_query_bbox": detach(query_bbox.transpose(0, 1)),
                "attn_mask": attn_mask.clone(),
                "outputs": {"pred_logits": detach(outputs["pred_logits"]),
                            "pred_boxes": detach(outputs["pred_boxes"]),
                            "aux_outputs": detach(outputs["aux_outputs"]),
                            "anchors": detach(captured["anchors"][0])},
                "dn_logits": detach(dn_class),  # (layers, B, P, C)
                "dn_boxes": detach(dn_coord),
                "losses": {k: float(v.detach()) for k, v in losses.items()},
                "total_loss": float(total.detach()),
                "weight_dict": dict(criterion.weight_dict),
            }
            grads = gradient_summary(model)
            train["gradient_names"] = list(grads)
            train["gradients"] = torch.stack(list(grads.values()))
            model.eval()
            with torch.no_grad():
                out, mask_none = model(ref.misc.nested_tensor_from_tensor_list(images), dn_args=args.num_patterns)
            assert mask_none is None
            infer = {"pred_logits": out["pred_logits"].clone(), "pred_boxes": out["pred_boxes"].clone()}
    finally:
        ref.dabdetr.prepare_for_dn = prepare
    return {"setting": dict(setting), "state_dict_keys": list(model.state_dict().keys()), "train": train,
            "inference": infer}


def mask_probes(ref: types.SimpleNamespace) -> list[dict]:
    """The reference's attention mask for each of MASK_PROBES (its noise draws are irrelevant)."""
    label_enc = torch.nn.Embedding(8, 7)
    probes = []
    with cpu_for_cuda():
        for queries, groups, counts in MASK_PROBES:
            targets = [{"labels": torch.zeros(n, dtype=torch.int64), "boxes": torch.full((n, 4), 0.5)} for n in counts]
            _, _, mask, _ = ref.dn.prepare_for_dn((targets, groups, 0.2, 0.4, 0), torch.zeros(queries, 4),
                                                  len(counts), True, queries, 7, 8, label_enc)
            probes.append({"num_queries": queries, "groups": groups, "counts": list(counts), "mask": mask.clone()})
    return probes


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", type=Path, help="checkout of IDEA-Research/DN-DETR")
    parser.add_argument("--commit", default="ff3902a", help="the reference commit (recorded in the fixture)")
    parser.add_argument("--out", type=Path, default=TESTS / "data" / "dn_fixture.pt")
    args = parser.parse_args(argv)
    if not (args.reference / "models" / "DN_DAB_DETR" / "dn_components.py").is_file():
        parser.error(f"{args.reference} holds no models/DN_DAB_DETR/dn_components.py")
    torch.set_num_threads(1)
    ref = import_reference(args.reference.resolve())
    steps, targets = make_image_steps(), make_targets()
    images = images_from_steps(steps)
    fixture = {
        "reference": {"repository": "IDEA-Research/DN-DETR", "commit": args.commit, "torch": str(torch.__version__)},
        "config": dict(CONFIG),
        "noise_seed": NOISE_SEED,
        "image_steps": steps,  # image = steps / image_step_count
        "image_step_count": IMAGE_STEPS,
        "targets": targets,
        "mask_probes": mask_probes(ref),
        "settings": {name: run_setting(ref, setting, images, targets) for name, setting in SETTINGS.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
