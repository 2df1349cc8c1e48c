"""``detr-irpe benchmark``: benchmarks that print figures (Markdown tables, or JSON with --json)."""

from __future__ import annotations

import argparse

from ..core.names import DECODERS, PRECISIONS
from .cli import Parser, parse_command_line

USAGE = """Benchmarks that print figures (Markdown tables, or JSON with --json). The variants of each
table run side by side in one process, interleaved, so that their ratios hold on a noisy machine.

  encoder     iRPE attention cost in DETR-R50's encoder shape per variant and attention kernel
              (forward, forward + backward, memory)
  train-step  DETR-R50 training step, no iRPE vs rpe-2.0-product-ctx-1-k, per precision (fp32, tf32,
              bf16); --multiscale cycles through the paper's training sizes; --profile prints where
              one variant's step goes instead (phases, host syncs, launches, top operators)
  data        the training data pipeline alone, per loader worker, beside the step's consumption
  infer       inference images/s at batch 1 and 4, fp32 and bf16, optionally compiled
  eval        COCO evaluation: faster-coco-eval against pycocotools (5,000 images x 100 detections)
  matcher     Hungarian matching time per batch
  all         every one of them

--reference PATH (encoder, train-step, infer) adds the reference code's rows, built from a checkout
of it outside this repository: PATH is its DETR-with-iRPE folder (see detr_irpe/benchmark/reference.py).
"""


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when available)")
    common.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    common.add_argument("--repeats", type=int, default=None, help="timed repetitions per variant (median reported)")
    common.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return common


def _with_reference(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference", metavar="PATH", default=None,
                        help="the reference code's DETR-with-iRPE folder: its rows are timed in the same run")


def build_parser() -> Parser:
    parser = Parser(prog="detr-irpe benchmark", description=USAGE)
    sub = parser.add_subparsers(dest="command", required=True)
    common = [_common()]
    enc = sub.add_parser("encoder", parents=common, help="iRPE attention cost in the encoder")
    enc.add_argument("--batch", type=int, default=2)
    enc.add_argument("--height", type=int, default=25)
    enc.add_argument("--width", type=int, default=34)
    enc.add_argument("--layers", type=int, default=6)
    enc.add_argument("--kernels", nargs="+", default=["auto"],
                     help="attention kernels, each a row per variant (auto plain fused sdpa flex)")
    enc.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    _with_reference(enc)
    ts = sub.add_parser("train-step", parents=common, help="DETR training step")
    ts.add_argument("--backbone", default="resnet50")
    ts.add_argument("--height", type=int, default=512)
    ts.add_argument("--width", type=int, default=683)
    ts.add_argument("--precisions", nargs="+", default=["fp32"], choices=PRECISIONS,
                    help="fp32 (full float32), tf32 (TF32 matmuls and convolutions), bf16 (autocast); CUDA "
                         "for the last two")
    ts.add_argument("--kernel", default="auto", help="attention kernel (auto plain fused sdpa flex)")
    ts.add_argument("--decoders", nargs="+", default=["detr"], choices=DECODERS,
                    help="decoders whose steps are timed (conditional, dab: their 50-epoch recipes)")
    ts.add_argument("--ema", action="store_true", help="also time each variant with a model-EMA update per step")
    ts.add_argument("--num-groups", type=int, default=1, help="also time each variant with K Group DETR query groups")
    ts.add_argument("--dn-groups", type=int, default=0,
                    help="also time each variant of the dab decoder with N query-denoising groups")
    ts.add_argument("--multiscale", action="store_true",
                    help="each timed call is one step per training size of the paper's recipe (shorter side "
                         "480-800, step 32)")
    ts.add_argument("--no-memory", action="store_true")
    ts.add_argument("--profile", action="store_true",
                    help="profile one variant's step instead: phases, host syncs, launches, top operators")
    ts.add_argument("--profile-irpe", default="rpe-2.0-product-ctx-1-k", help="the profiled variant ('' for none)")
    ts.add_argument("--profile-precision", default="fp32", choices=PRECISIONS)
    ts.add_argument("--profile-steps", type=int, default=3)
    ts.add_argument("--top", type=int, default=25, help="operators listed by the profile")
    _with_reference(ts)
    data = sub.add_parser("data", parents=common, help="data pipeline throughput")
    data.add_argument("--images", type=int, default=64)
    data.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    data.add_argument("--step-seconds", type=float, help="a measured training step, for the consumption rate")
    inf = sub.add_parser("infer", parents=common, help="inference throughput")
    inf.add_argument("--backbone", default="resnet50")
    inf.add_argument("--compile", action="store_true", help="torch.compile the model")
    inf.add_argument("--height", type=int, default=800)
    inf.add_argument("--width", type=int, default=1066)
    inf.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    inf.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    _with_reference(inf)
    ev = sub.add_parser("eval", parents=common, help="COCO evaluation time")
    ev.add_argument("--images", type=int, default=5000)
    ev.add_argument("--dets", type=int, default=100)
    sub.add_parser("matcher", parents=common, help="Hungarian matching time")
    sub.add_parser("all", parents=common, help="every benchmark with its defaults")
    return parser


