"""One DETR training step (forward, loss with matching, backward, clipping, AdamW) on two images
of about 512 x 683 (or cycling through the multi-scale recipe's sizes), without iRPE and with
rpe-2.0-product-ctx-1-k, in float32, TF32 and bf16 autocast, for DETR's decoder and those of the
family (their 50-epoch recipes), side by side; optionally the reference DETR code's step in the
same run, and a profiler breakdown of one variant's step."""

from __future__ import annotations

import torch
from torch.profiler import record_function

from ..config import load_config
from ..engine.ema import ModelEMA
from ..engine.optim import build_optimizer
from ..engine.precision import set_tf32
from ..models import build_model
from .common import PHASES, machine_description, peak_memory, print_table, profile_step, time_interleaved

VARIANTS = {"no iRPE": "", "rpe-2.0-product-ctx-1-k": "rpe-2.0-product-ctx-1-k"}
#: the config each decoder's step is built from: DETR's defaults, the family's 50-epoch recipes
DECODER_CONFIGS = {"detr": None, "conditional": "conditional/base", "dab": "dab/base"}
#: fp32: full float32 (the reference's); tf32: TF32 matmuls and convolutions; bf16: autocast
#: the shorter sides of the paper's multi-scale training resize (the longer side follows 4:3)
RECIPE_SIZES = tuple(range(480, 801, 32))


def _batch(height: int, width: int, dev: torch.device, seed: int = 1):
    """Two images of slightly different sizes, as a batch of COCO images after the training
    resize, and their targets."""
    g = torch.Generator().manual_seed(seed)
    images = [torch.randn(3, height, width, generator=g).to(dev),
              torch.randn(3, height - 32, width + 21, generator=g).to(dev)]
    targets = []
    for n in (7, 4):
        cxcy = torch.rand(n, 2, generator=g) * 0.6 + 0.2
        wh = torch.rand(n, 2, generator=g) * 0.3 + 0.05
        targets.append({"labels": torch.randint(1, 91, (n,), generator=g).to(dev),
                        "boxes": torch.cat([cxcy, wh], 1).to(dev)})
    return images, targets


def _model(irpe: str, backbone: str, dev: torch.device, kernel: str, reference: str | None, decoder: str = "detr",
           options: tuple[str, ...] = ()):
    """(model, criterion, optimizer, batch adapter) of this project (with the training
    ``options``, key=value) or of the reference code."""
    torch.manual_seed(0)
    if reference is None:
        cfg = load_config(DECODER_CONFIGS[decoder], [
            f"model.backbone.name={backbone}", "model.backbone.weights=none", f"model.irpe={irpe}",
            f"model.attention_kernel={kernel}", *options])
        model, criterion, _ = build_model(cfg)
        model.to(dev).train()
        return model, criterion.to(dev), build_optimizer(model, cfg.train), lambda images: images
    from .reference import build_reference, reference_batch

    model, criterion, _ = build_reference(reference, irpe, backbone, str(dev))
    model.train()
    # the reference's optimizer: AdamW over two groups, torch's default implementation
    groups = [{"params": [p for n, p in model.named_parameters() if "backbone" not in n and p.requires_grad]},
              {"params": [p for n, p in model.named_parameters() if "backbone" in n and p.requires_grad], "lr": 1e-5}]
    return model, criterion, torch.optim.AdamW(groups, lr=1e-4, weight_decay=1e-4), reference_batch


def _setup(irpe: str, backbone: str, height: int, width: int, device: str, precision: str = "fp32",
           kernel: str = "auto", reference: str | None = None, sizes: tuple[int, ...] = (), decoder: str = "detr",
           ema: bool = False, options: tuple[str, ...] = ()):
    """A function running one training step (with a model-EMA update after the optimizer's with
    ``ema``; with the training ``options``), or one per size of ``sizes`` (shorter sides)."""
    dev = torch.device(device)
    model, criterion, opt, adapt = _model(irpe, backbone, dev, kernel, reference, decoder, options)
    # query denoising builds its extra queries from the targets
    denoising = any(o.startswith("model.dn_groups=") for o in options)
    average = ModelEMA(model) if ema else None
    shapes = [(s, round(s * 4 / 3)) for s in sizes] or [(height, width)]
    batches = [_batch(h, w, dev) for h, w in shapes]

    def one(images, targets):
        with record_function("forward"), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(adapt(images), targets=targets) if denoising else model(adapt(images))
        with record_function("loss"):
            losses = criterion(out, targets)
            loss = sum(losses[k] * w for k, w in criterion.weight_dict.items() if k in losses)
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            opt.step()
            opt.zero_grad(set_to_none=True)
        if average is not None:
            with record_function("ema"):
                average.update(model)

    def step():
        if dev.type == "cuda":  # process-wide: set for each variant as it runs
            set_tf32(precision == "tf32")
        for images, targets in batches:
            one(images, targets)

    return step


