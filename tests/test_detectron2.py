"""The detectron2 integration: training and evaluation through detectron2's trainer, and equality
with this project's model, evaluator and checkpoints.

Every test but the first needs detectron2 and is skipped, with the reason, where it is not
installed (it is not on PyPI; see docs/detectron2.md).
"""

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detr_irpe.core.names import AP_NAMES

ROOT = Path(__file__).resolve().parents[1]
TINY_YAML = ROOT / "configs" / "detectron2" / "detr_irpe_tiny_synthetic.yaml"
COCO_YAML = ROOT / "configs" / "detectron2" / "detr_r50_irpe_product_150e_coco.yaml"
NO_D2 = "detectron2 is not installed (it is not on PyPI: see docs/detectron2.md to install it)"
BOX_METRICS = AP_NAMES

# detectron2 scripts a few functions with torch.jit at import time, which torch now deprecates
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


def tiny_opts(cache: Path, out: Path, *extra: str) -> list[str]:
    """detectron2 overrides of the tiny synthetic config: a micro model on a micro dataset."""
    return [
        "MODEL.DETR_IRPE.BACKBONE.WIDTH", "8", "MODEL.DETR_IRPE.HIDDEN_DIM", "32", "MODEL.DETR_IRPE.NHEADS", "4",
        "MODEL.DETR_IRPE.ENC_LAYERS", "1", "MODEL.DETR_IRPE.DEC_LAYERS", "2", "MODEL.DETR_IRPE.DIM_FEEDFORWARD", "64",
        "MODEL.DETR_IRPE.NUM_QUERIES", "5",
        "DATASETS.DETR_IRPE_SYNTHETIC.NUM_TRAIN", "16", "DATASETS.DETR_IRPE_SYNTHETIC.NUM_VAL", "8",
        "DATASETS.DETR_IRPE_SYNTHETIC.IMAGE_SIZE", "[64, 80]", "DATASETS.DETR_IRPE_SYNTHETIC.MAX_OBJECTS", "2",
        "DATASETS.DETR_IRPE_SYNTHETIC.CACHE_DIR", str(cache),
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "64",
        "INPUT.MAX_SIZE_TEST", "96", "SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", "1", "TEST.IMS_PER_BATCH", "4",
        "SEED", "0", "OUTPUT_DIR", str(out), *extra,
    ]


def test_import_without_detectron2_names_the_install_command():
    code = "import sys; sys.modules['detectron2'] = None\nimport detr_irpe.integrations.detectron2"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=False)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: detr_irpe.integrations.detectron2 needs detectron2")
    command = ("pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git' "
               "'setuptools<81'")
    assert command in last


@pytest.fixture(scope="module")
def integ():
    """The integration module; skips the test (with the reason) where detectron2 is not installed."""
    pytest.importorskip("detectron2", reason=NO_D2)
    import detr_irpe.integrations.detectron2 as integ

    return integ


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synthetic")


def make_cfg(integ, cache: Path, out: Path, *extra: str):
    from detectron2.config import get_cfg

    cfg = integ.add_detr_irpe_config(get_cfg())
    cfg.merge_from_file(str(TINY_YAML))
    cfg.merge_from_list(tiny_opts(cache, out, *extra))
    integ.register_synthetic(cfg)
    return cfg


