"""Convolutional backbones: torchvision ResNets (frozen batch norm as the reference, or trainable
batch / group norm) and a small CNN for CPU work. Module names follow the reference checkpoints
(``backbone.0.body.{conv1,bn1,layer1..layer4}``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d
from ..core.errors import UserError

log = logging.getLogger(__name__)

_RESNET_WEIGHTS = {
    "resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights", "resnet101": "ResNet101_Weights",
}


class BackboneWeightsError(UserError, FileNotFoundError):
    """Pretrained backbone weights that are requested but not on this machine."""


def _config_error(message: str):
    from ..config import ConfigError  # imported here: the config module imports the models

    return ConfigError(message)


def _norm_layer(kind: str):
    if kind == "frozen_bn":
        return FrozenBatchNorm2d
    if kind == "bn":
        return nn.BatchNorm2d
    if kind == "gn":
        return lambda channels: nn.GroupNorm(min(32, channels // 4) or 1, channels)
    raise _config_error(f"model.backbone.norm {kind!r} is not one of frozen_bn, bn, gn")


def imagenet_weights_path(name: str) -> Path:
    """Where torchvision keeps the ImageNet weights of ``name`` (IMAGENET1K_V1, as the reference)."""
    weights = getattr(torchvision.models, _RESNET_WEIGHTS[name]).IMAGENET1K_V1
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


#: backbone weights that leave the random initialisation: none, or the model's checkpoint (loaded
#: over the whole model afterwards)
NO_BACKBONE_WEIGHTS = ("none", "checkpoint")


def _load_weights(module: nn.Module, name: str, weights: str, allow_random_init: bool) -> None:
    if weights in NO_BACKBONE_WEIGHTS:
        return
    if weights == "imagenet":
        if name not in _RESNET_WEIGHTS:
            raise _config_error(f"backbone {name} has no ImageNet weights; set model.backbone.weights=none")
        path = imagenet_weights_path(name)
        if not path.is_file():
            msg = (f"ImageNet weights for {name} are not on this machine (expected {path}); "
                   f"copy them there, or set model.backbone.weights=none")
            if not allow_random_init:
                raise BackboneWeightsError(msg + " or model.backbone.allow_random_init=true to train from random init")
            log.warning("%s; starting from random initialisation (allow_random_init=true)", msg)
            return
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise BackboneWeightsError(f"backbone weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torch.load failure has many types; the message says which file
        raise BackboneWeightsError(f"backbone weights {path} cannot be read: {exc}".splitlines()[0]) from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    elif isinstance(state, dict) and "model" in state:
        state = state["model"]
    if not isinstance(state, dict):
        raise BackboneWeightsError(f"backbone weights {path} hold {type(state).__name__}, not a state dict of {name}")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked") and not k.startswith("fc.")]
    if missing or unexpected:
        raise BackboneWeightsError(f"backbone weights {path} do not fit {name}: missing {missing[:5]}, "
                                   f"unexpected {unexpected[:5]}")
    log.info("backbone %s: loaded weights from %s", name, path)


class TinyCNN(nn.Module):
    """A small stride-32 CNN (stem + four stages) for CPU experiments; names mirror a ResNet's."""

    def __init__(self, width: int = 32, norm_layer=nn.BatchNorm2d, dilation: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False)
        self.bn1 = norm_layer(width)
        chans = [width, width, 2 * width, 4 * width, 8 * width]
        for i in range(4):
            stride, dil = (1, 2) if dilation and i == 3 else (2, 1)
            setattr(self, f"layer{i + 1}", nn.Sequential(
                nn.Conv2d(chans[i], chans[i + 1], 3, stride=stride, padding=dil, dilation=dil, bias=False),
                norm_layer(chans[i + 1]), nn.ReLU(inplace=True),
                nn.Conv2d(chans[i + 1], chans[i + 1], 3, padding=1, bias=False),
                norm_layer(chans[i + 1]), nn.ReLU(inplace=True)))
        self.num_channels = chans[-1]

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class Backbone(nn.Module):
    """Feature extractor returning the last stage (stride 32, or 16 with dilation) and its mask."""

    def __init__(self, name: str = "resnet50", weights: str = "imagenet", *, norm: str = "frozen_bn",
                 trainable_layers=("layer2", "layer3", "layer4"), dilation: bool = False,
                 allow_random_init: bool = False, width: int = 32):
        super().__init__()
        norm_layer = _norm_layer(norm)
        if name == "cnn_tiny":
            net = TinyCNN(width, norm_layer, dilation)
            self.num_channels = net.num_channels
            if weights not in NO_BACKBONE_WEIGHTS:
                _load_weights(net, name, weights, allow_random_init)
        elif name in _RESNET_WEIGHTS:
            net = getattr(torchvision.models, name)(weights=None, norm_layer=norm_layer,
                                                    replace_stride_with_dilation=[False, False, dilation])
            _load_weights(net, name, weights, allow_random_init)
            self.num_channels = 512 if name in ("resnet18", "resnet34") else 2048
        else:
            raise _config_error(f"model.backbone.name {name!r} is not one of "
                                f"{', '.join(list(_RESNET_WEIGHTS) + ['cnn_tiny'])}")
        trainable = set(trainable_layers)
        for pname, p in net.named_parameters():
            stage = pname.split(".")[0]
            stage = "stem" if stage in ("conv1", "bn1") else stage
            p.requires_grad_(stage in trainable)
        if name == "cnn_tiny":
            self.body = net
        else:
            self.body = IntermediateLayerGetter(net, return_layers={"layer4": "0"})
        if norm == "frozen_bn" and weights == "none":
            log.warning("backbone %s: frozen batch norm with random weights normalises nothing; "
                        "set model.backbone.norm=bn or gn to train it from scratch", name)

    def forward(self, images: torch.Tensor, mask: torch.Tensor):
        feat = self.body(images)
        if isinstance(feat, dict):
            feat = feat["0"]
        mask = F.interpolate(mask[None].float(), size=feat.shape[-2:]).to(torch.bool)[0]
        return feat, mask


class Joiner(nn.Sequential):
    """Backbone (``backbone.0``) and absolute position encoding (``backbone.1``)."""

    def __init__(self, backbone: Backbone, position_embedding: nn.Module):
        super().__init__(backbone, position_embedding)
        self.num_channels = backbone.num_channels

    def forward(self, images: torch.Tensor, mask: torch.Tensor):
        feat, mask = self[0](images, mask)
        pos = self[1](mask)
        if pos is not None:
            pos = pos.to(feat.dtype)
        return feat, mask, pos
