"""The CUDA paths: attention kernels against the CPU, mixed precision, torch.compile, and a training
run through NCCL. Skipped without a CUDA device (CI has none; run on a GPU machine)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from engine_helpers import micro

from detr_irpe.models.attention import MultiheadAttention
from detr_irpe.core.rpe_spec import RPESpec

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


def _trainer(tmp_path, *overrides):
    """A micro Trainer on the GPU (one epoch)."""
    from detr_irpe.config import load_config
    from detr_irpe.engine.trainer import Trainer

    return Trainer(load_config(None, micro(tmp_path / "cache", tmp_path / "run", "train.device=cuda", "train.epochs=1",
                                           *overrides)))


@pytest.mark.parametrize("amp,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_training_runs_its_forward_in_the_reduced_dtype(tmp_path, amp, dtype):
    trainer = _trainer(tmp_path, f"train.amp={amp}")
    dtypes = []
    trainer.model.class_embed.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    trainer.train()
    assert dtypes and set(dtypes) == {dtype}  # training steps and evaluation alike
    assert trainer.scaler.is_enabled() == (amp == "fp16")  # fp16 needs loss scaling, bf16 does not
    saved = torch.load(tmp_path / "run" / "checkpoint.pth", weights_only=False)
    assert all(v.dtype == torch.float32 for v in saved["model"].values() if v.is_floating_point())  # fp32 weights
    assert (saved["scaler"] is not None) == (amp == "fp16")


def test_compiled_model_is_the_one_that_trains_on_cuda(tmp_path):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    trainer = _trainer(tmp_path, "train.compile=true")
    assert isinstance(trainer.train_model, torch._dynamo.eval_frame.OptimizedModule)
    trainer.train()
    assert counters["stats"]["unique_graphs"] > 0  # torch.compile traced and ran the model's forward
    assert (tmp_path / "run" / "checkpoint.pth").is_file()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices for a two-process NCCL group")
def test_torchrun_with_nccl_trains_two_processes(tmp_path):
    out = tmp_path / "n"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tools" / "train.py"), *micro(tmp_path / "cache", out, "train.device=cuda", "train.epochs=1")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "run_info.json").read_text())
    assert info["dist_backend"] == "nccl" and info["world_size"] == 2
    assert json.loads((out / "log.jsonl").read_text().splitlines()[-1])["world_size"] == 2
