"""train.tf32 switches CUDA matmuls and convolutions between TF32 and full float32 together."""

import torch

from detr_irpe.config import load_config
from detr_irpe.engine.precision import set_tf32


def test_set_tf32_switches_matmuls_and_convolutions_together():
    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    try:
        set_tf32(True)
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32
        set_tf32(False)
        assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cuda.matmul.allow_tf32
        assert not torch.backends.cudnn.allow_tf32
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


def test_tf32_is_off_unless_asked_for():
    assert load_config(None, []).train.tf32 is False
    assert load_config(None, ["train.tf32=true"]).train.tf32 is True
