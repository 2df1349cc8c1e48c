"""tools/predict.py: COCO results of image files, equal to the evaluation path, for an abs-only and
an iRPE model."""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import abs_and_irpe_checkpoints, run_tool, tool_main
from PIL import Image
from pycocotools.coco import COCO

predict_main = tool_main("predict")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return abs_and_irpe_checkpoints(tmp_path_factory.mktemp("predict"))


def _folder(env, path: Path, names) -> Path:
    path.mkdir()
    for name in names:
        (path / name).write_bytes((env["data"] / "val" / name).read_bytes())
    return path


def test_predict_a_folder_to_coco_results(env, tmp_path, capsys):
    names = ["000002.png", "000000.png", "000001.png"]
    folder = _folder(env, tmp_path / "images", names)
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # an image suffix, unreadable
    out, drawn = tmp_path / "out", tmp_path / "drawn"
    assert run_tool(predict_main, ["--checkpoint", env["ckpt"]["irpe"], "--input", folder, "--output-dir", out,
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
    assert run_tool(predict_main, ["--checkpoint", ck, "--input", env["data"] / "val", "--output-dir", tmp_path / "p"]) == 0
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


def test_threshold_keeps_an_entry_for_every_image(env, tmp_path, capsys, monkeypatch):
    folder = _folder(env, tmp_path / "images", ["000003.png", "000004.png"])
    out = tmp_path / "out"
    assert run_tool(predict_main, ["--checkpoint", env["ckpt"]["abs"], "--input", folder, "--output-dir", out,
                               "--score-threshold", "0.999"]) == 0
    assert json.loads((out / "results.json").read_text()) == []
    mapping = json.loads((out / "images.json").read_text())
    assert [(im["file_name"], im["detections"]) for im in mapping["images"]] == [("000003.png", 0), ("000004.png", 0)]

    # a single file, without --output-dir: outputs/predictions
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert run_tool(predict_main, ["--checkpoint", env["ckpt"]["abs"], "--input", folder / "000004.png",
                               "--score-threshold", "0.1"]) == 0
    one = json.loads((tmp_path / "outputs" / "predictions" / "images.json").read_text())
    assert one["file_name_to_id"] == {"000004.png": 0}
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["results"] == str(Path("outputs/predictions/results.json"))


def test_predict_input_errors_are_one_line(env, tmp_path, capsys):
    ck = env["ckpt"]["abs"]
    assert run_tool(predict_main, ["--checkpoint", ck, "--input", tmp_path / "missing", "--output-dir", tmp_path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "no such file or folder" in err[-1]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    assert run_tool(predict_main, ["--checkpoint", ck, "--input", empty, "--output-dir", tmp_path]) == 2
    assert "holds no image files" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()
    # an output folder that is a regular file: refused before the model is loaded and run
    images = env["data"] / "val"
    taken = tmp_path / "taken"
    taken.write_text("x")
    assert run_tool(predict_main, ["--checkpoint", ck, "--input", images, "--output-dir", taken]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --output-dir {taken} is a file, not a folder; give a folder to write into\n"
    assert run_tool(predict_main, ["--checkpoint", ck, "--input", images, "--output-dir", tmp_path / "o",
                                   "--draw", taken / "drawn"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --draw {taken / 'drawn'} is inside {taken}, which is a file")
    assert err.count("\n") == 1
    assert taken.read_text() == "x" and not (tmp_path / "o").exists()
