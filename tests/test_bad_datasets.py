"""Bad datasets are refused with one line naming the file and the entry, before anything is
written; sizes that come from the input are refused before anything is allocated from them;
degenerate boxes are dropped and counted, unreadable images fail or are skipped and counted."""

import json
import shutil
from pathlib import Path

import pytest
from engine_helpers import micro
from reliability_helpers import existing_run, expect_error

from detr_irpe.commands.train import main as train_main
from detr_irpe.config import load_config
from detr_irpe.data.synthetic import ensure_synthetic


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


@pytest.fixture(scope="module")
def coco_copy(cache, tmp_path_factory):
    """A writable copy of the micro synthetic dataset to corrupt."""
    src = ensure_synthetic(load_config(None, micro(cache, Path("/unused"))).data.synthetic, progress=False)
    dst = tmp_path_factory.mktemp("coco")
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst


def _dataset_overrides(root: Path, ann: str = "annotations/instances_train.json"):
    return ["data.dataset=coco", f"data.train_images={root / 'train'}", f"data.train_annotations={root / ann}",
            f"data.val_images={root / 'val'}", f"data.val_annotations={root / 'annotations' / 'instances_val.json'}"]


def _corrupt(coco_copy, tmp_path, edit) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(coco_copy, root)
    data = json.loads((root / "annotations" / "instances_train.json").read_text())
    result = edit(data, root)
    if result != "raw":
        (root / "annotations" / "instances_train.json").write_text(json.dumps(data))
    return root


def _remove_file(d, r):
    (r / "annotations" / "instances_train.json").unlink()
    return "raw"


def _break_json(d, r):
    (r / "annotations" / "instances_train.json").write_text("{not json")
    return "raw"


@pytest.mark.parametrize("case,edit,words", [
    ("missing annotation file", _remove_file, ["instances_train.json", "does not exist"]),
    ("invalid json", _break_json, ["instances_train.json", "JSON"]),
    ("not coco", lambda d, r: d.pop("annotations"), ["instances_train.json", "annotations"]),
    ("unknown image", lambda d, r: d["annotations"][0].update(image_id=99999), ["instances_train.json", "99999"]),
    ("unknown category", lambda d, r: d["annotations"][0].update(category_id=77), ["instances_train.json", "77"]),
    ("category out of range", lambda d, r: d["categories"].append({"id": 500, "name": "x"}) or d["annotations"][0].update(category_id=500),
     ["instances_train.json", "500"]),
    ("file name leaves the folder", lambda d, r: d["images"][0].update(file_name="../../etc/passwd"),
     ["instances_train.json", "../../etc/passwd"]),
    ("absolute file name", lambda d, r: d["images"][0].update(file_name="/etc/passwd"), ["instances_train.json", "/etc/passwd"]),
], ids=lambda x: x if isinstance(x, str) else "")
def test_bad_dataset_files_are_refused_with_one_line(case, edit, words, coco_copy, tmp_path, cache, capsys):
    root = _corrupt(coco_copy, tmp_path, edit)
    out = existing_run(tmp_path)
    expect_error(capsys, train_main, micro(cache, out) + _dataset_overrides(root) + ["model.num_classes=null"]
                 + (["model.num_classes=100"] if case == "category out of range" else []), *words, out=out)


def test_a_missing_image_fails_before_anything_is_written(coco_copy, tmp_path, cache, capsys):
    root = _corrupt(coco_copy, tmp_path, lambda d, r: None)
    (root / "train" / "000003.png").unlink()
    out = existing_run(tmp_path)
    expect_error(capsys, train_main, micro(cache, out) + _dataset_overrides(root), "000003.png", "does not exist",
                 "data.invalid_images=skip", out=out)


def test_an_unreadable_image_fails_with_the_file_named_or_is_skipped_and_counted(coco_copy, tmp_path, cache, capsys):
    root = _corrupt(coco_copy, tmp_path, lambda d, r: None)
    (root / "train" / "000004.png").write_bytes(b"\x89PNG truncated")
    # read in a loader worker: the worker's error still reaches the user as one line
    expect_error(capsys, train_main, micro(cache, tmp_path / "fail", "train.max_steps_per_epoch=null",
                                           "data.num_workers=1") + _dataset_overrides(root), "000004.png")
    skip = tmp_path / "skip"
    assert train_main(micro(cache, skip, "train.epochs=1", "train.max_steps_per_epoch=null", "data.invalid_images=skip")
                      + _dataset_overrides(root)) == 0
    assert "skipping image file" in (skip / "train.log").read_text() and "000004.png" in (skip / "train.log").read_text()
    assert json.loads((skip / "log.jsonl").read_text().splitlines()[-1])["skipped_images"] == 1


