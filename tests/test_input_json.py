"""Duplicate ids and wrong JSON types in the annotation file are refused naming the entry
(docs/reliability.md)."""

import json

import pytest
from input_helpers import box, dataset

from detr_irpe.data.coco import CocoDetection
from detr_irpe.data.errors import DatasetError


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["images"].append(dict(d["images"][0])), "image id 1 appears more than once"),
    (lambda d: d["annotations"].append(dict(d["annotations"][0])), "annotation id 1 appears more than once"),
    (lambda d: d["categories"].append(dict(d["categories"][0])), "category id 1 appears more than once"),
], ids=["image", "annotation", "category"])
def test_duplicate_ids_are_refused_naming_the_id(tmp_path, edit, message):
    folder, ann_file = dataset(tmp_path, [(1, "a.png", 8, 8)], [box(1, 1, [1, 1, 2, 2])])
    data = json.loads(ann_file.read_text())
    edit(data)
    ann_file.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=message):
        CocoDetection(folder, ann_file)


@pytest.mark.parametrize("edit,message", [
    (lambda d: [d], "expected a JSON object at the top level, got a list"),
    (lambda d: {**d, "images": {"1": d["images"][0]}}, "'images' must be a list, got an object"),
    (lambda d: {**d, "images": [{**d["images"][0], "id": "1"}]}, r"images\[0\] has id '1'; expected an integer"),
    (lambda d: {**d, "images": [{**d["images"][0], "width": "8"}]}, "width '8'; expected a positive integer"),
    (lambda d: {**d, "images": [{**d["images"][0], "file_name": 7}]}, "file_name 7; expected a string"),
    (lambda d: {**d, "annotations": [{**d["annotations"][0], "bbox": "1,1,2,2"}]}, "bbox '1,1,2,2'; expected"),
    (lambda d: {**d, "annotations": [{**d["annotations"][0], "area": "big"}]}, "area 'big'; expected a number"),
    (lambda d: {**d, "annotations": ["box"]}, r"annotations\[0\] must be an object, got a string"),
    (lambda d: {**d, "categories": [{"id": 1.5, "name": "a"}]}, r"categories\[0\] has id 1.5"),
], ids=["top list", "images dict", "id string", "width string", "file_name number", "bbox string", "area string",
        "annotation string", "category id float"])
def test_wrong_json_types_are_refused_naming_the_entry(tmp_path, edit, message):
    folder, ann_file = dataset(tmp_path, [(1, "a.png", 8, 8)], [box(1, 1, [1, 1, 2, 2])])
    ann_file.write_text(json.dumps(edit(json.loads(ann_file.read_text()))))
    with pytest.raises(DatasetError, match=message):
        CocoDetection(folder, ann_file)
