"""The COCO annotation file: read and checked for structure before pycocotools indexes it, so that
a broken file stops with one line naming the file and the entry instead of a KeyError deep in a
worker. Category ids are bounded before a class head is allocated from them, and ids must fit in
64 bits."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

from .errors import DatasetError
from ..core.limits import MAX_CATEGORY_ID
from .values import is_id, is_int, is_number, is_size, json_type, show_value

REQUIRED_KEYS = ("images", "annotations", "categories")


def read_coco_json(ann_file: str | os.PathLike) -> dict:
    """The parsed annotation file; DatasetError when it is missing, unreadable, not JSON, or not a
    mapping with list-valued ``images``, ``annotations`` and ``categories``."""
    path = Path(ann_file)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise DatasetError(f"annotation file {path} {what}")
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"annotation file {path} is not valid JSON: {exc.msg} at line {exc.lineno} "
                           f"column {exc.colno}") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"annotation file {path} is not valid JSON: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise DatasetError(f"annotation file {path} cannot be read: {exc.strerror or exc}") from None
    except RecursionError:
        raise DatasetError(f"annotation file {path} is not usable JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise DatasetError(f"annotation file {path} is not COCO format: expected a JSON object at the top level, "
                           f"got {json_type(data)}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise DatasetError(f"annotation file {path} is not COCO format: missing key(s) {', '.join(missing)} "
                           f"(expected {', '.join(REQUIRED_KEYS)})")
    for key in REQUIRED_KEYS:
        if not isinstance(data[key], list):
            raise DatasetError(f"annotation file {path} is not COCO format: '{key}' must be a list, "
                               f"got {json_type(data[key])}")
    return data


def unsafe_file_name(name) -> str | None:
    """Why an image ``file_name`` may not be joined to the image folder (None when it is safe):
    absolute paths and ``..`` would read files outside the dataset."""
    if not isinstance(name, str) or not name:
        return "is not a non-empty string"
    if "\x00" in name:
        return "contains a NUL character"
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.anchor or name.startswith(("/", "\\")):
        return "is an absolute path"
    if ".." in posix.parts or ".." in windows.parts:
        return "contains '..'"
    return None


def id_problem(section: str, i: int, entry, seen: set) -> tuple[str, str] | None:
    """The problem of entry ``i`` of ``images`` or ``annotations`` that is not an object with an id
    of at most 64 bits not seen before, as ``(kind, message)``; None adds its id to ``seen``."""
    kind = "image" if section == "images" else "annotation"
    if not isinstance(entry, dict):
        return f"malformed_{kind}", f"{section}[{i}] must be an object, got {json_type(entry)}"
    entry_id = entry.get("id")
    if not is_id(entry_id):
        return f"malformed_{kind}", f"{section}[{i}] has id {show_value(entry_id)}; expected an integer of at most 64 bits"
    if entry_id in seen:
        return f"duplicate_{kind}_id", f"{kind} id {entry_id} appears more than once in '{section}'"
    seen.add(entry_id)
    return None


def coco_json_problems(data: dict, num_classes: int | None = None) -> Iterator[tuple[str, str]]:
    """Structural problems of parsed COCO data as ``(kind, message)``, in file order. Any one makes
    the file unusable. ``num_classes`` bounds the category ids (None: the largest listed id + 1).
    Entries that are themselves malformed are reported once and left out of later checks."""
    image_ids: set = set()
    for i, img in enumerate(data["images"]):
        problem = id_problem("images", i, img, image_ids)
        if problem:
            yield problem
            continue
        img_id = img["id"]
        why = unsafe_file_name(img.get("file_name"))
        if why is not None and not isinstance(img.get("file_name"), str):
            yield "malformed_image", f"image {img_id} has file_name {show_value(img.get('file_name'))}; expected a string"
        elif why is not None:
            yield "unsafe_file_name", (f"image {img_id} file_name {show_value(img['file_name'])} {why}; "
                                       f"expected a path inside the image folder")
        for key in ("width", "height"):
            if not is_size(img.get(key)):
                yield "malformed_image", f"image {img_id} has {key} {show_value(img.get(key))}; expected a positive integer"

    category_ids: dict = {}
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict):
            yield "malformed_category", f"categories[{i}] must be an object, got {json_type(cat)}"
            continue
        cat_id = cat.get("id")
        if not is_id(cat_id):
            yield "malformed_category", f"categories[{i}] has id {show_value(cat_id)}; expected an integer"
            continue
        if cat_id in category_ids:
            yield "duplicate_category_id", f"category id {cat_id} appears more than once in 'categories'"
            continue
        category_ids[cat_id] = cat.get("name", str(cat_id))
        if cat_id < 0:
            yield "category_out_of_range", (f"category {cat_id} ({show_value(category_ids[cat_id])}) has a negative id; "
                                            f"expected ids >= 0")
        elif num_classes is not None and cat_id >= num_classes:
            yield "category_out_of_range", (f"category {cat_id} ({show_value(category_ids[cat_id])}) is >= num_classes "
                                            f"{num_classes}; expected ids < num_classes (set model.num_classes to at "
                                            f"least {cat_id + 1})")
        elif num_classes is None and cat_id > MAX_CATEGORY_ID:
            yield "category_out_of_range", (f"category {cat_id} ({show_value(category_ids[cat_id])}) is above the limit of "
                                            f"{MAX_CATEGORY_ID}: ids are class indices and the class head would have "
                                            f"{cat_id + 1} outputs; renumber the categories 1..{len(data['categories'])} "
                                            f"in every annotation file of the dataset alike "
                                            f"(detr_irpe.data.check.renumber_categories)")
    if num_classes is not None:
        limit, bound = num_classes, f"num_classes ({num_classes})"
    else:
        limit = min(max((c for c in category_ids if c >= 0), default=-1), MAX_CATEGORY_ID) + 1
        bound = f"num_classes ({limit}, the largest listed id + 1)"

    annotation_ids: set = set()
    for i, ann in enumerate(data["annotations"]):
        problem = id_problem("annotations", i, ann, annotation_ids)
        if problem:
            yield problem
            continue
        ann_id = ann["id"]
        img_id = ann.get("image_id")
        if not is_id(img_id):
            yield "malformed_annotation", f"annotation {ann_id} has image_id {show_value(img_id)}; expected an integer"
            continue
        where = f"annotation {ann_id} (image {img_id})"
        if img_id not in image_ids:
            yield "unknown_image_id", f"{where} refers to an image id that is not listed in 'images'"
        cat_id = ann.get("category_id")
        if not is_int(cat_id):
            yield "malformed_annotation", f"{where} has category_id {show_value(cat_id)}; expected an integer"
        elif not 0 <= cat_id < limit:
            yield "category_out_of_range", f"{where} has category_id {cat_id}; expected 0 <= category_id < {bound}"
        elif cat_id not in category_ids:
            yield "unknown_category_id", (f"{where} has category_id {cat_id}, which is not listed in 'categories'; "
                                          f"expected one of the {len(category_ids)} listed ids")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
            yield "malformed_annotation", f"{where} has bbox {show_value(bbox)}; expected [x, y, width, height] numbers"
        if ann.get("iscrowd", 0) not in (0, 1):
            yield "malformed_annotation", f"{where} has iscrowd {show_value(ann.get('iscrowd'))}; expected 0 or 1"
        if "area" in ann and not is_number(ann["area"]):
            yield "malformed_annotation", f"{where} has area {show_value(ann['area'])}; expected a number"
