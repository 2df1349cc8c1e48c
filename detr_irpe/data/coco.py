"""COCO-format detection dataset on pycocotools.

The annotation JSON is read and validated here before pycocotools indexes it, so that a broken
file stops with one line naming the file and the entry instead of a KeyError deep in a worker.
Boxes are cleaned once at construction (crowd regions and degenerate boxes dropped and counted);
images without objects are kept, as in the reference. Sizes that come from the input are bounded
before anything is allocated from them: category ids (the class head has one output per id),
ids that must fit in 64 bits, and image pixels (read from the file header before decoding).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2.functional import to_dtype

from ..errors import UserError
from .limits import DEFAULT_MAX_IMAGE_PIXELS, ID_RANGE, MAX_CATEGORY_ID

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("images", "annotations", "categories")
INVALID_IMAGE_MODES = ("fail", "skip")
#: PIL modes of 16 bits per sample, scaled to 8 bits (PIL's own conversion clips them)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


class DatasetError(UserError, ValueError):
    """A dataset that cannot be used; the one-line message names the file and the entry."""


class ImageFileError(DatasetError):
    """An image file that is missing, cannot be decoded, or is larger than the pixel limit."""


class ImageTooLargeError(ImageFileError):
    """An image with more pixels than the configured limit (refused before decoding)."""


def coco_paths(data_cfg, split: str) -> tuple[Path, Path]:
    """``(image folder, annotation file)`` of ``split`` ("train" or "val") for a DataConfig: the
    explicit ``{split}_images`` / ``{split}_annotations`` fields, else the COCO layout under ``root``."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")  # a caller's bug, not input
    root = Path(data_cfg.root).expanduser()
    images = getattr(data_cfg, f"{split}_images") or root / f"{split}2017"
    annotations = getattr(data_cfg, f"{split}_annotations") or root / "annotations" / f"instances_{split}2017.json"
    return Path(images).expanduser(), Path(annotations).expanduser()


# ---------------------------------------------------------------------------------------------
# the annotation file


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
                           f"got {_json_type(data)}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise DatasetError(f"annotation file {path} is not COCO format: missing key(s) {', '.join(missing)} "
                           f"(expected {', '.join(REQUIRED_KEYS)})")
    for key in REQUIRED_KEYS:
        if not isinstance(data[key], list):
            raise DatasetError(f"annotation file {path} is not COCO format: '{key}' must be a list, "
                               f"got {_json_type(data[key])}")
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


def coco_json_problems(data: dict, num_classes: int | None = None) -> Iterator[tuple[str, str]]:
    """Structural problems of parsed COCO data as ``(kind, message)``, in file order. Any one makes
    the file unusable. ``num_classes`` bounds the category ids (None: the largest listed id + 1).
    Entries that are themselves malformed are reported once and left out of later checks."""
    image_ids: set = set()
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict):
            yield "malformed_image", f"images[{i}] must be an object, got {_json_type(img)}"
            continue
        img_id = img.get("id")
        if not _is_id(img_id):
            yield "malformed_image", f"images[{i}] has id {show_value(img_id)}; expected an integer of at most 64 bits"
            continue
        if img_id in image_ids:
            yield "duplicate_image_id", f"image id {img_id} appears more than once in 'images'"
            continue
        image_ids.add(img_id)
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
            yield "malformed_category", f"categories[{i}] must be an object, got {_json_type(cat)}"
            continue
        cat_id = cat.get("id")
        if not _is_id(cat_id):
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
        if not isinstance(ann, dict):
            yield "malformed_annotation", f"annotations[{i}] must be an object, got {_json_type(ann)}"
            continue
        ann_id = ann.get("id")
        if not _is_id(ann_id):
            yield "malformed_annotation", f"annotations[{i}] has id {show_value(ann_id)}; expected an integer of at most 64 bits"
            continue
        if ann_id in annotation_ids:
            yield "duplicate_annotation_id", f"annotation id {ann_id} appears more than once in 'annotations'"
            continue
        annotation_ids.add(ann_id)
        img_id = ann.get("image_id")
        if not _is_id(img_id):
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


