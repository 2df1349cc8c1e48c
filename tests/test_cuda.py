"""The CUDA paths: attention kernels against the CPU, mixed precision, torch.compile, and a training
run through NCCL. Skipped without a CUDA device (CI has none; run on a GPU machine)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from engine_helpers import micro

from detr_irpe.models.attention import MultiheadAttention
from detr_irpe.models.irpe import RPESpec

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("irpe", ["", "rpe-2.0-product-ctx-1-k", "rpe-1.9-cross-bias-0-qk", "rpe-2.0-euc-ctx-1-qkv"])
def test_cuda_kernels_match_the_cpu(irpe):
    spec = RPESpec.parse(irpe)
    torch.manual_seed(0)
    cpu = MultiheadAttention(64, 8, 0.0, rpe=spec, kernel="plain").double()
    for p in cpu.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, 6 * 7, 64, dtype=torch.float64)
    mask = torch.zeros(2, 42, dtype=torch.bool)
    mask[1, -7:] = True
    ref = cpu(x, x, x, key_padding_mask=mask, shape=(6, 7))[0]
    ref.square().sum().backward()
    ref_grads = [p.grad.clone() for p in cpu.parameters()]
    for kernel in ["plain", "fused"] + ([] if spec is not None and "v" in spec.rpe_on else ["sdpa"]):
        gpu = MultiheadAttention(64, 8, 0.0, rpe=spec, kernel=kernel).double().cuda()
        gpu.load_state_dict(cpu.state_dict())
        out = gpu(x.cuda(), x.cuda(), x.cuda(), key_padding_mask=mask.cuda(), shape=(6, 7))[0]
        out.square().sum().backward()
        assert (out.cpu() - ref).abs().max() < 1e-9, kernel
        for g, r in zip((p.grad for p in gpu.parameters()), ref_grads):
            assert (g.cpu() - r).abs().max() < 1e-8, kernel


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_training_runs_on_cuda(tmp_path, amp):
    from detr_irpe.engine.launch import train_main

    out = tmp_path / amp
    assert train_main(micro(tmp_path / "cache", out, "train.device=cuda", f"train.amp={amp}", "train.epochs=1")) == 0
    assert (out / "checkpoint.pth").is_file()


def test_compiled_model_trains_on_cuda(tmp_path):
    from detr_irpe.engine.launch import train_main

    assert train_main(micro(tmp_path / "cache", tmp_path / "c", "train.device=cuda", "train.compile=true",
                            "train.epochs=1")) == 0


def test_torchrun_with_nccl_trains(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           str(ROOT / "tools" / "train.py"), *micro(tmp_path / "cache", tmp_path / "n", "train.device=cuda", "train.epochs=1")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "process group: nccl" in proc.stderr or (tmp_path / "n" / "checkpoint.pth").is_file()
