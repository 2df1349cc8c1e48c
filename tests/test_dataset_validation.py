"""Validation errors of a COCO-format dataset: one line, naming the file and the entry."""

import json
import os

import pytest
from coco_helpers import ann, write_dataset

from detr_irpe.data.coco import CocoDetection
from detr_irpe.data.errors import DatasetError


def one_line_error(folder, ann_file, **kw) -> str:
    with pytest.raises(DatasetError) as info:
        CocoDetection(folder, ann_file, **kw)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    assert isinstance(info.value, ValueError)
    return message


def test_annotation_file_missing_unreadable_or_not_json(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    missing = tmp_path / "nope.json"
    assert str(missing) in one_line_error(folder, missing) and "does not exist" in one_line_error(folder, missing)
    assert "folder" in one_line_error(folder, folder)
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [1, 2,,]}\n')
    message = one_line_error(folder, bad)
    assert str(bad) in message and "not valid JSON" in message and "line 1" in message
    bad.write_bytes(b"\xff\xfe\x00garbage")
    assert "not valid JSON" in one_line_error(folder, bad)
    if os.name == "posix" and os.geteuid() != 0:
        locked = tmp_path / "locked.json"
        locked.write_text("{}")
        locked.chmod(0)
        assert "cannot be read" in one_line_error(folder, locked)


@pytest.mark.parametrize("content,expected", [
    ([], "expected a JSON object"),
    ({"images": [], "annotations": []}, "missing key(s) categories"),
    ({"images": {}, "annotations": [], "categories": []}, "'images' must be a list"),
    ({"images": [], "annotations": "x", "categories": []}, "'annotations' must be a list"),
])
def test_not_coco(tmp_path, content, expected):
    (tmp_path / "images").mkdir()
    ann_file = tmp_path / "a.json"
    ann_file.write_text(json.dumps(content))
    message = one_line_error(tmp_path / "images", ann_file)
    assert str(ann_file) in message and expected in message and "not COCO" in message


IMAGES = [(1, "a.png", 32, 32), (2, "b.png", 32, 24)]


@pytest.mark.parametrize("images,anns,cats,kw,expected", [
    (IMAGES, [ann(10, 7, [1, 1, 5, 5])], None, {}, ["annotation 10", "image 7", "not listed in 'images'"]),
    (IMAGES, [ann(11, 2, [1, 1, 5, 5], category_id=95)], None, {"num_classes": 91},
     ["annotation 11", "image 2", "category_id 95", "< num_classes (91)"]),
    (IMAGES, [ann(12, 1, [1, 1, 5, 5], category_id=-1)], None, {}, ["annotation 12", "image 1", "category_id -1"]),
    (IMAGES, [ann(13, 1, [1, 1, 5, 5], category_id=2)], None, {}, ["annotation 13", "image 1", "category_id 2",
                                                                   "not listed in 'categories'"]),
    (IMAGES, [], [{"id": -3, "name": "neg"}], {}, ["category -3", "negative"]),
    (IMAGES, [], [{"id": 1, "name": "a"}, {"id": 7, "name": "b"}], {"num_classes": 5}, ["category 7", "num_classes 5"]),
    (IMAGES, [], [{"id": 1}, {"id": 1}], {}, ["category id 1", "more than once"]),
    (IMAGES + [(1, "c.png", 8, 8)], [], None, {}, ["image id 1", "more than once"]),
    (IMAGES, [ann(3, 1, [1, 1, 5, 5]), ann(3, 2, [1, 1, 5, 5])], None, {}, ["annotation id 3", "more than once"]),
    ([(1, "../escape.png", 8, 8)], [], None, {}, ["image 1", "'../escape.png'", ".."]),
    ([(1, "/etc/passwd", 8, 8)], [], None, {}, ["image 1", "absolute"]),
    ([(1, "C:\\x.png", 8, 8)], [], None, {}, ["image 1", "absolute"]),
    ([(1, "a.png", 0, 8)], [], None, {}, ["image 1", "width 0"]),
    (IMAGES, [ann(4, 1, [1, 1, 5])], None, {}, ["annotation 4", "image 1", "bbox"]),
    (IMAGES, [ann(5, 1, [1, 1, "5", 5])], None, {}, ["annotation 5", "bbox"]),
    (IMAGES, [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]}], None, {}, ["annotations[0]", "id None"]),
    (IMAGES, [ann(6, "1", [1, 1, 2, 2])], None, {}, ["annotation 6", "image_id '1'"]),
    ([{"id": 1, "file_name": "a.png"}], [], None, {}, ["image 1", "width"]),
    (IMAGES, [], [], {}, ["'categories' is empty"]),
])
def test_invalid_json_content(tmp_path, images, anns, cats, kw, expected):
    if images and isinstance(images[0], dict):
        folder, ann_file = write_dataset(tmp_path, [], anns, cats, extra={"images": images})
    else:
        folder, ann_file = write_dataset(tmp_path, images, anns, cats)
    message = one_line_error(folder, ann_file, **kw)
    assert str(ann_file) in message
    for part in expected:
        assert part in message, (part, message)


def test_image_folder_missing(tmp_path):
    _, ann_file = write_dataset(tmp_path, IMAGES, [])
    message = one_line_error(tmp_path / "nowhere", ann_file)
    assert str(tmp_path / "nowhere") in message and "does not exist" in message