def load_tool():
    spec = importlib.util.spec_from_file_location("d2_train_net", ROOT / "tools" / "d2_train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def same_metrics(d2_metrics: dict, ours: dict) -> bool:
    """detectron2's numbers (percent, nan for undefined) against this project's (fractions, -1)."""
    for name in BOX_METRICS:
        a, b = d2_metrics[name], ours[name]
        if math.isnan(a) != (b < 0) or (not math.isnan(a) and abs(a / 100 - b) > 1e-9):
            return False
    return True


def same_numbers(a: dict, b: dict) -> bool:
    """Equal dicts of numbers, nan equal to nan."""
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def test_train_one_iteration_and_evaluate_through_d2_trainer(integ, cache, tmp_path):
    from detectron2.engine import default_argument_parser

    from detr_irpe.hub.checkpoint import load_checkpoint

    tool = load_tool()
    out = tmp_path / "run"
    # the crop branch on every image, to take the whole training augmentation through the loader
    opts = tiny_opts(cache, out, "INPUT.CROP.ENABLED", "True", "INPUT.CROP.PROB", "1.0",
                     "INPUT.CROP.PRE_RESIZE", "[64]", "INPUT.CROP.SIZE", "[32, 64]")
    results = tool.main(default_argument_parser().parse_args(["--config-file", str(TINY_YAML), *opts]))
    assert set(BOX_METRICS) <= set(results["bbox"])

    ckpt = load_checkpoint(out / "model_final.pth")
    assert ckpt["iteration"] == 0 and ckpt["trainer"]["_trainer"]["optimizer"]["state"], "one optimizer step"
    config = ckpt["detr_irpe"]["config"]
    assert config["model"]["irpe"] == "rpe-2.0-product-ctx-1-k" and config["model"]["num_classes"] == 5
    assert config["data"]["dataset"] == "synthetic" and config["data"]["synthetic"]["num_train"] == 16

    # evaluating the final checkpoint again (--eval-only) gives the trainer's numbers
    again = tool.main(default_argument_parser().parse_args(
        ["--config-file", str(TINY_YAML), "--eval-only", *opts, "MODEL.WEIGHTS", str(out / "model_final.pth")]))
    assert same_numbers(again["bbox"], results["bbox"]), (again["bbox"], results["bbox"])


def _project_side(integ, cfg, meta):
    """This project's model, criterion and post-processor with the adapter's weights."""
    from detr_irpe.models import build_model

    project_cfg = integ.detr_config_from_cfg(cfg, meta.detr.num_classes)
    model, criterion, post = build_model(project_cfg)
    model.load_state_dict(integ.to_project({"model": meta.state_dict()})["model"])
    return project_cfg, model, criterion, post["bbox"]


def test_adapter_outputs_equal_project_model(integ, cache, tmp_path):
    from detectron2.data import DatasetCatalog
    from detectron2.modeling import build_model as d2_build_model
    from detectron2.structures import Boxes, Instances
    from torchvision.ops import box_convert

    from detr_irpe.data.images import load_image
    from detr_irpe.data.transforms import build_transforms
    from detr_irpe.models import pad_images

    # BGR input, as detectron2's default, so that the adapter has to convert it
    mean, std = integ.config.imagenet_pixel_stats("BGR")
    cfg = make_cfg(integ, cache, tmp_path, "INPUT.FORMAT", "BGR", "MODEL.PIXEL_MEAN", str(mean),
                   "MODEL.PIXEL_STD", str(std))
    torch.manual_seed(0)
    meta = d2_build_model(cfg)
    project_cfg, model, criterion, post = _project_side(integ, cfg, meta)

    records = DatasetCatalog.get("detr_irpe_synthetic_val")[:3]
    rgb = [load_image(r["file_name"]) for r in records]
    assert len({tuple(img.shape) for img in rgb}) > 1, "images of different sizes, so that padding matters"
    t = build_transforms(project_cfg.data, train=False)
    normalised = [t.normalize(t.to_float(img)).as_subclass(torch.Tensor) for img in rgb]
    batch, mask = pad_images(normalised, project_cfg.data.size_divisibility)
    sizes = torch.tensor([[2 * img.shape[-2], 3 * img.shape[-1]] for img in rgb])  # "original" sizes

    # inference
    meta.eval()
    model.eval()
    inputs = [{"image": img.as_subclass(torch.Tensor).flip(0), "height": int(h), "width": int(w)}
              for img, (h, w) in zip(rgb, sizes.tolist())]
    with torch.no_grad():
        got = meta(inputs)
        want = post(model(batch, mask), sizes)
    from_detr = meta.from_detr
    for inst, det, size in zip(got, want, sizes.tolist()):
        inst = inst["instances"]
        assert inst.image_size == tuple(size)
        keep = from_detr[det["labels"]] >= 0
        assert torch.equal(inst.pred_boxes.tensor, det["boxes"][keep])
        assert torch.equal(inst.scores, det["scores"][keep])
        assert torch.equal(inst.pred_classes, from_detr[det["labels"][keep]])

    # training losses on the same images and boxes
    meta.train()
    model.train()
    dataset_ids = meta.class_map.dataset_ids
    targets, train_inputs = [], []
    for r, img in zip(records, rgb):
        h, w = img.shape[-2:]
        xyxy = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                             for a in r["annotations"]], dtype=torch.float32)
        contiguous = torch.tensor([a["category_id"] for a in r["annotations"]])  # detectron2's ids
        inst = Instances((h, w), gt_boxes=Boxes(xyxy), gt_classes=contiguous)
        train_inputs.append({"image": img.as_subclass(torch.Tensor).flip(0), "instances": inst})
        targets.append({"labels": torch.tensor([dataset_ids[c] for c in contiguous.tolist()]),
                        "boxes": box_convert(xyxy, "xyxy", "cxcywh") / torch.tensor([w, h, w, h])})
    got_losses = meta(train_inputs)
    terms = criterion(model(batch, mask), targets)
    want_losses = {k: v * criterion.weight_dict[k] for k, v in terms.items() if k in criterion.weight_dict}
    assert got_losses.keys() == want_losses.keys() and "loss_giou_0" in got_losses
    for k, want in want_losses.items():
        torch.testing.assert_close(got_losses[k], want, rtol=1e-5, atol=1e-6)


