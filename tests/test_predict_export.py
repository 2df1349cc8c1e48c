"""tools/predict.py (COCO results of image files) and tools/export.py (ONNX export with an
onnxruntime parity check), for an abs-only and an iRPE model."""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from detr_irpe.analysis import export as export_mod
from detr_irpe.hub.loader import load_model
from detr_irpe.cli import run_main
from detr_irpe.models.irpe import bucket_ids, cached_index
from engine_helpers import micro_checkpoints, tool_main

ROOT = Path(__file__).resolve().parents[1]



predict_main, export_main = tool_main("predict"), tool_main("export")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return micro_checkpoints(tmp_path_factory.mktemp("predict_export"),
                             {"abs": ("", 0, ()), "irpe": ("rpe-2.0-product-ctx-1-k", 1, ())})


def _run(main, argv) -> int:
    return run_main(main, [str(a) for a in argv])


def _folder(env, path: Path, names) -> Path:
    path.mkdir()
    for name in names:
        (path / name).write_bytes((env["data"] / "val" / name).read_bytes())
    return path


# ---------------------------------------------------------------------------------------------
# predict


def test_predict_a_folder_to_coco_results(env, tmp_path, capsys):
    names = ["000002.png", "000000.png", "000001.png"]
    folder = _folder(env, tmp_path / "images", names)
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # an image suffix, unreadable
    out, drawn = tmp_path / "out", tmp_path / "drawn"
    assert _run(predict_main, ["--checkpoint", env["ckpt"]["irpe"], "--input", folder, "--output-dir", out,
                               "--draw", drawn]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["images"] == 3 and summary["skipped"] == 2 and summary["detections"] == 3 * 5

    mapping = json.loads((out / "images.json").read_text())
    assert [(im["id"], im["file_name"]) for im in mapping["images"]] == list(enumerate(sorted(names)))
    assert mapping["file_name_to_id"] == {n: i for i, n in enumerate(sorted(names))}
    assert sorted(s["file_name"] for s in mapping["skipped"]) == ["broken.png", "notes.txt"]
    for im in mapping["images"]:
        with Image.open(folder / im["file_name"]) as pil:
            assert (im["width"], im["height"]) == pil.size
        assert im["detections"] == 5  # threshold 0: every query, as DETR evaluates

    # a ground truth built from the same files reads the results
    gt_data = json.loads((env["data"] / "annotations" / "instances_val.json").read_text())
    by_name = {im["file_name"]: im["id"] for im in gt_data["images"]}
    new_id = {by_name[n]: mapping["file_name_to_id"][n] for n in names}
    gt = COCO()
    gt.dataset = {"images": [{k: im[k] for k in ("id", "file_name", "height", "width")} for im in mapping["images"]],
                  "annotations": [dict(a, image_id=new_id[a["image_id"]]) for a in gt_data["annotations"]
                                  if a["image_id"] in new_id],
                  "categories": gt_data["categories"]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(str(out / "results.json"))
    assert len(dt.getAnnIds()) == 15 and sorted(dt.getImgIds()) == [0, 1, 2]
    for det in json.loads((out / "results.json").read_text()):
        assert 0 <= det["category_id"] <= 5 and 0 <= det["score"] <= 1 and len(det["bbox"]) == 4

    # one drawing per image read, at the image's size
    assert sorted(p.name for p in drawn.iterdir()) == sorted(names)
    for name in names:
        with Image.open(drawn / name) as a, Image.open(folder / name) as b:
            assert a.size == b.size
            assert not np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))


def test_predictions_equal_the_evaluation_path(env, tmp_path):
    """The same images through tools/evaluate.py (batch 1) give the same detections: the
    preprocessing, the model call and the scaling back to original pixels agree."""
    evaluate_main = tool_main("evaluate")

    ck = env["ckpt"]["abs"]
    assert _run(predict_main, ["--checkpoint", ck, "--input", env["data"] / "val", "--output-dir", tmp_path / "p"]) == 0
    assert evaluate_main(["--checkpoint", str(ck), "--batch-size", "1", "--backend", "pycocotools",
                          "--output-dir", str(tmp_path / "e")]) == 0
    gt = json.loads((env["data"] / "annotations" / "instances_val.json").read_text())
    name_of = {im["id"]: im["file_name"] for im in gt["images"]}
    ours = json.loads((tmp_path / "p" / "results.json").read_text())
    ids = json.loads((tmp_path / "p" / "images.json").read_text())["file_name_to_id"]
    theirs = json.loads((tmp_path / "e" / "results.json").read_text())
    assert len(ours) == len(theirs) == 8 * 5
    mapped = [dict(d, image_id=ids[name_of[d["image_id"]]]) for d in theirs]
    for a, b in zip(sorted(ours, key=_order), sorted(mapped, key=_order)):
        assert a["image_id"] == b["image_id"] and a["category_id"] == b["category_id"]
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=1e-3)
        assert a["score"] == pytest.approx(b["score"], abs=1e-6)


def _order(det: dict):
    return det["image_id"], det["score"]


