"""ONNX export of a trained DETR (absolute encoding only or with iRPE) for one fixed input size, and
a parity check with onnxruntime.

The exported graph takes one input, ``images``: a (1, 3, height, width) float32 batch, already
resized and normalised with the ImageNet mean and std as the validation transform does, with no
padding mask (every pixel is image). It returns ``pred_logits`` (1, queries, classes + 1) and
``pred_boxes`` (1, queries, 4; normalised cx, cy, w, h), as the PyTorch model does.

Exporters (torch 2.14): ``dynamo`` (``torch.onnx.export(..., dynamo=True)``, torch.export based;
torch's default and the one maintained) and ``torchscript`` (the legacy tracer,
``dynamo=False``; deprecated but several times faster to run). Both export this model: while an
export runs, the attention takes its plain path (``attention_plain``: matmul, gather, softmax) and,
under torch.export, the iRPE bucket index is computed in the graph (and folded to a constant)
instead of coming from the process-wide cache, which would otherwise keep a tracing-time fake tensor.

Parity: the exported model (ONNX Runtime, CPU) and the PyTorch model (its ordinary inference path
on the device it is on: SDPA, the fused iRPE kernel, or flex attention on CUDA; TF32 off, so in
full float32) run on the same random input; an output passes when every element satisfies
``|onnx - torch| <= atol + rtol * |torch|``. Both compute in float32 with different kernels (ONNX
Runtime's Conv / MatMul / Softmax / LayerNorm, the plain attention against SDPA), so they agree up
to float32 rounding accumulated through the network; the defaults ``atol = 1e-4``, ``rtol = 1e-3``
allow that (boxes are in [0, 1]: 1e-4 is a tenth of a pixel on a 1000-pixel image) while any real
export error (a wrong constant, a lost term, a mis-ordered axis) changes outputs by far more.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .export_options import ATOL, EXPORTERS, RTOL
from ..core.errors import UsageError
from ..core.io import atomic_write

log = logging.getLogger(__name__)

INPUT = "images"
OUTPUTS = ("pred_logits", "pred_boxes")
#: the opset of the legacy exporter (the dynamo exporter picks its own, currently 18 or later)
TORCHSCRIPT_OPSET = 17


class ExportModule(nn.Module):
    """DETR with a single image-batch input (no padding mask) and the two final outputs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        out = self.model(images)
        return out["pred_logits"], out["pred_boxes"]


def _check_size(height: int, width: int) -> None:
    if height <= 0 or width <= 0:
        raise UsageError(f"--height and --width must be > 0, got {height} x {width}")
    if height < 32 or width < 32:
        raise UsageError(f"input {height} x {width} is smaller than the backbone's stride (32 pixels)")


