"""COCO folders written for the tests of dataset input classes: grey PNG images of given sizes
and the annotation file."""

import json

from PIL import Image

CATS = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]


def dataset(root, images, annotations=(), categories=CATS, write=True):
    """A COCO folder: ``images`` as (id, file_name, width, height), each written as a grey PNG of
    that size (``write``), and the annotation file; returns (image folder, annotation file)."""
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for _, name, w, h in images:
        if write:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (w, h), (90, 90, 90)).save(folder / name, format="PNG")
    ann_file = root / "ann.json"
    ann_file.write_text(json.dumps({
        "images": [{"id": i, "file_name": n, "width": w, "height": h} for i, n, w, h in images],
        "annotations": list(annotations), "categories": categories}))
    return folder, ann_file


def box(ann_id, image_id, bbox, category_id=1, **kw):
    """One annotation entry (area 1)."""
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "area": 1.0, **kw}
