"""Unreadable images of a COCO-format dataset: missing, truncated or not images; "fail" names the
file, "skip" returns the next readable image and counts the file once, across loader workers."""

import logging

import pytest
import torch
from coco_helpers import ann, write_dataset, write_image

from detr_irpe.data.coco import CocoDetection
from detr_irpe.data.errors import DatasetError


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