def clean_boxes(xywh: np.ndarray, width, height) -> tuple[np.ndarray, np.ndarray]:
    """COCO ``[x, y, w, h]`` boxes as XYXY clipped to the image, and the reason each box is dropped:
    "" (kept), "nonfinite" (NaN or infinite), "empty" (width or height <= 0 as annotated) or
    "outside" (nothing left inside the image after clipping). ``width``/``height`` may be per box."""
    xywh = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    finite = np.isfinite(xywh).all(axis=1)
    positive = (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
    with np.errstate(invalid="ignore"):  # inf - inf in non-finite boxes, which are dropped anyway
        x1 = np.clip(xywh[:, 0], 0, width)
        y1 = np.clip(xywh[:, 1], 0, height)
        x2 = np.clip(xywh[:, 0] + xywh[:, 2], 0, width)
        y2 = np.clip(xywh[:, 1] + xywh[:, 3], 0, height)
        inside = (x2 > x1) & (y2 > y1)
    reason = np.full(len(xywh), "", dtype=object)
    reason[~inside] = "outside"
    reason[~positive] = "empty"
    reason[~finite] = "nonfinite"
    return np.stack([x1, y1, x2, y2], axis=1), reason


# ---------------------------------------------------------------------------------------------
# images


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header, without decoding the pixels; raises
    ImageFileError when the file is missing or not an image."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not an image file" if path.is_dir() else "image file not found"
        raise ImageFileError(f"{path}: {what}")
    try:
        with _no_pil_pixel_limit(), Image.open(path) as pil:
            return pil.size
    except Exception as exc:  # damaged files raise many types in PIL's plugins (OSError, SyntaxError, ...)
        raise ImageFileError(f"{path}: not a readable image ({one_line(exc)})") from None


def check_pixels(width: int, height: int, max_pixels: int | None, what: str) -> None:
    """Raise ImageTooLargeError when ``width * height`` exceeds ``max_pixels`` (None: no limit)."""
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(f"{what} is {width}x{height} = {width * height:,} pixels, more than "
                                 f"data.max_image_pixels={max_pixels} (raise it, or null for no limit, to read it)")


def load_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> tv_tensors.Image:
    """An image file as a uint8 RGB ``tv_tensors.Image`` (CHW). Every mode becomes RGB: grayscale is
    repeated, palettes are looked up, CMYK is converted, alpha is dropped (the stored colour is
    kept, not composited) and 16-bit samples are scaled to 8 bits. The size is read from the header
    first and an image of more than ``max_pixels`` pixels is refused without being decoded. Raises
    ImageFileError (missing, not an image, truncated, too large) with a one-line reason."""
    path = Path(path)
    width, height = image_size(path)
    check_pixels(width, height, max_pixels, str(path))
    try:
        with warnings.catch_warnings():
            # torchvision >= 0.29 warns on every decode that torchcodec will take over image I/O
            warnings.filterwarnings("ignore", message=".*decoding and encoding capabilities",
                                    category=DeprecationWarning)
            # no EXIF rotation: COCO boxes are annotated on the stored pixels (the reference reads with PIL,
            # which does not rotate either)
            pixels = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
        return tv_tensors.Image(to_dtype(pixels, torch.uint8, scale=True))  # 16-bit PNGs decode as uint16
    except RuntimeError:
        pass  # formats torchvision cannot decode (BMP, TIFF, ...); PIL decides below, and names the error
    try:
        with _no_pil_pixel_limit(), Image.open(path) as pil:
            pil.load()  # decodes fully, so a truncated file fails here and not inside a transform
            if pil.mode in _SIXTEEN_BIT_MODES:
                gray = np.round(np.asarray(pil, dtype=np.float64) / 257).astype(np.uint8)
                rgb = np.repeat(gray[..., None], 3, axis=2)
            else:
                rgb = np.asarray(pil.convert("RGB"))
    except Exception as exc:  # damaged files raise many types in PIL's plugins (OSError, SyntaxError, ...)
        raise ImageFileError(f"{path}: not a readable image ({one_line(exc)})") from None
    return tv_tensors.Image(torch.from_numpy(rgb.copy()).permute(2, 0, 1))


@contextlib.contextmanager
def _no_pil_pixel_limit():
    """PIL's decompression-bomb check off while a file is opened: the size is checked against
    data.max_image_pixels instead (PIL's check would refuse sizes that limit allows)."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


# ---------------------------------------------------------------------------------------------
# the dataset


class CocoDetection(torch.utils.data.Dataset):
    """A COCO-format detection dataset: items are ``(image, target)``, passed through ``transforms``.

    Without transforms, ``image`` is a uint8 ``tv_tensors.Image`` (CHW) and ``target`` holds
    ``boxes`` (``tv_tensors.BoundingBoxes``, XYXY pixels), ``labels`` (the category ids), ``image_id``,
    ``orig_size`` and ``size`` ([h, w]), ``area`` and ``iscrowd``. Crowd regions are left out of the
    targets in both modes, as the reference does, so ``train`` changes nothing in what is read; it
    is kept so callers can tell the splits apart. Images in the index are ordered by image id.

    ``invalid_images``: "fail" raises DatasetError naming an invalid image file when its item is
    read; "skip" returns the next valid image instead and counts the file in ``skipped_images``.
    An image is invalid when its file cannot be decoded, when it has more than ``max_image_pixels``
    pixels (None: no limit), or when its stored size differs from the ``width`` / ``height`` of
    the annotation file (the boxes were drawn on an image of that size).
    """

    def __init__(self, img_folder, ann_file, transforms=None, train: bool = True, invalid_images: str = "fail",
                 num_classes: int | None = None, max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS):
        if invalid_images not in INVALID_IMAGE_MODES:
            raise ValueError(f"invalid_images must be one of {', '.join(INVALID_IMAGE_MODES)}, got {invalid_images!r}")
        if num_classes is not None and (not is_int(num_classes) or num_classes <= 0):
            raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}")
        self.img_folder = Path(img_folder).expanduser()
        self.ann_file = Path(ann_file).expanduser()
        self.transforms = transforms
        self.train = train
        self.invalid_images = invalid_images
        self.max_image_pixels = max_image_pixels

        data = read_coco_json(self.ann_file)
        if not data["images"]:
            raise DatasetError(f"no images in {self.ann_file}: its 'images' list is empty; expected at least one image")
        for _kind, message in coco_json_problems(data, num_classes):
            raise DatasetError(f"annotation file {self.ann_file}: {message}")
        category_ids = [c["id"] for c in data["categories"]]
        if num_classes is None and not category_ids:
            raise DatasetError(f"annotation file {self.ann_file}: 'categories' is empty, so the number of classes "
                               f"cannot be inferred; expected at least one category (or set model.num_classes)")
        if not self.img_folder.is_dir():
            what = "is a file, not a folder" if self.img_folder.exists() else "does not exist"
            raise DatasetError(f"image folder {self.img_folder} (for {self.ann_file}) {what}")
        self._num_classes = num_classes if num_classes is not None else max(category_ids) + 1

        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            self.coco.createIndex()
        self.ids = sorted(self.coco.imgs)
        self._build_targets()
        # shared with DataLoader workers, so that files skipped there are counted (once each) here
        self._skipped = torch.zeros(len(self.ids), dtype=torch.bool).share_memory_()
        self._check_declared_sizes()
        self._check_files_exist()
        drops = ", ".join(f"{n} {why}" for why, n in sorted(self.drop_reasons.items())) or "none"
        logger.info("%s: %d images (%d without objects), %d boxes kept, %d crowd regions left out, "
                    "%d invalid boxes dropped (%s), %d clipped to the image", self.ann_file, len(self.ids),
                    self.images_without_objects, len(self._labels), self.crowd_boxes, self.dropped_boxes, drops,
                    self.clipped_boxes)

    def _build_targets(self) -> None:
        """Every image's boxes, cleaned once, in flat arrays indexed by ``_offsets`` (flat numpy arrays
        rather than per-image Python objects keep worker processes from copying pages they read)."""
        index = {img_id: i for i, img_id in enumerate(self.ids)}
        anns = list(self.coco.dataset["annotations"])
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
        self.crowd_boxes = int(crowd.sum())
        anns = [a for a, c in zip(anns, crowd) if not c]
        owner = np.array([index[a["image_id"]] for a in anns], dtype=np.int64)
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        sizes = np.array([[self.coco.imgs[a["image_id"]]["width"], self.coco.imgs[a["image_id"]]["height"]]
                          for a in anns], dtype=np.float64).reshape(-1, 2)
        boxes, reason = clean_boxes(xywh, sizes[:, 0], sizes[:, 1])
        keep = reason == ""
        self.drop_reasons = dict(Counter(r for r in reason if r))
        self.dropped_boxes = int((~keep).sum())
        with np.errstate(invalid="ignore"):
            clipped = (np.abs(boxes[:, 2:] - boxes[:, :2] - xywh[:, 2:]) > 1e-6).any(axis=1)
        self.clipped_boxes = int((clipped & keep).sum())
        area = np.array([a.get("area", np.nan) for a in anns], dtype=np.float64)
        box_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        area = np.where(np.isfinite(area), area, box_area)  # the reference uses the annotated (mask) area
        labels = np.array([a["category_id"] for a in anns], dtype=np.int64)

        # a stable sort keeps each image's boxes in file order, as pycocotools lists them
        order = np.argsort(owner[keep], kind="stable")
        self._boxes = boxes[keep][order].astype(np.float32)
        self._labels = labels[keep][order]
        self._area = area[keep][order].astype(np.float32)
        counts = np.bincount(owner[keep], minlength=len(self.ids))
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.images_without_objects = int((counts == 0).sum())

    def _check_declared_sizes(self) -> None:
        """Images declared larger than the pixel limit stop the run here in fail mode, before
        anything is written; in skip mode they are skipped from the start."""
        too_large = []
        for i, img_id in enumerate(self.ids):
            info = self.coco.imgs[img_id]
            try:
                check_pixels(int(info["width"]), int(info["height"]), self.max_image_pixels,
                             f"image {img_id} ({show_value(info['file_name'])}) as declared in {self.ann_file}")
            except ImageTooLargeError as exc:
                too_large.append((i, str(exc)))
        if too_large and self.invalid_images == "fail":
            raise DatasetError(too_large[0][1] + (f"; {len(too_large) - 1} more images are too" if len(too_large) > 1
                                                  else "") + "; data.invalid_images=skip skips such images")
        for i, message in too_large:
            self._skipped[i] = True
            logger.warning("skipping %s", message)

    def _check_files_exist(self) -> None:
        """In fail mode, a missing image file stops the run here, before anything is written (a
        file that exists but cannot be decoded is found when it is read)."""
        if self.invalid_images != "fail":
            return
        missing = [i for i in range(len(self.ids)) if not self.image_path(i).is_file()]
        if missing:
            first = self.image_path(missing[0])
            what = "is a folder, not an image file" if first.is_dir() else "does not exist"
            raise DatasetError(f"image file {first} (image id {self.ids[missing[0]]} in {self.ann_file}) {what}"
                               + (f"; {len(missing) - 1} more image files are missing" if len(missing) > 1 else "")
                               + "; set data.invalid_images=skip to skip such files")

    @property
    def num_classes(self) -> int:
        """The number of class indices: the configured value, else the largest category id + 1."""
        return self._num_classes

    @property
    def skipped_images(self) -> int:
        """How many image files were skipped as unreadable (each counted once, across workers)."""
        return int(self._skipped.sum())

    def __len__(self) -> int:
        return len(self.ids)

    def aspect_ratios(self) -> list[float]:
        """Width / height of every image, in item order, from the annotation file (nothing decoded)."""
        return [self.coco.imgs[i]["width"] / self.coco.imgs[i]["height"] for i in self.ids]

    def image_path(self, index: int) -> Path:
        """The file of item ``index``."""
        return self.img_folder / self.coco.imgs[self.ids[index]]["file_name"]

    def __getitem__(self, index: int):
        if not -len(self.ids) <= index < len(self.ids):
            raise IndexError(f"index {index} out of range for {len(self.ids)} images")  # ends plain iteration
        image, index = self._read(index % len(self.ids))
        target = self._target(index, image.shape[-2], image.shape[-1])
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def _read(self, index: int) -> tuple[tv_tensors.Image, int]:
        """The image of ``index``, or in skip mode of the next valid item (wrapping around)."""
        for step in range(len(self.ids)):
            i = (index + step) % len(self.ids)
            if self._skipped[i]:
                continue  # known to be invalid (only ever set in skip mode)
            path = self.image_path(i)
            try:
                image = load_image(path, self.max_image_pixels)
                self._check_stored_size(i, image.shape[-1], image.shape[-2])
                return image, i
            except ImageFileError as exc:
                reason = one_line(exc).replace(f"{path}: ", "")
                if self.invalid_images == "fail":
                    raise DatasetError(f"image file {path} (image id {self.ids[i]} in {self.ann_file}): {reason}; "
                                       f"set data.invalid_images=skip to skip such files") from None
                if not self._skipped[i]:
                    self._skipped[i] = True
                    logger.warning("skipping image file %s (image id %d): %s", path, self.ids[i], reason)
        raise DatasetError(f"image folder {self.img_folder}: none of the {len(self.ids)} images of "
                           f"{self.ann_file} can be used")

    def _check_stored_size(self, index: int, width: int, height: int) -> None:
        """The stored pixels must have the size the boxes were drawn on (detectron2 stops too):
        boxes clipped or rescaled to other pixels would be silently wrong."""
        info = self.coco.imgs[self.ids[index]]
        declared = (int(info["width"]), int(info["height"]))
        if declared == (width, height):
            return
        hint = (" (width and height swapped: was an EXIF orientation applied where the annotations were made?)"
                if declared == (height, width) else "")
        raise ImageFileError(f"the stored image is {width}x{height} pixels but the annotation file declares "
                             f"{declared[0]}x{declared[1]}{hint}")

    def _target(self, index: int, height: int, width: int) -> dict:
        lo, hi = self._offsets[index], self._offsets[index + 1]
        boxes = torch.from_numpy(self._boxes[lo:hi].copy())
        labels = torch.from_numpy(self._labels[lo:hi].copy())
        area = torch.from_numpy(self._area[lo:hi].copy())
        size = torch.tensor([height, width], dtype=torch.int64)
        return {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
            "labels": labels,
            "image_id": torch.tensor(self.ids[index], dtype=torch.int64),
            "orig_size": size,
            "size": size.clone(),
            "area": area,
            "iscrowd": torch.zeros(len(labels), dtype=torch.int64),
        }


# ---------------------------------------------------------------------------------------------
# small helpers


def is_int(value) -> bool:
    """Whether ``value`` is a JSON integer (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_id(value) -> bool:
    return is_int(value) and ID_RANGE[0] <= value <= ID_RANGE[1]


def is_number(value) -> bool:
    """Whether ``value`` is a JSON number (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_size(value) -> bool:
    """Whether ``value`` is a positive whole number (a size in pixels)."""
    return is_number(value) and math.isfinite(value) and value > 0 and float(value).is_integer()


def _json_type(value) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
             int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def show_value(value, limit: int = 60) -> str:
    """``value`` as a short one-line repr for messages."""
    text = one_line(repr(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(value) -> str:
    """``value`` as text on one line (whitespace runs become one space)."""
    text = " ".join(str(value).split())
    return text or type(value).__name__