def run(device="cpu", backbone="resnet50", height=512, width=683, repeats=5, memory=True, as_json=False,
        precisions=("fp32",), kernel="auto", reference=None, multiscale=False, decoders=("detr",), ema=False,
        num_groups=1, dn_groups=0):
    """Print the training-step table (every decoder x variant x precision; each variant also with
    a model-EMA update with ``ema``, with ``num_groups`` Group DETR query groups when > 1, with
    ``dn_groups`` denoising groups on the dab decoder when > 0; and the reference DETR code's
    variants when ``reference`` names its checkout); returns its rows."""
    dev = torch.device(device)
    skipped = [p for p in precisions if p != "fp32" and dev.type != "cuda"]
    precisions = [p for p in precisions if p not in skipped]
    sizes = RECIPE_SIZES if multiscale else ()
    codes = [("this project", None)] + ([("reference", reference)] if reference and "detr" in decoders else [])
    # the reference has no mixed precision: its rpe_ops extension takes float32 only
    # name -> (iRPE, EMA, training options)
    variants = {n: (spec, False, ()) for n, spec in VARIANTS.items()}
    if ema:
        variants.update({f"{n} + EMA": (spec, True, ()) for n, spec in VARIANTS.items()})
    if num_groups > 1:
        variants.update({f"{n} + {num_groups} groups": (spec, False, (f"model.num_groups={num_groups}",))
                         for n, spec in VARIANTS.items()})
    if dn_groups > 0:
        variants.update({f"{n} + DN {dn_groups}": (spec, False, (f"model.dn_groups={dn_groups}",))
                         for n, spec in VARIANTS.items()})

    def runs(n, d, path, p):
        spec, with_ema, options = variants[n]
        if path:  # the reference: fp32 and tf32 steps of its own, nothing more
            return p != "bf16" and not with_ema and not options
        return d == "dab" or not any(o.startswith("model.dn_groups=") for o in options)

    cases = {(code, d, n, p): (variants[n][0], backbone, height, width, device, p, kernel, path, sizes, d,
                               variants[n][1], variants[n][2])
             for code, path in codes for d in (decoders if path is None else ("detr",)) for p in precisions
             for n in variants if runs(n, d, path, p)}
    times = time_interleaved({c: _setup(*a) for c, a in cases.items()}, dev, repeats, warmup=2)
    steps = len(sizes) or 1
    rows = []
    for case, args in cases.items():
        code, decoder, name, precision = case
        per_step = times[case] / steps
        mem = peak_memory(_setup, args, dev) if memory and not sizes else float("nan")
        vs_fp32 = times[(code, decoder, name, "fp32")] / times[case] if "fp32" in precisions else float("nan")
        ref_case = ("reference", decoder, name, precision if precision != "bf16" else "fp32")
        vs_reference = times[ref_case] / times[case] if ref_case in times else float("nan")
        overhead = f"{100 * (times[case] / times[(code, decoder, 'no iRPE', precision)] - 1):+.1f}%"
        rows.append([code, decoder, name, precision, per_step, 2 / per_step, mem, overhead, vs_fp32, vs_reference])
    shape = (f"2 images, shorter side cycling {sizes[0]}-{sizes[-1]} (step 32, 4:3)" if sizes
             else f"2 images ~{height} x {width}")
    extra = {"machine": machine_description(dev),
             "step": f"{backbone} (6+6 layers; DETR: 100 queries, the family: 300), {shape}, forward + loss with Hungarian matching + "
                     f"backward + clip + AdamW, attention kernel {kernel}, median of {repeats}; speed-ups: the "
                     f"same code and variant in fp32, the reference code with the same variant and precision "
                     f"(fp32 for bf16: the reference has no mixed precision), over this row's time"}
    if skipped:
        extra["left out"] = f"{', '.join(skipped)}: CUDA only"
    print_table("Training step", ["code", "decoder", "variant", "precision", "s/step", "images/s", "peak MiB",
                                     "iRPE overhead", "speed-up vs fp32", "speed-up vs reference"],
                rows, as_json, extra)
    return rows


def profile(device="cpu", backbone="resnet50", height=512, width=683, irpe="rpe-2.0-product-ctx-1-k",
            precision="fp32", kernel="auto", reference=None, steps=3, top=25, as_json=False):
    """Profile ``steps`` training steps of one variant (after two warm-up steps): the time of each
    phase of the step, the host syncs, and the top operators; returns the phase rows."""
    dev = torch.device(device)
    step = _setup(irpe, backbone, height, width, device, precision, kernel, reference)
    title = (f"Training step profile: {'reference' if reference else 'this project'}, {irpe or 'no iRPE'}, "
             f"{precision}, DETR-{backbone}, 2 images ~{height} x {width}, kernel {kernel}")
    return profile_step(step, dev, title, phases=PHASES, steps=steps, top=top, as_json=as_json)
