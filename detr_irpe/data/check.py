"""Validation of a COCO-format dataset: every problem found, by kind, with a few examples.

Errors make the dataset unusable for CocoDetection (it would stop on them); warnings are things
the loader handles (boxes it clips or drops, files listed twice) but that usually point to a
broken conversion.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .boxes import clean_boxes
from .coco_json import coco_json_problems, read_coco_json, unsafe_file_name
from .errors import DatasetError, ImageFileError, ImageTooLargeError
from .images import check_pixels, load_image
from ..core.limits import DEFAULT_MAX_IMAGE_PIXELS
from .values import is_int, is_number, is_size, one_line, show_value

#: kinds that make the dataset unusable, with a short description for the summary
ERROR_KINDS = {
    "annotation_file": "annotation file missing, unreadable, not JSON or not COCO",
    "no_images": "an empty 'images' list",
    "image_folder": "image folder missing",
    "malformed_image": "image entries with missing or wrongly typed fields",
    "malformed_annotation": "annotation entries with missing or wrongly typed fields",
    "malformed_category": "category entries with missing or wrongly typed fields",
    "duplicate_image_id": "image ids listed more than once",
    "duplicate_annotation_id": "annotation ids listed more than once",
    "duplicate_category_id": "category ids listed more than once",
    "unsafe_file_name": "file names that leave the image folder",
    "unknown_image_id": "annotations of images that are not listed",
    "unknown_category_id": "annotations of categories that are not listed",
    "category_out_of_range": "category ids negative or >= num_classes",
    "missing_image": "image files that do not exist",
    "unreadable_image": "image files that are empty, truncated or not images",
    "image_too_large": "images with more pixels than the limit (declared or stored)",
    "size_mismatch": "image files whose size differs from the width/height in the JSON",
}
#: kinds the loader copes with
WARNING_KINDS = {
    "box_nonfinite": "boxes with NaN or infinite values (dropped by the loader)",
    "box_empty": "boxes with width or height <= 0 (dropped by the loader)",
    "box_outside": "boxes entirely outside their image (dropped by the loader)",
    "box_clipped": "boxes partly outside their image (clipped by the loader)",
    "duplicate_file_name": "files listed for more than one image id",
}
_BOX_KINDS = {"nonfinite": "box_nonfinite", "empty": "box_empty", "outside": "box_outside"}


@dataclass
class CheckReport:
    """What ``check_dataset`` found: sizes, per-category box counts, and problems by kind (a count and
    the first ``max_examples`` messages of each)."""

    images_dir: str
    annotation_file: str
    decoded: bool = False
    num_images: int = 0
    num_annotations: int = 0
    crowd_annotations: int = 0
    images_without_annotations: int = 0
    #: (category id, name, number of annotations)
    categories: list[tuple[int, str, int]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    max_examples: int = 5

    def add(self, kind: str, message: str) -> None:
        """Record one problem of ``kind``."""
        self.counts[kind] += 1
        if len(self.examples[kind]) < self.max_examples:
            self.examples[kind].append(message)

    @property
    def errors(self) -> dict[str, int]:
        """Problems that make the dataset unusable, by kind."""
        return {k: n for k, n in self.counts.items() if k not in WARNING_KINDS and n}

    @property
    def warnings(self) -> dict[str, int]:
        """Problems the loader copes with, by kind."""
        return {k: n for k, n in self.counts.items() if k in WARNING_KINDS and n}

    @property
    def ok(self) -> bool:
        """True when CocoDetection can use the dataset."""
        return not self.errors

    def format(self) -> str:
        """A readable multi-line summary."""
        lines = [f"annotations: {self.annotation_file}", f"images:      {self.images_dir}",
                 f"{self.num_images} images ({self.images_without_annotations} without annotations), "
                 f"{self.num_annotations} annotations ({self.crowd_annotations} crowd), "
                 f"{len(self.categories)} categories"]
        if self.categories:
            lines.append("annotations per category (id name: count):")
            lines += [f"  {cid:>5} {name}: {n}" for cid, name, n in self.categories]
        sections = (("errors", self.errors, ERROR_KINDS), ("warnings", self.warnings, WARNING_KINDS))
        for title, found, described in sections:
            if not found:
                continue
            lines.append(f"{title}:")
            for kind in sorted(found, key=lambda k: (-found[k], k)):
                lines.append(f"  {kind}: {found[kind]} ({described.get(kind, kind)})")
                lines += [f"    - {m}" for m in self.examples[kind]]
                if found[kind] > len(self.examples[kind]):
                    lines.append(f"    ... and {found[kind] - len(self.examples[kind])} more")
        if not self.decoded:
            lines.append("image files were checked for existence only (not decoded)")
        n_err, n_warn = sum(self.errors.values()), sum(self.warnings.values())
        verdict = "usable" if self.ok else "NOT usable"
        lines.append(f"result: {verdict} ({n_err} errors, {n_warn} warnings)")
        return "\n".join(lines)


def check_dataset(images_dir: str | os.PathLike, annotation_file: str | os.PathLike, decode: bool = True,
                  num_classes: int | None = None, progress: bool = True, max_examples: int = 5,
                  max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> CheckReport:
    """Check a COCO-format dataset: the JSON structure, ids, boxes and (with ``decode``) that every
    image file decodes completely to the declared size. ``num_classes`` bounds the category ids
    (None: largest + 1); ``max_image_pixels`` the declared and stored image sizes (None: no limit)."""
    images_dir, annotation_file = Path(images_dir).expanduser(), Path(annotation_file).expanduser()
    report = CheckReport(str(images_dir), str(annotation_file), decoded=decode, max_examples=max_examples)
    try:
        data = read_coco_json(annotation_file)
    except DatasetError as exc:
        report.add("annotation_file", str(exc))
        return report
    if not data["images"]:
        report.add("no_images", f"no images in {annotation_file}: its 'images' list is empty")
    for kind, message in coco_json_problems(data, num_classes):
        report.add(kind, message)

    images: dict = {}
    for img in data["images"]:
        if isinstance(img, dict) and is_int(img.get("id")):
            images.setdefault(img["id"], img)  # the first entry of a duplicated id, as reported above
    anns = [a for a in data["annotations"] if isinstance(a, dict)]
    report.num_images, report.num_annotations = len(data["images"]), len(data["annotations"])
    report.crowd_annotations = sum(1 for a in anns if a.get("iscrowd", 0) == 1)
    annotated = {a.get("image_id") for a in anns}
    report.images_without_annotations = sum(1 for i in images if i not in annotated)
    per_category = Counter(a.get("category_id") for a in anns)
    names = {c["id"]: str(c.get("name", c["id"])) for c in data["categories"]
             if isinstance(c, dict) and is_int(c.get("id"))}
    report.categories = [(cid, names[cid], per_category.get(cid, 0)) for cid in sorted(names)]

    _check_boxes(report, anns, images)
    for img_id, img in images.items():
        if is_size(img.get("width")) and is_size(img.get("height")):
            try:
                check_pixels(int(img["width"]), int(img["height"]), max_image_pixels, f"image {img_id} as declared")
            except ImageTooLargeError as exc:
                report.add("image_too_large", str(exc))
    if not images_dir.is_dir():
        what = "is a file, not a folder" if images_dir.exists() else "does not exist"
        report.add("image_folder", f"image folder {images_dir} {what}")
        return report
    _check_files(report, images_dir, images, decode, progress, max_image_pixels)
    return report


def renumber_categories(data: dict) -> tuple[dict, dict[int, int]]:
    """COCO data whose category ids are 1..N in the order of their ids, and the map old id -> new
    id; apply it to the train and val annotation files alike (ids are class indices, so very
    large ids would make a very large class head)::

        data = json.load(open("train.json"))
        new, mapping = renumber_categories(data)
        json.dump(new, open("train_renumbered.json", "w"))
    """
    mapping = {old: new for new, old in enumerate(sorted(c["id"] for c in data["categories"]), start=1)}
    categories = [{**c, "id": mapping[c["id"]]} for c in data["categories"]]
    annotations = [{**a, "category_id": mapping.get(a["category_id"], a["category_id"])} for a in data["annotations"]]
    return {**data, "categories": sorted(categories, key=lambda c: c["id"]), "annotations": annotations}, mapping


def _check_boxes(report: CheckReport, anns: list[dict], images: dict) -> None:
    """Boxes the loader would drop or clip (crowd regions included: they are left out anyway, but a
    broken box there points to the same conversion problem)."""
    rows, where = [], []
    for ann in anns:
        bbox, img = ann.get("bbox"), images.get(ann.get("image_id"))
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
            continue  # reported as malformed
        if img is None or not (is_size(img.get("width")) and is_size(img.get("height"))):
            continue  # reported as unknown image / malformed image
        rows.append([*bbox, img["width"], img["height"]])
        where.append(f"annotation {show_value(ann.get('id'))} (image {ann['image_id']}) bbox {show_value(bbox)}")
    if not rows:
        return
    rows = np.array(rows, dtype=np.float64)
    xyxy, reasons = clean_boxes(rows[:, :4], rows[:, 4], rows[:, 5])
    with np.errstate(invalid="ignore"):
        clipped = (np.abs(xyxy[:, 2:] - xyxy[:, :2] - rows[:, 2:4]) > 1e-6).any(axis=1)
    for i, reason in enumerate(reasons):
        if reason:
            report.add(_BOX_KINDS[reason], f"{where[i]} in a {rows[i, 4]:g}x{rows[i, 5]:g} image")
        elif clipped[i]:
            report.add("box_clipped", f"{where[i]} extends outside the {rows[i, 4]:g}x{rows[i, 5]:g} image")


def _check_files(report: CheckReport, images_dir: Path, images: dict, decode: bool, progress: bool,
                 max_image_pixels: int | None) -> None:
    """Existence (and with ``decode`` full decoding and size) of every listed image file."""
    owners: dict[str, list] = defaultdict(list)
    for img_id, img in images.items():
        if unsafe_file_name(img.get("file_name")) is None:
            owners[img["file_name"]].append(img_id)
    for name, ids in owners.items():
        if len(ids) > 1:
            report.add("duplicate_file_name", f"{name!r} is the file of images {', '.join(map(str, ids[:5]))}")
    entries = [(img_id, img) for img_id, img in images.items() if unsafe_file_name(img.get("file_name")) is None]
    bar = tqdm(entries, desc="decoding images" if decode else "checking files", unit="img",
               disable=not progress, leave=False)
    for img_id, img in bar:
        path = images_dir / img["file_name"]
        if not path.is_file():
            what = "is a folder, not an image file" if path.is_dir() else "does not exist"
            report.add("missing_image", f"image {img_id}: {path} {what}")
            continue
        if not decode:
            if path.stat().st_size == 0:
                report.add("unreadable_image", f"image {img_id}: {path} is empty")
            continue
        try:
            pixels = load_image(path, max_image_pixels)
        except ImageTooLargeError as exc:
            report.add("image_too_large", f"image {img_id}: {one_line(exc)}")
            continue
        except ImageFileError as exc:
            report.add("unreadable_image", f"image {img_id}: {one_line(exc)}")
            continue
        height, width = pixels.shape[-2:]
        if (img.get("height"), img.get("width")) != (height, width) and is_size(img.get("width")):
            report.add("size_mismatch", f"image {img_id}: {path} is {width}x{height}, the JSON says "
                                        f"{img.get('width')}x{img.get('height')}")