def _defaults(name: str) -> argparse.Namespace:
    """A sub-command's options at their defaults (for ``all``)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name].parse_args([])


def main(argv=None) -> int:
    args = parse_command_line(build_parser(), argv)
    import torch

    from ..core.runtime import resolve_device
    from ..core.errors import UsageError
    from ..core.names import KERNELS

    device = str(resolve_device(args.device or "auto", at="--device"))
    if args.threads:
        torch.set_num_threads(args.threads)
    for kernel in getattr(args, "kernels", None) or [getattr(args, "kernel", "auto")]:
        if kernel not in KERNELS:
            raise UsageError(f"--kernel(s) {kernel!r} is not an attention kernel; one of {', '.join(KERNELS)}")
    rep, cmd, as_json = args.repeats, args.command, args.json
    pick = (lambda name: args if cmd == name else _defaults(name))
    if cmd in ("encoder", "all"):
        from ..benchmark import encoder

        e = pick("encoder")
        encoder.run(e.batch, e.height, e.width, layers=e.layers, device=device, repeats=rep or 5,
                    memory=not e.no_memory, as_json=as_json, kernels=tuple(e.kernels), reference=e.reference)
    step_seconds = None
    if cmd in ("train-step", "all"):
        from ..benchmark import train_step

        t = pick("train-step")
        if t.profile:
            train_step.profile(device, t.backbone, t.height, t.width, irpe=t.profile_irpe,
                               precision=t.profile_precision, kernel=t.kernel, reference=t.reference,
                               steps=t.profile_steps, top=t.top, as_json=as_json)
            return 0
        rows = train_step.run(device, t.backbone, t.height, t.width, repeats=rep or 11, memory=not t.no_memory,
                              as_json=as_json, precisions=tuple(t.precisions), kernel=t.kernel,
                              reference=t.reference, multiscale=t.multiscale, decoders=tuple(t.decoders),
                              ema=t.ema, num_groups=t.num_groups, dn_groups=t.dn_groups)
        step_seconds = rows[0][4]
    if cmd in ("data", "all"):
        from ..benchmark import data as data_bench

        d = pick("data")
        data_bench.run(tuple(d.workers), d.images, step_seconds=d.step_seconds or step_seconds, as_json=as_json)
    if cmd in ("infer", "all"):
        from ..benchmark import infer

        i = pick("infer")
        infer.run(device, i.backbone, i.height, i.width, repeats=rep or 3, as_json=as_json, compile_=i.compile,
                  batches=tuple(i.batches), dtypes=tuple(i.dtypes), reference=i.reference)
    if cmd in ("eval", "all"):
        from ..benchmark.coco_eval import benchmark_eval
        from ..benchmark.common import print_table

        v = pick("eval")
        r = benchmark_eval(v.images, v.dets)
        print_table("COCO evaluation", ["images", "detections/image", "pycocotools s", "faster-coco-eval s", "speed-up",
                                        "max |diff| of the 12 numbers"],
                    [[v.images, v.dets, r["pycocotools_s"], r["faster_coco_eval_s"], r["speedup"], r["max_abs_diff"]]],
                    as_json)
    if cmd in ("matcher", "all"):
        from ..benchmark import matcher

        matcher.run(device, repeats=rep or 20, as_json=as_json)
    return 0
