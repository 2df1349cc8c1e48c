"""Small shared helpers for tests."""

from detr_irpe.config import load_config

TINY = [
    "model.backbone.name=cnn_tiny", "model.backbone.width=8", "model.backbone.weights=none",
    "model.backbone.norm=bn", "model.backbone.trainable_layers=[stem,layer1,layer2,layer3,layer4]",
    "model.hidden_dim=32", "model.nheads=4", "model.enc_layers=2", "model.dec_layers=2",
    "model.dim_feedforward=64", "model.num_queries=10", "model.num_classes=5",
]


def tiny_config(*overrides):
    """A small CPU model config; ``overrides`` are key=value strings."""
    return load_config(None, TINY + list(overrides))