def _detections(coco: dict, seed: int = 0) -> dict:
    """Plausible detections of a COCO ground truth: jittered true boxes (some with a wrong class)
    and random false positives, with random scores; per image id, dataset category ids."""
    g = torch.Generator().manual_seed(seed)
    cats = [c["id"] for c in coco["categories"]]
    out = {}
    for img in coco["images"]:
        W, H = img["width"], img["height"]
        boxes, labels = [], []
        for a in (a for a in coco["annotations"] if a["image_id"] == img["id"]):
            x, y, w, h = a["bbox"]
            for _ in range(2):
                dx, dy, dw, dh = (torch.rand(4, generator=g) - 0.5).tolist()
                boxes.append([x + 0.3 * w * dx, y + 0.3 * h * dy, x + w * (1 + 0.4 * dw), y + h * (1 + 0.4 * dh)])
                wrong = torch.rand((), generator=g) < 0.2
                labels.append(cats[int(torch.randint(len(cats), (), generator=g))] if wrong else a["category_id"])
        for _ in range(3):
            x1, y1 = torch.rand(2, generator=g).tolist()
            s = 0.1 + 0.5 * float(torch.rand((), generator=g))
            boxes.append([x1 * W * 0.6, y1 * H * 0.6, x1 * W * 0.6 + s * W, y1 * H * 0.6 + s * H])
            labels.append(cats[int(torch.randint(len(cats), (), generator=g))])
        out[img["id"]] = {"boxes": torch.tensor(boxes, dtype=torch.float32),
                          "scores": torch.rand(len(boxes), generator=g), "labels": torch.tensor(labels)}
    return out


