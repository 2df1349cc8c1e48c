"""The float32 precision of CUDA matmuls and convolutions: TF32 or full IEEE float32."""

from __future__ import annotations

import torch


def set_tf32(enabled: bool) -> None:
    """TF32 (10-bit mantissa products, float32 accumulation) for float32 matmuls and cuDNN
    convolutions when ``enabled``, else full float32 for both, as the reference ran (torch's own
    default is TF32 convolutions with full-float32 matmuls). Process-wide; no effect on the CPU."""
    # torch's legacy switches: once the per-backend precision API is used, the process-wide
    # getter that inductor's autotuning calls raises, so these stay consistent with it
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cudnn.allow_tf32 = enabled