def test_degenerate_boxes_are_dropped_and_counted_not_an_error(coco_copy, tmp_path, cache):
    def edit(d, r):
        d["annotations"][0]["bbox"] = [5, 5, 0, 10]
        d["annotations"][1]["bbox"] = [5, 5, -3, 10]
        d["annotations"][2]["bbox"] = [5, 5, float("nan"), 10]
    root = _corrupt(coco_copy, tmp_path, edit)
    out = tmp_path / "run"
    assert train_main(micro(cache, out, "train.epochs=1") + _dataset_overrides(root)) == 0
    assert "3 invalid boxes dropped" in (out / "train.log").read_text()


def test_category_ids_up_to_a_billion_are_refused_before_any_allocation(coco_copy, tmp_path, cache, capsys):
    def edit(d, r):
        d["categories"].append({"id": 10**9, "name": "far"})
        d["annotations"][0]["category_id"] = 10**9
    root = _corrupt(coco_copy, tmp_path, edit)
    out = existing_run(tmp_path)
    expect_error(capsys, train_main, micro(cache, out) + _dataset_overrides(root), "instances_train.json",
                 "category 1000000000", "above the limit of 99999", "renumber the categories", out=out)


def test_an_empty_images_list_is_refused(coco_copy, tmp_path, cache, capsys):
    root = _corrupt(coco_copy, tmp_path, lambda d, r: d.update(images=[], annotations=[]))
    out = existing_run(tmp_path)
    expect_error(capsys, train_main, micro(cache, out) + _dataset_overrides(root), "no images in",
                 "instances_train.json", out=out)


def test_fewer_images_than_one_batch_are_refused_not_trained_on(tmp_path, cache, capsys):
    out = existing_run(tmp_path)
    expect_error(capsys, train_main, micro(cache, out, "train.batch_size=64"), "32 images", "train.batch_size=64",
                 "lower train.batch_size", out=out)


def test_a_declared_size_other_than_the_stored_one_stops_naming_the_image(coco_copy, tmp_path, cache, capsys):
    def edit(d, r):
        first = min(d["images"], key=lambda i: i["id"])
        first["width"] += 7
        return first["file_name"]
    root = tmp_path / "ds"
    shutil.copytree(coco_copy, root)
    data = json.loads((root / "annotations" / "instances_train.json").read_text())
    name = edit(data, root)
    (root / "annotations" / "instances_train.json").write_text(json.dumps(data))
    expect_error(capsys, train_main, micro(cache, tmp_path / "run", "train.max_steps_per_epoch=null")
                 + _dataset_overrides(root), name, "stored image is", "annotation file declares",
                 "data.invalid_images=skip")


def test_images_above_the_pixel_limit_are_refused_before_anything_is_written(coco_copy, tmp_path, cache, capsys):
    root = _corrupt(coco_copy, tmp_path, lambda d, r: None)
    out = existing_run(tmp_path)
    expect_error(capsys, train_main, micro(cache, out, "data.max_image_pixels=1000") + _dataset_overrides(root),
                 "as declared in", "instances_train.json", "more than data.max_image_pixels=1000", out=out)


def test_a_file_where_a_folder_is_expected_and_the_reverse_are_one_line_errors(coco_copy, tmp_path, cache, capsys):
    out = existing_run(tmp_path)
    expect_error(capsys, train_main, ["--config", str(tmp_path)], str(tmp_path), "is a folder, not a YAML file")
    expect_error(capsys, train_main, micro(cache, out, "data.dataset=coco", f"data.train_images={coco_copy / 'train'}",
                                           f"data.train_annotations={coco_copy / 'annotations'}"),
                 "annotations is a folder, not a file", out=out)
    expect_error(capsys, train_main, micro(cache, out, "data.dataset=coco", f"data.train_images={out / 'notes.txt'}",
                                           f"data.train_annotations={coco_copy / 'annotations' / 'instances_train.json'}"),
                 "notes.txt", "is a file, not a folder", out=out)


def test_a_missing_dataset_path_is_named(tmp_path, cache, capsys):
    out = existing_run(tmp_path)
    expect_error(capsys, train_main, micro(cache, out, "data.dataset=coco", "data.root=/nonexistent/coco"),
                 "/nonexistent/coco", out=out)