@pytest.mark.parametrize("fast, backend", [(True, "faster_coco_eval"), (False, "pycocotools")])
def test_coco_evaluator_gives_the_project_evaluators_ap(integ, cache, tmp_path, fast, backend):
    import json

    from detectron2.data import MetadataCatalog
    from detectron2.evaluation import COCOEvaluator
    from detectron2.structures import Boxes, Instances

    from detr_irpe.evaluation.metrics import evaluate_detections

    # larger images than the other tests, so that small and medium objects are both there
    cfg = make_cfg(integ, cache, tmp_path, "DATASETS.DETR_IRPE_SYNTHETIC.NUM_VAL", "12",
                   "DATASETS.DETR_IRPE_SYNTHETIC.IMAGE_SIZE", "[96, 192]")
    name = cfg.DATASETS.TEST[0]
    json_file = MetadataCatalog.get(name).json_file
    coco = json.loads(Path(json_file).read_text())
    dets = _detections(coco)
    ours = evaluate_detections(json_file, dets, backend)
    assert 0.05 < ours["AP"] < 0.95 and ours["APs"] >= 0 and ours["APm"] >= 0, "a test set that tells numbers apart"

    class_map = integ.ClassMap.from_metadata(name)
    from_detr = class_map.from_detr_table(class_map.num_detr_classes)
    evaluator = COCOEvaluator(name, use_fast_impl=fast)
    evaluator.reset()
    sizes = {img["id"]: (img["height"], img["width"]) for img in coco["images"]}
    for image_id, det in dets.items():
        inst = Instances(sizes[image_id], pred_boxes=Boxes(det["boxes"]), scores=det["scores"],
                         pred_classes=from_detr[det["labels"]])
        evaluator.process([{"image_id": image_id}], [{"instances": inst}])
    theirs = evaluator.evaluate()["bbox"]
    assert same_metrics(theirs, ours), (theirs, ours)


