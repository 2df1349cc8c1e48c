"""detr_irpe.config.resolve: the class count and names decided once, from weights, config and dataset,
and the resolved config read-only."""

import pytest
import torch
from helpers import tiny_config

from detr_irpe.config import ConfigError, is_frozen
from detr_irpe.config.resolve import COCO_CLASS_NAMES, head_classes, resolve_config


class FakeDataset:
    """What resolve_config reads of a dataset: the class count and the COCO categories."""

    def __init__(self, num_classes, categories):
        self.num_classes = num_classes
        self.coco = type("C", (), {"dataset": {"categories": categories}})()


def head(n):
    return {"class_embed.weight": torch.zeros(n + 1, 8)}


def test_the_weights_class_head_decides_the_class_count():
    cfg = resolve_config(tiny_config("model.num_classes=null"), weights=head(7))
    assert cfg.model.num_classes == 7 and head_classes(head(7)) == 7


def test_the_weights_replace_a_different_configured_count(caplog):
    cfg = resolve_config(tiny_config("model.num_classes=91"), weights=head(5))
    assert cfg.model.num_classes == 5
    assert "replaced by the weights' class head" in caplog.text


def test_without_weights_the_config_then_the_dataset_decides():
    data = FakeDataset(4, [{"id": 1, "name": "circle"}, {"id": 3, "name": "cross"}])
    assert resolve_config(tiny_config("model.num_classes=9"), dataset=data).model.num_classes == 9
    cfg = resolve_config(tiny_config("model.num_classes=null"), dataset=data)
    assert cfg.model.num_classes == 4
    assert list(cfg.model.class_names) == ["", "circle", "", "cross"]


def test_nothing_to_decide_the_class_count_is_a_config_error():
    with pytest.raises(ConfigError, match="model.num_classes is null"):
        resolve_config(tiny_config("model.num_classes=null"))


def test_dataset_ids_beyond_the_class_count_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match="set model.num_classes=12"):
        resolve_config(tiny_config("model.num_classes=5"), dataset=FakeDataset(12, []))


def test_class_names_come_from_the_source_and_coco_for_91_classes():
    cfg = resolve_config(tiny_config("model.num_classes=null"), weights=head(3), class_names=["", "a", "b"])
    assert list(cfg.model.class_names) == ["", "a", "b"]
    coco = resolve_config(tiny_config(), weights=head(91))
    assert list(coco.model.class_names) == list(COCO_CLASS_NAMES) and coco.model.class_names[1] == "person"


def test_class_names_of_the_wrong_length_are_refused():
    with pytest.raises(ConfigError, match="2 names for 3 classes"):
        resolve_config(tiny_config("model.num_classes=3", "model.class_names=[a,b]"))


def test_the_resolved_config_is_read_only_and_the_input_untouched():
    raw = tiny_config("model.num_classes=null")
    cfg = resolve_config(raw, weights=head(3))
    assert is_frozen(cfg) and not is_frozen(raw) and raw.model.num_classes is None
    with pytest.raises(AttributeError, match="read-only"):
        cfg.model.num_classes = 4
    with pytest.raises(AttributeError, match="read-only"):
        cfg.train.epochs = 1
    assert resolve_config(cfg) is cfg


def test_the_device_chosen_for_auto_is_recorded():
    cfg = resolve_config(tiny_config("train.device=auto"), weights=head(3), device=torch.device("cpu"))
    assert cfg.train.device == "cpu"