def example_input(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A random image (uniform pixels in [0, 1]) normalised as the validation transform does:
    (1, 3, height, width) float32."""
    from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD

    gen = torch.Generator().manual_seed(seed)
    pixels = torch.rand(1, 3, height, width, generator=gen)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def export_onnx(model: nn.Module, path, height: int, width: int, exporter: str = "dynamo",
                opset: int | None = None) -> Path:
    """Export ``model`` (moved to the CPU, eval mode) to ``path`` for (1, 3, height, width) inputs;
    the file is written atomically and checked with ``onnx.checker``. Returns the path."""
    import onnx

    if exporter not in EXPORTERS:
        raise UsageError(f"exporter {exporter!r} is not one of {', '.join(EXPORTERS)}")
    _check_size(height, width)
    path = Path(path).expanduser()
    wrapper = ExportModule(model.cpu()).eval()  # eval() on the wrapper: export restores its mode
    example = example_input(height, width)
    messages = io.StringIO()
    # the exporters write to a path: a private folder, then the checked file through the atomic writer
    with tempfile.TemporaryDirectory(prefix="detr_irpe_export_") as scratch:
        tmp = os.path.join(scratch, path.name)
        with warnings.catch_warnings(), contextlib.redirect_stdout(messages), _quiet("onnxscript", "onnx_ir"):
            # the input size is fixed by design, so the tracer's notes about shapes taken as
            # constants are expected; the legacy exporter's deprecation notice is known
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\.")
            if exporter == "dynamo":
                torch.onnx.export(wrapper, (example,), tmp, dynamo=True, input_names=[INPUT],
                                  output_names=list(OUTPUTS), opset_version=opset, external_data=False,
                                  verbose=False)
            else:
                torch.onnx.export(wrapper, (example,), tmp, dynamo=False, input_names=[INPUT],
                                  output_names=list(OUTPUTS), opset_version=opset or TORCHSCRIPT_OPSET,
                                  do_constant_folding=True)
        onnx.checker.check_model(tmp)
        with open(tmp, "rb") as exported:
            atomic_write(path, lambda f: shutil.copyfileobj(exported, f))
    for line in messages.getvalue().splitlines():
        log.debug("exporter: %s", line)
    return path


@contextlib.contextmanager
def _quiet(*names: str):
    """Hold the named loggers at ERROR: the exporter's optimizer logs every pass it runs."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def onnx_info(path) -> dict:
    """Opset, input and output shapes, node count and size of an ONNX file."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)

    def dims(v):
        return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]

    return {"opset": max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=None),
            "inputs": {v.name: dims(v) for v in m.graph.input},
            "outputs": {v.name: dims(v) for v in m.graph.output},
            "nodes": len(m.graph.node), "bytes": Path(path).stat().st_size}


@dataclass
class ParityReport:
    """Max |onnx - torch| per output and whether every element is within atol + rtol * |torch|."""

    max_abs_diff: dict[str, float]
    max_ratio: dict[str, float]  # max |diff| / (atol + rtol * |torch|): <= 1 passes
    atol: float
    rtol: float
    seed: int
    input_shape: tuple[int, ...]
    problems: list[str] = field(default_factory=list)
    device: str = "cpu"  # where the PyTorch model ran

    @property
    def passed(self) -> bool:
        return not self.problems and all(r <= 1.0 for r in self.max_ratio.values())

    def lines(self) -> list[str]:
        out = [(f"onnxruntime vs PyTorch ({self.device}) on a random input {tuple(self.input_shape)} "
                f"(seed {self.seed}); tolerance |onnx - torch| <= {self.atol:g} + {self.rtol:g} * |torch|")]
        for name, diff in self.max_abs_diff.items():
            out.append(f"  {name:<12} max abs diff {diff:.3e}  ({self.max_ratio[name]:.2e} of the tolerance)")
        out.extend(f"  {p}" for p in self.problems)
        out.append("PASS" if self.passed else "FAIL")
        return out


def check_onnx(model: nn.Module, path, height: int, width: int, seed: int = 0, atol: float = ATOL,
               rtol: float = RTOL) -> ParityReport:
    """Run the exported file with onnxruntime (CPU) and ``model`` (eval, on the device it is on, in
    full float32) on one random input and compare ``pred_logits`` and ``pred_boxes``."""
    import onnxruntime as ort

    x = example_input(height, width, seed)
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad(), _full_float32():
        out = model(x.to(device))
    ref = {name: out[name].float().cpu().numpy() for name in OUTPUTS}
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = dict(zip(OUTPUTS, session.run(list(OUTPUTS), {INPUT: x.numpy()})))
    diffs, ratios, problems = {}, {}, []
    for name in OUTPUTS:
        a, b = got[name], ref[name]
        if a.shape != b.shape:
            problems.append(f"{name}: onnx shape {a.shape} != torch shape {b.shape}")
            diffs[name], ratios[name] = float("inf"), float("inf")
            continue
        if not np.isfinite(a).all():
            problems.append(f"{name}: onnx output has non-finite values")
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        diffs[name] = float(diff.max()) if diff.size else 0.0
        ratios[name] = float((diff / (atol + rtol * np.abs(b))).max()) if diff.size else 0.0
        if not np.isfinite(diffs[name]):
            ratios[name] = float("inf")
    return ParityReport(diffs, ratios, atol, rtol, seed, tuple(x.shape), problems, str(device))


@contextlib.contextmanager
def _full_float32():
    """TF32 off for CUDA matmuls and convolutions (cuDNN allows it by default): ONNX Runtime on the
    CPU computes in full float32, and TF32's 10-bit mantissa alone would exceed the tolerance."""
    # the legacy switches, as engine.precision.set_tf32 uses them
    matmul, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = cudnn
