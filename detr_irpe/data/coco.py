"""COCO-format detection dataset on pycocotools.

The annotation file is read and checked (``coco_json``) before pycocotools indexes it. Boxes are
cleaned once at construction (crowd regions and degenerate boxes dropped and counted); images
without objects are kept, as in the reference. Image pixels are bounded from the file header
before decoding (``images``).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO
from torchvision import tv_tensors

from .boxes import clean_boxes
from .coco_json import coco_json_problems, read_coco_json
from .errors import DatasetError, ImageFileError, ImageTooLargeError
from .images import check_pixels, load_image
from ..core.limits import DEFAULT_MAX_IMAGE_PIXELS
from ..core.names import INVALID_IMAGE_MODES
from .values import is_int, one_line, show_value

logger = logging.getLogger(__name__)


def coco_paths(data_cfg, split: str) -> tuple[Path, Path]:
    """``(image folder, annotation file)`` of ``split`` ("train" or "val") for a DataConfig: the
    explicit ``{split}_images`` / ``{split}_annotations`` fields, else the COCO layout under ``root``."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")  # a caller's bug, not input
    root = Path(data_cfg.root).expanduser()
    images = getattr(data_cfg, f"{split}_images") or root / f"{split}2017"
    annotations = getattr(data_cfg, f"{split}_annotations") or root / "annotations" / f"instances_{split}2017.json"
    return Path(images).expanduser(), Path(annotations).expanduser()


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

    def __init__(self, img_folder, ann_file, invalid_images: str = "fail", num_classes: int | None = None,
                 max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS):
        if invalid_images not in INVALID_IMAGE_MODES:
            raise ValueError(f"invalid_images must be one of {', '.join(INVALID_IMAGE_MODES)}, got {invalid_images!r}")
        if num_classes is not None and (not is_int(num_classes) or num_classes <= 0):
            raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}")
        self.img_folder = Path(img_folder).expanduser()
        self.ann_file = Path(ann_file).expanduser()
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
        return image, self._target(index, image.shape[-2], image.shape[-1])

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
