"""What the targets hold for classes of dataset input (docs/reliability.md):
category id gaps, crowd regions, images without boxes."""

import pytest
import torch
from input_helpers import box, dataset

from detr_irpe.data.coco import CocoDetection
from detr_irpe.data.errors import DatasetError


def test_category_id_gaps_keep_the_ids_as_class_indices(tmp_path):
    cats = [{"id": 1, "name": "a"}, {"id": 5, "name": "e"}, {"id": 90, "name": "z"}]
    folder, ann_file = dataset(tmp_path, [(1, "a.png", 20, 20)],
                               [box(1, 1, [1, 1, 4, 4], 1), box(2, 1, [5, 5, 4, 4], 90), box(3, 1, [9, 9, 4, 4], 5)], cats)
    ds = CocoDetection(folder, ann_file)
    assert ds.num_classes == 91  # as COCO: 80 categories with ids up to 90 give 91 classes
    assert ds[0][1]["labels"].tolist() == [1, 90, 5]


def test_crowd_regions_are_left_out_of_targets_and_counted(tmp_path):
    folder, ann_file = dataset(tmp_path, [(1, "a.png", 20, 20), (2, "b.png", 20, 20)],
                               [box(1, 1, [1, 1, 4, 4]), box(2, 1, [2, 2, 9, 9], iscrowd=1),
                                box(3, 2, [0, 0, 20, 20], iscrowd=1)])
    ds = CocoDetection(folder, ann_file)
    assert ds.crowd_boxes == 2 and ds.images_without_objects == 1  # image 2 holds a crowd region only
    assert ds[0][1]["boxes"].tolist() == [[1, 1, 5, 5]] and ds[1][1]["boxes"].shape == (0, 4)
    assert len(ds.coco.anns) == 3  # the ground truth of evaluation keeps them (COCO ignores detections there)
    bad = dataset(tmp_path / "bad", [(1, "a.png", 8, 8)], [box(1, 1, [1, 1, 2, 2], iscrowd=2)])
    with pytest.raises(DatasetError, match=r"iscrowd 2; expected 0 or 1"):
        CocoDetection(*bad)


def test_images_without_boxes_are_kept_with_empty_targets(tmp_path):
    folder, ann_file = dataset(tmp_path, [(1, "a.png", 20, 20), (2, "b.png", 16, 16)], [box(1, 1, [1, 1, 4, 4])])
    ds = CocoDetection(folder, ann_file)
    assert len(ds) == 2 and ds.images_without_objects == 1
    _, target = ds[1]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,) and target["labels"].dtype == torch.int64
