"""COCO-format dataset: targets, validation errors (one line, naming the file and entry), unreadable
images (fail / skip), and batching (padding, aspect-ratio groups, loaders)."""

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler, RandomSampler
from torchvision import tv_tensors

from detr_irpe.config import DataConfig
from detr_irpe.data.batching import GroupedBatchSampler, aspect_ratio_groups, collate
from detr_irpe.data.coco import CocoDetection, coco_paths
from detr_irpe.data.errors import DatasetError
from detr_irpe.data.transforms import build_transforms

COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]


def write_image(path, width, height, colour=(90, 90, 90), fmt=None):
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
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "area": 10.0, **kw}


@pytest.fixture
def small_coco(tmp_path):
    images = [(5, "a.png", 64, 48), (2, "b.png", 40, 72), (9, "empty.png", 50, 50)]
    anns = [
        ann(1, 5, [4, 6, 20, 10], 1),                 # kept as is
        ann(2, 5, [50, 40, 30, 20], 3),               # partly outside: clipped to 64x48
        ann(3, 5, [10, 10, 0, 5]),                    # zero width: dropped
        ann(4, 5, [10, 10, float("nan"), 5]),         # NaN: dropped
        ann(5, 5, [70, 10, 5, 5]),                    # entirely outside: dropped
        ann(6, 5, [1, 1, 10, 10], 3, iscrowd=1),      # crowd: left out
        ann(7, 2, [0, 0, 40, 72], 3),                 # the whole portrait image
    ]
    return write_dataset(tmp_path, images, anns)


def test_items_targets_and_counts(small_coco, caplog):
    folder, ann_file = small_coco
    with caplog.at_level(logging.INFO, logger="detr_irpe.data.coco"):
        ds = CocoDetection(folder, ann_file)
    summary = [r.getMessage() for r in caplog.records]
    assert len(summary) == 1 and "\n" not in summary[0] and str(ann_file) in summary[0]
    assert len(ds) == 3 and ds.ids == [2, 5, 9]  # sorted by image id, the empty image kept
    assert ds.dropped_boxes == 3 and ds.crowd_boxes == 1 and ds.clipped_boxes == 1
    assert ds.drop_reasons == {"empty": 1, "nonfinite": 1, "outside": 1}
    assert ds.images_without_objects == 1
    assert ds.num_classes == 4  # largest category id 3, plus one

    image, target = ds[1]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8 and image.shape == (3, 48, 64)
    assert torch.equal(image[:, 0, 0], torch.tensor(COLOURS[0], dtype=torch.uint8))
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
    assert target["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY and target["boxes"].canvas_size == (48, 64)
    assert target["boxes"].tolist() == [[4, 6, 24, 16], [50, 40, 64, 48]]
    assert target["labels"].tolist() == [1, 3] and target["labels"].dtype == torch.int64
    assert target["image_id"].dtype == torch.int64 and target["image_id"].shape == () and target["image_id"].item() == 5
    assert target["orig_size"].tolist() == [48, 64] and target["size"].tolist() == [48, 64]
    assert target["iscrowd"].tolist() == [0, 0] and target["area"].tolist() == [10.0, 10.0]

    image, target = ds[2]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,) and image.shape == (3, 50, 50)
    assert ds[-1][1]["image_id"].item() == 9
    with pytest.raises(IndexError):
        ds[3]
    assert [t["image_id"].item() for _, t in ds] == [2, 5, 9]  # plain iteration ends
    assert ds.aspect_ratios() == [40 / 72, 64 / 48, 1.0]


def test_num_classes_from_config_and_pycocotools_silent(small_coco, capsys):
    folder, ann_file = small_coco
    ds = CocoDetection(folder, ann_file, num_classes=91)
    assert ds.num_classes == 91
    assert capsys.readouterr().out == ""  # pycocotools' progress lines are swallowed
    assert set(ds.coco.imgs) == {2, 5, 9} and len(ds.coco.anns) == 7


def test_transforms_are_applied(small_coco):
    folder, ann_file = small_coco
    ds = CocoDetection(folder, ann_file, transforms=build_transforms(DataConfig(), train=False))
    image, target = ds[1]
    assert image.dtype == torch.float32 and tuple(image.shape[-2:]) == (800, 1066)
    assert torch.allclose(target["boxes"][0], torch.tensor([14 / 64, 11 / 48, 20 / 64, 10 / 48]))
    assert target["orig_size"].tolist() == [48, 64] and target["size"].tolist() == [800, 1066]


