"""detectron2's contiguous class ids (0..K-1) <-> DETR's class indices (the dataset's category ids)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog


class ClassMap:
    """``dataset_ids[c]`` is the dataset category id (DETR's class index) of contiguous class ``c``."""

    def __init__(self, dataset_ids: Sequence[int]):
        ids = [int(i) for i in dataset_ids]
        if not ids:
            raise ValueError("ClassMap needs at least one class")
        if min(ids) < 0 or len(set(ids)) != len(ids):
            raise ValueError(f"dataset category ids must be distinct and >= 0, got {ids}")
        self.dataset_ids = ids

    @property
    def num_detr_classes(self) -> int:
        """DETR's class count: the largest category id + 1 (COCO: 91)."""
        return max(self.dataset_ids) + 1

    def to_detr_table(self) -> torch.Tensor:
        """(K,) int64: contiguous id -> DETR class index."""
        return torch.tensor(self.dataset_ids, dtype=torch.int64)

    def from_detr_table(self, num_classes: int) -> torch.Tensor:
        """(num_classes + 1,) int64: DETR class index -> contiguous id, -1 where no dataset class
        has that id (COCO's unused ids, and the no-object column)."""
        if num_classes < self.num_detr_classes:
            raise ValueError(f"MODEL.DETR_IRPE.NUM_CLASSES ({num_classes}) must exceed the largest dataset "
                             f"category id ({self.num_detr_classes - 1})")
        table = torch.full((num_classes + 1,), -1, dtype=torch.int64)
        table[self.to_detr_table()] = torch.arange(len(self.dataset_ids))
        return table

    @classmethod
    def from_metadata(cls, name: str) -> ClassMap:
        """The map of a registered dataset: its ``thing_dataset_id_to_contiguous_id``, else the
        identity over its ``thing_classes``."""
        meta = MetadataCatalog.get(name)
        mapping = meta.get("thing_dataset_id_to_contiguous_id")
        if mapping is None and name in DatasetCatalog:
            # datasets registered with register_coco_instances fill in their metadata when first loaded
            DatasetCatalog.get(name)
            mapping = meta.get("thing_dataset_id_to_contiguous_id")
        if mapping is None:
            classes = meta.get("thing_classes")
            if classes is None:
                raise ValueError(f"dataset {name!r} has neither thing_dataset_id_to_contiguous_id nor thing_classes "
                                 f"in its metadata; register it first (e.g. register_coco_instances)")
            return cls(range(len(classes)))
        by_contiguous = sorted((int(c), int(d)) for d, c in mapping.items())
        if [c for c, _ in by_contiguous] != list(range(len(by_contiguous))):
            raise ValueError(f"dataset {name!r}: thing_dataset_id_to_contiguous_id does not map onto 0..K-1")
        return cls(d for _, d in by_contiguous)

    @classmethod
    def from_datasets(cls, names: Sequence[str]) -> ClassMap:
        """The one map that all of ``names`` share; an error names the first that differs."""
        if not names:
            raise ValueError("DATASETS.TRAIN and DATASETS.TEST are both empty: no dataset gives the classes")
        first = cls.from_metadata(names[0])
        for name in names[1:]:
            other = cls.from_metadata(name)
            if other.dataset_ids != first.dataset_ids:
                raise ValueError(f"datasets {names[0]!r} and {name!r} have different categories; DetrIrpe needs one "
                                 f"class set")
        return first