def test_checkpoint_bridge_round_trip_is_exact(integ, cache, tmp_path):
    from detectron2.modeling import build_model as d2_build_model

    from detr_irpe.hub.checkpoint import load_checkpoint, save_checkpoint
    from detr_irpe.config import config_to_dict
    from detr_irpe.integrations.detectron2.convert import main as bridge

    cfg = make_cfg(integ, cache, tmp_path)
    torch.manual_seed(1)
    meta = d2_build_model(cfg)
    torch.manual_seed(2)
    project_cfg, model, _, _ = _project_side(integ, cfg, d2_build_model(cfg))  # other weights than meta's
    original = {"model": model.state_dict(), "config": config_to_dict(project_cfg), "epoch": 3}
    save_checkpoint(original, tmp_path / "project.pth")

    # project -> detectron2 (file) -> DetrIrpe: every tensor arrives
    assert bridge(["to-d2", str(tmp_path / "project.pth"), str(tmp_path / "d2.pth")]) == 0
    (tmp_path / "out").mkdir()
    checkpointer = integ.DetrIrpeCheckpointer(meta, str(tmp_path / "out"), config=original["config"])
    checkpointer.load(str(tmp_path / "d2.pth"))
    assert _equal(integ.to_project({"model": meta.state_dict()})["model"], original["model"])

    # detectron2 -> project: what DetrIrpe saves comes back as the original checkpoint
    checkpointer.save("model_d2")
    assert bridge(["to-project", str(tmp_path / "out" / "model_d2.pth"), str(tmp_path / "back.pth")]) == 0
    back = load_checkpoint(tmp_path / "back.pth")
    assert back.keys() == {"model", "config"} and back["config"] == original["config"]
    assert _equal(back["model"], original["model"])
    assert _equal(integ.to_d2(back)["model"], load_checkpoint(tmp_path / "out" / "model_d2.pth")["model"])
    # to-d2 then to-project is the identity on a whole checkpoint
    assert bridge(["to-project", str(tmp_path / "d2.pth"), str(tmp_path / "again.pth")]) == 0
    again = load_checkpoint(tmp_path / "again.pth")
    assert again.keys() == original.keys() and again["epoch"] == 3 and _equal(again["model"], original["model"])

    # a detectron2 checkpoint without a carried config takes it from the detectron2 config file
    bare = load_checkpoint(tmp_path / "out" / "model_d2.pth")
    save_checkpoint({"model": bare["model"]}, tmp_path / "bare.pth")
    assert bridge(["to-project", str(tmp_path / "bare.pth"), str(tmp_path / "from_cfg.pth")]) == 1
    assert bridge(["to-project", str(tmp_path / "bare.pth"), str(tmp_path / "from_cfg.pth"),
                   "--config-file", str(TINY_YAML), *tiny_opts(cache, tmp_path)]) == 0
    from_cfg = load_checkpoint(tmp_path / "from_cfg.pth")
    assert from_cfg["config"] == original["config"] and _equal(from_cfg["model"], original["model"])

    # a project checkpoint also loads directly as MODEL.WEIGHTS
    torch.manual_seed(3)
    fresh = d2_build_model(cfg)
    integ.DetrIrpeCheckpointer(fresh).load(str(tmp_path / "project.pth"))
    assert _equal(fresh.state_dict(), meta.state_dict())


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_config_keys_mirror_the_project_config(integ, cache, tmp_path):
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model as d2_build_model

    from detr_irpe.config import ConfigError, load_config

    # the defaults are the reference recipe: this project's defaults plus the paper's iRPE
    cfg = integ.add_detr_irpe_config(get_cfg())
    ours = integ.detr_config_from_cfg(cfg, 91)
    ref = load_config(ROOT / "configs" / "detr_r50_irpe_product_150e.yaml")
    assert ours.model == ref.model and ours.loss == ref.loss
    assert (ours.train.lr, ours.train.lr_backbone, ours.train.weight_decay, ours.train.clip_max_norm) == \
           (ref.train.lr, ref.train.lr_backbone, ref.train.weight_decay, ref.train.clip_max_norm)
    d = ours.data
    assert (d.scales, d.max_size, d.val_size, d.crop_resize, d.crop_size, d.crop_prob, d.hflip_prob) == \
           (ref.data.scales, ref.data.max_size, ref.data.val_size, ref.data.crop_resize, ref.data.crop_size,
            ref.data.crop_prob, ref.data.hflip_prob)
    cfg.merge_from_file(str(COCO_YAML))  # the COCO recipe file is a valid config
    coco = integ.detr_config_from_cfg(cfg)
    assert coco.model == ref.model and coco.data.dataset == "coco"
    assert coco.data.val_annotations.endswith("coco/annotations/instances_val2017.json")

    # errors name the detectron2 key
    bad = make_cfg(integ, cache, tmp_path, "MODEL.DETR_IRPE.NHEADS", "5")
    with pytest.raises(ConfigError, match=r"MODEL\.DETR_IRPE\.HIDDEN_DIM .* MODEL\.DETR_IRPE\.NHEADS"):
        integ.detr_config_from_cfg(bad, 5)
    bad = make_cfg(integ, cache, tmp_path, "MODEL.DETR_IRPE.IRPE", "rpe-x")
    with pytest.raises(ConfigError, match=r"MODEL\.DETR_IRPE\.IRPE"):
        integ.detr_config_from_cfg(bad, 5)
    bad = make_cfg(integ, cache, tmp_path, "INPUT.FORMAT", "BGR")  # RGB pixel statistics left in place
    with pytest.raises(ValueError, match=r"MODEL\.PIXEL_MEAN must be the ImageNet values"):
        d2_build_model(bad)
    bad = make_cfg(integ, cache, tmp_path, "MODEL.DETR_IRPE.NUM_CLASSES", "4")  # category ids go up to 4
    with pytest.raises(ValueError, match=r"MODEL\.DETR_IRPE\.NUM_CLASSES \(4\) must exceed the largest dataset"):
        d2_build_model(bad)


def test_optimizer_clips_the_full_model_norm(integ, cache, tmp_path):
    from detectron2.modeling import build_model as d2_build_model

    cfg = make_cfg(integ, cache, tmp_path, "SOLVER.BACKBONE_MULTIPLIER", "0.1")
    meta = d2_build_model(cfg)
    opt = integ.build_optimizer(cfg, meta)
    assert type(opt).__name__ == "AdamWWithFullModelClip"
    lrs = sorted(g["lr"] for g in opt.param_groups)
    assert lrs == pytest.approx([cfg.SOLVER.BASE_LR * 0.1, cfg.SOLVER.BASE_LR])
    params = [p for g in opt.param_groups for p in g["params"]]
    for p in params:
        p.grad = torch.full_like(p, 0.5)
    opt.step()
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    assert float(total) == pytest.approx(0.1, rel=1e-4)
