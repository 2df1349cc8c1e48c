"""COCO-format dataset (data/coco.py): items and targets, counts of what was dropped, transforms,
image sizes differing from the annotation file, and the COCO folder layout."""

import logging
from pathlib import Path

import pytest
import torch
from coco_helpers import COLOURS, ann, write_dataset, write_image
from torchvision import tv_tensors

from detr_irpe.config import DataConfig
from detr_irpe.data.build import AugmentedDataset
from detr_irpe.data.coco import CocoDetection, coco_paths
from detr_irpe.data.errors import DatasetError
from detr_irpe.data.transforms import build_transforms


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
    ds = AugmentedDataset(CocoDetection(folder, ann_file), build_transforms(DataConfig(), train=False), seed=0)
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



def test_invalid_mode_rejected(small_coco):
    with pytest.raises(ValueError, match="invalid_images"):
        CocoDetection(*small_coco, invalid_images="ignore")