def test_image_size_differing_from_json_stops_naming_the_image_or_is_skipped(tmp_path):
    folder, ann_file = write_dataset(tmp_path, [(1, "a.png", 100, 100), (2, "b.png", 30, 20)],
                                     [ann(1, 1, [10, 10, 80, 80]), ann(2, 2, [1, 1, 5, 5])])
    write_image(folder / "a.png", 60, 50)  # smaller than the JSON says
    with pytest.raises(DatasetError, match=r"a\.png \(image id 1 .*stored image is 60x50 pixels but the annotation "
                                           r"file declares 100x100; set data.invalid_images=skip"):
        CocoDetection(folder, ann_file)[0]
    skip = CocoDetection(folder, ann_file, invalid_images="skip")
    image, target = skip[0]
    assert target["image_id"].item() == 2 and image.shape[-2:] == (20, 30) and skip.skipped_images == 1
    write_image(folder / "a.png", 100, 60)
    write_image(folder / "b.png", 20, 30)  # portrait where the JSON says landscape
    with pytest.raises(DatasetError, match="width and height swapped"):
        CocoDetection(folder, ann_file)[1]


def test_bmp_decoded_through_pil(tmp_path):
    folder, ann_file = write_dataset(tmp_path, [(1, "a.bmp", 30, 20)], [])
    image, _ = CocoDetection(folder, ann_file)[0]
    assert image.shape == (3, 20, 30) and torch.equal(image[:, 5, 5], torch.tensor(COLOURS[0], dtype=torch.uint8))


def test_coco_paths_layout_and_overrides(tmp_path):
    cfg = DataConfig(root=str(tmp_path))
    assert coco_paths(cfg, "train") == (tmp_path / "train2017", tmp_path / "annotations" / "instances_train2017.json")
    assert coco_paths(cfg, "val") == (tmp_path / "val2017", tmp_path / "annotations" / "instances_val2017.json")
    cfg.val_images = "/x/imgs"
    assert coco_paths(cfg, "val") == (Path("/x/imgs"), tmp_path / "annotations" / "instances_val2017.json")
    cfg.train_annotations = "/x/t.json"
    assert coco_paths(cfg, "train") == (tmp_path / "train2017", Path("/x/t.json"))
    with pytest.raises(ValueError):
        coco_paths(cfg, "test")


# ---------------------------------------------------------------------------------------------
# validation errors


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


# ---------------------------------------------------------------------------------------------
# unreadable images


@pytest.fixture
def broken_images(tmp_path):
    images = [(1, "ok1.png", 20, 10), (2, "missing.png", 20, 10), (3, "trunc.jpg", 20, 10), (4, "text.png", 20, 10),
              (5, "ok2.png", 16, 16)]
    folder, ann_file = write_dataset(tmp_path, images, [ann(1, 5, [1, 1, 4, 4])])
    (folder / "missing.png").unlink()
    write_image(folder / "full.jpg", 200, 100)
    data = (folder / "full.jpg").read_bytes()
    (folder / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (folder / "text.png").write_text("not an image at all")
    return folder, ann_file


def test_a_missing_image_fails_at_construction_naming_the_file(broken_images):
    folder, ann_file = broken_images
    with pytest.raises(DatasetError) as info:
        CocoDetection(folder, ann_file)  # before anything reads (or writes) anything
    message = str(info.value)
    assert "\n" not in message and str(folder / "missing.png") in message and "image id 2" in message
    assert "does not exist" in message and "invalid_images=skip" in message


@pytest.mark.parametrize("index,name", [(2, "trunc.jpg"), (3, "text.png")])
def test_unreadable_image_fails_naming_the_file(broken_images, index, name):
    folder, ann_file = broken_images
    write_image(folder / "missing.png", 20, 10)
    ds = CocoDetection(folder, ann_file)
    with pytest.raises(DatasetError) as info:
        ds[index]
    message = str(info.value)
    assert "\n" not in message and str(folder / name) in message and f"image id {index + 1}" in message


def test_skip_mode_returns_next_readable_image_and_counts(broken_images, caplog):
    folder, ann_file = broken_images
    ds = CocoDetection(folder, ann_file, invalid_images="skip")
    with caplog.at_level(logging.WARNING, logger="detr_irpe.data.coco"):
        image, target = ds[1]  # missing, truncated and text files are passed over: the next one is ok2
        assert target["image_id"].item() == 5 and target["labels"].tolist() == [1] and image.shape == (3, 16, 16)
        assert ds.skipped_images == 3
        for _ in range(2):
            assert [ds[i][1]["image_id"].item() for i in range(5)] == [1, 5, 5, 5, 5]
    assert ds.skipped_images == 3
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 3 and all("\n" not in m for m in warned)  # each file logged once


def test_skip_mode_counts_in_dataloader_workers(broken_images):
    folder, ann_file = broken_images
    ds = CocoDetection(folder, ann_file, invalid_images="skip")
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=1)
    assert [t["image_id"].item() for _, t in loader] == [1, 5, 5, 5, 5]
    assert ds.skipped_images == 3  # counted in the worker, seen here


