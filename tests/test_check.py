"""The dataset checker: every kind of problem is found and counted, the summary names it, and the
CLI's exit code says whether the dataset is usable."""

import json

import pytest
from PIL import Image

from detr_irpe.data.check import ERROR_KINDS, WARNING_KINDS, check_dataset, renumber_categories
from detr_irpe.data.coco import CocoDetection


def write(root, images, annotations, categories, files=None):
    """Images (id, file_name, width, height) written as PNG of that size unless ``files`` says
    otherwise (name -> bytes, or None for no file)."""
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    files = files or {}
    for img_id, name, w, h in images:
        if name in files:
            if files[name] is not None:
                (folder / name).write_bytes(files[name])
        elif "/" not in name and ".." not in name:
            Image.new("RGB", (max(w, 1), max(h, 1)), (10, 20, 30)).save(folder / name)
    data = {"images": [{"id": i, "file_name": n, "width": w, "height": h} for i, n, w, h in images],
            "annotations": annotations, "categories": categories}
    ann_file = root / "ann.json"
    ann_file.write_text(json.dumps(data))
    return folder, ann_file


def ann(ann_id, image_id, bbox, category_id=1, **kw):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, **kw}


CATS = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]


@pytest.fixture
def clean(tmp_path):
    images = [(1, "a.png", 40, 30), (2, "b.png", 30, 40), (3, "c.png", 20, 20)]
    anns = [ann(1, 1, [1, 2, 10, 10]), ann(2, 1, [5, 5, 5, 5], 2), ann(3, 2, [0, 0, 30, 40], 2),
            ann(4, 2, [1, 1, 3, 3], 2, iscrowd=1)]
    return write(tmp_path, images, anns, CATS)


def test_clean_dataset_is_usable_and_counted(clean):
    report = check_dataset(*clean, progress=False)
    assert report.ok and not report.counts
    assert report.num_images == 3 and report.num_annotations == 4 and report.crowd_annotations == 1
    assert report.images_without_annotations == 1
    assert report.categories == [(1, "cat", 1), (2, "dog", 3)]
    text = report.format()
    assert "result: usable (0 errors, 0 warnings)" in text and "dog: 3" in text
    CocoDetection(*clean)[0]  # what the checker accepts, the loader reads


