"""COCO folders written for the dataset tests: PNG (or BMP) images of given sizes and colours, and
the annotation file."""

import json

from PIL import Image

COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]


def write_image(path, width, height, colour=(90, 90, 90), fmt=None):
    """A one-colour RGB image file of ``width`` x ``height`` (format from the suffix unless ``fmt``)."""
    Image.new("RGB", (width, height), colour).save(path, format=fmt)


def write_dataset(root, images, annotations, categories=None, extra=None):
    """A COCO folder under ``root``: ``images`` as (id, file_name, width, height) written as PNG
    (unless the name says otherwise), and the JSON with the given annotations."""
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for i, (img_id, name, w, h) in enumerate(images):
        if w <= 0 or h <= 0:
            continue
        if name.endswith(".bmp"):
            write_image(folder / name, w, h, COLOURS[i % 3], fmt="BMP")
        elif "/" not in name and not name.startswith(".."):
            write_image(folder / name, w, h, COLOURS[i % 3])
    data = {
        "images": [{"id": i, "file_name": n, "width": w, "height": h} for i, n, w, h in images],
        "annotations": annotations,
        "categories": categories if categories is not None else [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}],
    }
    data.update(extra or {})
    ann_file = root / "ann.json"
    ann_file.write_text(json.dumps(data))
    return folder, ann_file


def ann(ann_id, image_id, bbox, category_id=1, **kw):
    """One annotation entry (area 10)."""
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "area": 10.0, **kw}

