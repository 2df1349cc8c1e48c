#!/usr/bin/env python
"""Benchmarks that print figures (Markdown tables, or JSON with --json). The variants of each
table run side by side in one process, interleaved, so that their ratios hold on a noisy machine.

  encoder     iRPE attention cost in DETR-R50's encoder shape (forward, forward + backward, memory)
  train-step  DETR-R50 training step, no iRPE vs rpe-2.0-product-ctx-1-k (s/step, images/s, memory)
  data        the training data pipeline alone, per loader worker, beside the step's consumption
  infer       inference images/s at batch 1 and 4, fp32 and bf16, optionally compiled
  eval        COCO evaluation: faster-coco-eval against pycocotools (5,000 images x 100 detections)
  matcher     Hungarian matching time per batch
  all         every one of them
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repetitions per variant (median reported)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    sub = parser.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encoder", help="iRPE attention cost in the encoder")
    enc.add_argument("--batch", type=int, default=2)
    enc.add_argument("--height", type=int, default=25)
    enc.add_argument("--width", type=int, default=34)
    enc.add_argument("--layers", type=int, default=6)
    enc.add_argument("--kernel", default="auto", choices=["auto", "plain", "fused", "sdpa"])
    enc.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    ts = sub.add_parser("train-step", help="DETR training step")
    ts.add_argument("--backbone", default="resnet50")
    ts.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    ts.add_argument("--no-memory", action="store_true")
    data = sub.add_parser("data", help="data pipeline throughput")
    data.add_argument("--images", type=int, default=64)
    data.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    data.add_argument("--step-seconds", type=float, help="a measured training step, for the consumption rate")
    inf = sub.add_parser("infer", help="inference throughput")
    inf.add_argument("--backbone", default="resnet50")
    inf.add_argument("--compile", action="store_true", help="torch.compile the model")
    inf.add_argument("--height", type=int, default=800)
    inf.add_argument("--width", type=int, default=1066)
    inf.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    inf.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ev = sub.add_parser("eval", help="COCO evaluation time")
    ev.add_argument("--images", type=int, default=5000)
    ev.add_argument("--dets", type=int, default=100)
    sub.add_parser("matcher", help="Hungarian matching time")
    sub.add_parser("all", help="every benchmark with its defaults")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rep = args.repeats
    cmd = args.command
    if cmd in ("encoder", "all"):
        from detr_irpe.benchmark import encoder

        e = args if cmd == "encoder" else argparse.Namespace(batch=2, height=25, width=34, layers=6, kernel="auto",
                                                            no_memory=False)
        encoder.run(e.batch, e.height, e.width, layers=e.layers, device=args.device, repeats=rep or 5,
                    memory=not e.no_memory, as_json=args.json, kernel=e.kernel)
    step_seconds = None
    if cmd in ("train-step", "all"):
        from detr_irpe.benchmark import train_step

        t = args if cmd == "train-step" else argparse.Namespace(backbone="resnet50", amp="none", no_memory=False)
        rows = train_step.run(args.device, t.backbone, repeats=rep or 11, memory=not t.no_memory, as_json=args.json,
                              amp=t.amp)
        step_seconds = rows[0][1]
    if cmd in ("data", "all"):
        from detr_irpe.benchmark import data as data_bench

        d = args if cmd == "data" else argparse.Namespace(images=64, workers=[0, 1, 2], step_seconds=None)
        data_bench.run(tuple(d.workers), d.images, step_seconds=d.step_seconds or step_seconds, as_json=args.json)
    if cmd in ("infer", "all"):
        from detr_irpe.benchmark import infer

        i = args if cmd == "infer" else argparse.Namespace(backbone="resnet50", compile=False, height=800, width=1066,
                                                           batches=[1, 4], dtypes=["fp32", "bf16"])
        infer.run(args.device, i.backbone, i.height, i.width, repeats=rep or 3, as_json=args.json, compile_=i.compile,
                  batches=tuple(i.batches), dtypes=tuple(i.dtypes))
    if cmd in ("eval", "all"):
        from detr_irpe.benchmark.coco_eval import benchmark_eval
        from detr_irpe.benchmark.common import print_table

        v = args if cmd == "eval" else argparse.Namespace(images=5000, dets=100)
        r = benchmark_eval(v.images, v.dets)
        print_table("COCO evaluation", ["images", "detections/image", "pycocotools s", "faster-coco-eval s", "speed-up",
                                        "max |diff| of the 12 numbers"],
                    [[v.images, v.dets, r["pycocotools_s"], r["faster_coco_eval_s"], r["speedup"], r["max_abs_diff"]]],
                    args.json)
    if cmd in ("matcher", "all"):
        from detr_irpe.benchmark import matcher

        matcher.run(args.device, repeats=rep or 20, as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