def test_threshold_keeps_an_entry_for_every_image(env, tmp_path, capsys):
    folder = _folder(env, tmp_path / "images", ["000003.png", "000004.png"])
    out = tmp_path / "out"
    assert _run(predict_main, ["--checkpoint", env["ckpt"]["abs"], "--input", folder, "--output-dir", out,
                               "--score-threshold", "0.999"]) == 0
    assert json.loads((out / "results.json").read_text()) == []
    mapping = json.loads((out / "images.json").read_text())
    assert [(im["file_name"], im["detections"]) for im in mapping["images"]] == [("000003.png", 0), ("000004.png", 0)]

    # a single file
    assert _run(predict_main, ["--checkpoint", env["ckpt"]["abs"], "--input", folder / "000004.png",
                               "--output-dir", tmp_path / "one", "--score-threshold", "0.1"]) == 0
    one = json.loads((tmp_path / "one" / "images.json").read_text())
    assert one["file_name_to_id"] == {"000004.png": 0}


def test_predict_input_errors_are_one_line(env, tmp_path, capsys):
    ck = env["ckpt"]["abs"]
    assert _run(predict_main, ["--checkpoint", ck, "--input", tmp_path / "missing", "--output-dir", tmp_path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "no such file or folder" in err[-1]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    assert _run(predict_main, ["--checkpoint", ck, "--input", empty, "--output-dir", tmp_path]) == 2
    assert "holds no image files" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


# ---------------------------------------------------------------------------------------------
# export


def _parity(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_export_abs_only_with_the_tool(env, tmp_path, capsys):
    """The default (dynamo) exporter through the tool: PASS, the diffs printed, one ONNX file."""
    onnx_path = tmp_path / "abs.onnx"
    assert _run(export_main, ["--checkpoint", env["ckpt"]["abs"], "--height", 64, "--width", 96,
                              "--out", onnx_path]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "max abs diff" in out and "dynamo exporter" in out
    result = _parity(out)
    assert result["passed"] and result["atol"] == export_mod.ATOL and result["rtol"] == export_mod.RTOL
    assert max(result["max_abs_diff"].values()) < 1e-5
    info = export_mod.onnx_info(onnx_path)
    assert info["inputs"] == {"images": [1, 3, 64, 96]}
    assert info["outputs"] == {"pred_logits": [1, 5, 6], "pred_boxes": [1, 5, 4]}
    assert [p.name for p in tmp_path.iterdir()] == [onnx_path.name]  # one self-contained file


def test_export_irpe_with_dynamo_leaves_the_model_and_the_bucket_cache_intact(env, tmp_path):
    """torch.export traces with fake tensors: an iRPE bucket index cached during the trace would be a
    fake tensor that breaks every later export at that map size."""
    loaded = load_model(env["ckpt"]["irpe"])
    spec = loaded.cfg.model.irpe
    x = export_mod.example_input(96, 64, seed=4)
    with torch.no_grad():
        before = loaded.model(x)["pred_boxes"]
        fh, fw = loaded.model(x, need_weights=True)["feature_shape"]
    cached_index.cache_clear()
    path = export_mod.export_onnx(loaded.model, tmp_path / "irpe.onnx", 96, 64)
    report = export_mod.check_onnx(loaded.model, path, 96, 64)
    assert report.passed, report.lines()
    assert max(report.max_abs_diff.values()) < 1e-5
    index = cached_index(spec, fh, fw, torch.device("cpu"))
    assert type(index) is torch.Tensor and torch.equal(index, bucket_ids(spec, fh, fw)["index"])
    with torch.no_grad():
        assert torch.equal(loaded.model(x)["pred_boxes"], before)
    assert not loaded.model.training


def test_export_irpe_with_torchscript_with_the_tool(env, tmp_path, capsys):
    assert _run(export_main, ["--checkpoint", env["ckpt"]["irpe"], "--height", 64, "--width", 96,
                              "--out", tmp_path / "irpe.onnx", "--exporter", "torchscript"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "torchscript exporter" in out
    assert _parity(out)["passed"]


def test_parity_check_fails_on_a_different_model(env, tmp_path, capsys, monkeypatch):
    loaded = load_model(env["ckpt"]["abs"])
    path = export_mod.export_onnx(loaded.model, tmp_path / "m.onnx", 64, 64, exporter="torchscript")
    with torch.no_grad():
        loaded.model.class_embed.bias += 0.5
    report = export_mod.check_onnx(loaded.model, path, 64, 64)
    assert not report.passed and report.lines()[-1] == "FAIL"
    assert report.max_abs_diff["pred_logits"] == pytest.approx(0.5, abs=1e-3)

    # the tool exits non-zero on FAIL
    real = export_mod.check_onnx

    def perturbed(model, *args, **kwargs):
        with torch.no_grad():
            model.bbox_embed.layers[-1].bias += 0.5
        return real(model, *args, **kwargs)

    monkeypatch.setattr(export_mod, "check_onnx", perturbed)
    assert _run(export_main, ["--checkpoint", env["ckpt"]["abs"], "--height", 64, "--width", 64, "--out",
                              tmp_path / "t.onnx", "--exporter", "torchscript"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and not _parity(out)["passed"]


def test_export_input_errors_are_one_line(env, tmp_path, capsys):
    ck = env["ckpt"]["abs"]
    assert _run(export_main, ["--checkpoint", ck, "--height", 16, "--width", 64, "--out", tmp_path / "a.onnx"]) == 2
    assert "stride" in capsys.readouterr().err
    assert _run(export_main, ["--checkpoint", ck, "--height", 64, "--width", 64, "--out", tmp_path / "a.pt"]) == 2
    assert ".onnx" in capsys.readouterr().err
    assert _run(export_main, ["--checkpoint", tmp_path / "nope.pth", "--height", 64, "--width", 64,
                              "--out", tmp_path / "a.onnx"]) == 2
    assert "does not exist" in capsys.readouterr().err