def test_skip_mode_with_nothing_readable(tmp_path):
    folder, ann_file = write_dataset(tmp_path, [(1, "a.png", 8, 8)], [])
    (folder / "a.png").write_text("x")
    ds = CocoDetection(folder, ann_file, invalid_images="skip")
    with pytest.raises(DatasetError, match="none of the 1 images"):
        ds[0]


def test_invalid_mode_rejected(small_coco):
    with pytest.raises(ValueError, match="invalid_images"):
        CocoDetection(*small_coco, invalid_images="ignore")


# ---------------------------------------------------------------------------------------------
# batching


def test_collate_pads_bottom_right_and_masks():
    a, b = torch.rand(3, 4, 6) + 1, torch.rand(3, 7, 3) + 1  # + 1: no real pixel is zero
    images, mask, targets = collate([(a, {"i": 0}), (b, {"i": 1})])
    assert images.shape == (2, 3, 7, 6) and mask.shape == (2, 7, 6) and mask.dtype == torch.bool
    assert torch.equal(images[0, :, :4, :6], a) and torch.equal(images[1, :, :7, :3], b)
    assert torch.equal(mask, (images == 0).all(1))  # True exactly where padding is
    assert mask[0, 4:].all() and not mask[0, :4].any() and mask[1, :, 3:].all() and not mask[1, :, :3].any()
    assert [t["i"] for t in targets] == [0, 1]


def check_grouped(batches, expected_indices, groups, batch_size):
    flat = [i for b in batches for i in b]
    assert sorted(flat) == sorted(expected_indices)  # every index exactly once
    for b in batches:
        assert 0 < len(b) <= batch_size and len({groups[i] for i in b}) == 1


def test_grouped_batches_random_sampler():
    gen = torch.Generator().manual_seed(0)
    groups = aspect_ratio_groups(torch.rand(23, generator=gen).mul(2).tolist())
    assert set(groups) == {0, 1}
    sampler = RandomSampler(range(23), generator=torch.Generator().manual_seed(1))
    gbs = GroupedBatchSampler(sampler, groups, 4)
    first = list(gbs)
    check_grouped(first, range(23), groups, 4)
    assert len(gbs) == len(first)
    second = list(gbs)
    check_grouped(second, range(23), groups, 4)
    assert first != second  # a new order each epoch
    assert len(gbs) == len(list(gbs))  # asking for the length does not disturb the order


@pytest.mark.parametrize("drop_last", [False, True])
def test_grouped_batches_distributed_sampler(drop_last):
    groups = [int(i % 3 == 0) for i in range(37)]
    per_rank, lengths = [], []
    for rank in range(2):
        sampler = DistributedSampler(range(37), num_replicas=2, rank=rank, shuffle=True, seed=3)
        gbs = GroupedBatchSampler(sampler, groups, 4, drop_last=drop_last)
        gbs.set_epoch(1)
        batches = list(gbs)
        assert len(batches) == len(gbs)
        lengths.append(len(gbs))
        if drop_last:
            assert len(batches) == len(sampler) // 4 and all(len(b) == 4 for b in batches)
            assert all(len({groups[i] for i in b}) == 1 for b in batches)
            assert set(i for b in batches for i in b) <= set(sampler)
        else:
            check_grouped(batches, list(sampler), groups, 4)
        gbs.set_epoch(2)
        assert list(gbs) != batches
        per_rank.append({i for b in batches for i in b})
    if drop_last:
        assert lengths[0] == lengths[1]  # equal step counts, as DDP needs
    else:
        assert per_rank[0] | per_rank[1] == set(range(37))