def test_every_problem_kind_is_reported(tmp_path):
    jpeg = tmp_path / "full.jpg"
    Image.new("RGB", (64, 48), (200, 0, 0)).save(jpeg)
    images = [
        (1, "ok.png", 40, 30), (2, "missing.png", 40, 30), (3, "trunc.jpg", 64, 48), (4, "text.png", 10, 10),
        (5, "small.png", 40, 30), (6, "../up.png", 10, 10), (6, "dup.png", 10, 10), (7, "ok.png", 40, 30),
        (8, "empty.png", 10, 10), (9, "zero.png", 0, 10),
    ]
    files = {"missing.png": None, "trunc.jpg": jpeg.read_bytes()[:300], "text.png": b"hello", "empty.png": b""}
    anns = [
        ann(1, 1, [1, 1, 5, 5]),
        ann(1, 1, [2, 2, 5, 5]),                       # duplicate annotation id
        ann(2, 99, [1, 1, 5, 5]),                      # unknown image
        ann(3, 1, [1, 1, 5, 5], category_id=7),        # category not listed (and beyond the largest id)
        ann(4, 1, [1, 1, 5, 5], category_id=-2),       # negative category
        ann(5, 1, [1, 1, 0, 5]),                       # zero width
        ann(6, 1, [1, 1, -3, 5]),                      # negative width
        ann(7, 1, [1, float("nan"), 5, 5]),            # NaN
        ann(8, 1, [100, 100, 5, 5]),                   # entirely outside the 40x30 image
        ann(9, 1, [30, 20, 20, 20]),                   # partly outside: clipped
        ann(10, 1, [1, 1, 5]),                         # malformed bbox
        {"image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]},  # no id
    ]
    categories = CATS + [{"id": 2, "name": "again"}, {"name": "no id"}]
    folder, ann_file = write(tmp_path, images, anns, categories, files)
    Image.new("RGB", (20, 20)).save(folder / "small.png")  # the JSON says 40x30

    report = check_dataset(folder, ann_file, progress=False, max_examples=2)
    expected = {
        "duplicate_annotation_id": 1, "unknown_image_id": 1, "category_out_of_range": 2, "malformed_annotation": 2,
        "duplicate_category_id": 1, "malformed_category": 1, "duplicate_image_id": 1, "unsafe_file_name": 1,
        "missing_image": 1, "unreadable_image": 3, "box_empty": 2, "box_nonfinite": 1, "box_outside": 1,
        "box_clipped": 1, "size_mismatch": 1, "duplicate_file_name": 1, "malformed_image": 1,
    }
    # together with the kinds tested below, this test names every kind the checker knows
    assert set(expected) | {"annotation_file", "image_folder", "unknown_category_id", "no_images",
                            "image_too_large"} == {*ERROR_KINDS, *WARNING_KINDS}
    for kind, n in expected.items():
        assert report.counts[kind] == n, (kind, report.counts[kind], report.examples[kind])
    assert not report.ok
    assert set(report.errors) <= set(ERROR_KINDS) and set(report.warnings) <= set(WARNING_KINDS)
    assert any("missing.png" in m for m in report.examples["missing_image"])
    assert all(len(v) <= 2 for v in report.examples.values())
    text = report.format()
    for kind, n in expected.items():
        if n:
            assert f"{kind}: {n}" in text
    assert "NOT usable" in text and "... and 1 more" in text


def test_unsafe_file_names_and_unknown_categories(tmp_path):
    images = [(1, "../x.png", 8, 8), (2, "/abs.png", 8, 8), (3, "ok.png", 8, 8)]
    folder, ann_file = write(tmp_path, images, [ann(1, 3, [1, 1, 2, 2], category_id=3)],
                             [{"id": 1, "name": "a"}, {"id": 5, "name": "b"}])
    report = check_dataset(folder, ann_file, progress=False)
    assert report.counts["unsafe_file_name"] == 2 and report.counts["unknown_category_id"] == 1
    assert report.counts["missing_image"] == 0  # unsafe names are never opened
    report = check_dataset(folder, ann_file, num_classes=4, progress=False)
    assert report.counts["category_out_of_range"] == 1  # category 5 listed beyond num_classes 4
    assert report.counts["unknown_category_id"] == 1  # 3 is in range but still not listed


def test_no_decode_only_checks_existence(tmp_path):
    images = [(1, "gone.png", 8, 8), (2, "broken.png", 8, 8), (3, "empty.png", 8, 8)]
    folder, ann_file = write(tmp_path, images, [], CATS, {"gone.png": None, "broken.png": b"xx", "empty.png": b""})
    fast = check_dataset(folder, ann_file, decode=False, progress=False)
    assert fast.counts["missing_image"] == 1 and fast.counts["unreadable_image"] == 1  # only the empty file
    assert "checked for existence only" in fast.format()
    full = check_dataset(folder, ann_file, decode=True, progress=False)
    assert full.counts["unreadable_image"] == 2


@pytest.mark.parametrize("content,needle", [(None, "does not exist"), ("{oops", "not valid JSON"),
                                            ('{"images": []}', "missing key")])
def test_unusable_annotation_file(tmp_path, content, needle):
    ann_file = tmp_path / "a.json"
    if content is not None:
        ann_file.write_text(content)
    report = check_dataset(tmp_path, ann_file, progress=False)
    assert report.counts["annotation_file"] == 1 and not report.ok
    assert needle in report.examples["annotation_file"][0]


def test_no_images_and_images_above_the_pixel_limit_are_errors(clean, tmp_path):
    folder, ann_file = clean
    data = json.loads(ann_file.read_text())
    report = check_dataset(folder, ann_file, progress=False, max_image_pixels=1000)
    # a.png and b.png are 1200 pixels (declared, and stored), c.png 400
    assert report.counts["image_too_large"] == 4 and not report.ok
    assert "data.max_image_pixels=1000" in report.examples["image_too_large"][0]
    assert check_dataset(folder, ann_file, progress=False, max_image_pixels=None).ok
    ann_file.write_text(json.dumps({**data, "images": [], "annotations": []}))
    report = check_dataset(folder, ann_file, progress=False)
    assert report.counts["no_images"] == 1 and "no images in" in report.examples["no_images"][0]


def test_renumbered_categories_are_one_to_n_and_the_loader_accepts_them(clean):
    folder, ann_file = clean
    data = json.loads(ann_file.read_text())
    data["categories"] = [{"id": 10**9, "name": "cat"}, {"id": 7, "name": "dog"}]
    for a in data["annotations"]:
        a["category_id"] = {1: 10**9, 2: 7}[a["category_id"]]
    ann_file.write_text(json.dumps(data))
    assert check_dataset(folder, ann_file, progress=False).counts["category_out_of_range"] >= 1
    new, mapping = renumber_categories(data)
    assert mapping == {7: 1, 10**9: 2}
    assert [(c["id"], c["name"]) for c in new["categories"]] == [(1, "dog"), (2, "cat")]
    assert [a["category_id"] for a in new["annotations"]] == [mapping[a["category_id"]] for a in data["annotations"]]
    ann_file.write_text(json.dumps(new))
    assert check_dataset(folder, ann_file, progress=False).ok
    assert CocoDetection(folder, ann_file).num_classes == 3


def test_cli_exit_codes(clean, tmp_path, capsys):
    from detr_irpe.commands import check_dataset as cli  # `detr-irpe check-dataset`

    folder, ann_file = clean
    assert cli.main(["--images", str(folder), "--annotations", str(ann_file)]) == 0
    assert "result: usable" in capsys.readouterr().out
    assert cli.main(["--images", str(folder), "--annotations", str(tmp_path / "none.json")]) == 1
    assert "annotation_file: 1" in capsys.readouterr().out
    # warnings only (a clipped box): usable, unless --strict
    data = json.loads(ann_file.read_text())
    data["annotations"].append(ann(50, 3, [15, 15, 10, 10]))
    ann_file.write_text(json.dumps(data))
    assert cli.main(["--images", str(folder), "--annotations", str(ann_file), "--no-decode"]) == 0
    assert "box_clipped: 1" in capsys.readouterr().out
    assert cli.main(["--images", str(folder), "--annotations", str(ann_file), "--strict"]) == 1
    assert cli.main(["--images", str(tmp_path / "nowhere"), "--annotations", str(ann_file)]) == 1
    assert "image_folder: 1" in capsys.readouterr().out
