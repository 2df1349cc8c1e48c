"""``detr-irpe export``: export a trained checkpoint (absolute encoding only or with iRPE) to ONNX for one fixed input"""

from __future__ import annotations

import json
import time

from .cli import (Parser, add_config_argument, add_device_argument, add_output_dir_argument, add_overrides_argument,
                  add_source_argument, check_output_dir, parse_command_line)
from .naming import model_file_name

#: where the .onnx file goes without --output-dir
OUTPUT_DIR = "outputs/export"

USAGE = """Export a trained checkpoint (absolute encoding only or with iRPE) to ONNX for one fixed input
size, then check with onnxruntime that the exported model gives PyTorch's outputs.

  detr-irpe export --checkpoint outputs/tiny_irpe/checkpoint_best.pth --height 128 --width 128
  detr-irpe export --checkpoint detr-r50.pth --height 800 --width 1216 --output-dir onnx --exporter torchscript

Writes <name>.onnx into --output-dir (default outputs/export) and prints its path; <name> is the
model source's: the run folder's name for a run's checkpoint*.pth (tiny_irpe.onnx above), else the
file's stem (detr-r50.onnx) or the zoo name.

The ONNX model has one input, ``images`` (1, 3, height, width) float32: an image resized to exactly
that size and normalised with the ImageNet mean and std (no padding mask: every pixel counts as
image), and two outputs, ``pred_logits`` and ``pred_boxes`` (normalised cx, cy, w, h).

The export traces the model on the CPU. The check runs the ONNX model (onnxruntime, CPU) and the
PyTorch model (on --device, in full float32) on a random input and passes when every output
element satisfies |onnx - torch| <= atol + rtol * |torch| (defaults 1e-4 and 1e-3); it prints the
max abs diffs and PASS or FAIL. Exit status: 0 exported (and PASS), 1 FAIL, 2 bad input.
"""


def build_parser() -> Parser:
    from ..inference.export_options import ATOL, EXPORTERS, RTOL

    parser = Parser(description=USAGE)
    add_source_argument(parser)
    parser.add_argument("--height", type=int, required=True, help="input height in pixels")
    parser.add_argument("--width", type=int, required=True, help="input width in pixels")
    add_output_dir_argument(parser, OUTPUT_DIR, "folder of the .onnx file, named after the model source")
    parser.add_argument("--exporter", choices=EXPORTERS, default="dynamo",
                        help="dynamo (torch.export based, the default) or torchscript (legacy tracer, faster)")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random check input")
    parser.add_argument("--atol", type=float, default=ATOL, help=f"absolute tolerance of the check ({ATOL:g})")
    parser.add_argument("--rtol", type=float, default=RTOL, help=f"relative tolerance of the check ({RTOL:g})")
    add_config_argument(parser)
    add_device_argument(parser, "where PyTorch runs the parity check (the export traces on the CPU)")
    add_overrides_argument(parser)
    return parser


def main(argv=None) -> int:
    args = parse_command_line(build_parser(), argv)
    from ..core.errors import UsageError
    from ..core.logs import setup_logging

    setup_logging()

    from ..inference.export import check_onnx, export_onnx, onnx_info
    from ..hub.loader import load_model

    if args.atol < 0 or args.rtol < 0:
        raise UsageError("--atol and --rtol must be >= 0")
    out = check_output_dir(args.output_dir)
    loaded = load_model(args.checkpoint, args.overrides, args.device, args.config)
    start = time.time()
    path = export_onnx(loaded.model, out / model_file_name(args.checkpoint, ".onnx"), args.height, args.width,
                       args.exporter, args.opset)
    info = onnx_info(path)
    print(f"exported {path} ({args.exporter} exporter, opset {info['opset']}, {info['nodes']} nodes, "
          f"{info['bytes'] / 2**20:.1f} MiB, {time.time() - start:.1f} s); model {loaded.label}")
    print(f"  input  images {info['inputs'].get('images')}; outputs "
          + ", ".join(f"{k} {v}" for k, v in info["outputs"].items()))
    if args.no_check:
        print(json.dumps({"onnx": str(path)}))
        return 0
    loaded.model.to(loaded.device)  # the export moved it to the CPU
    report = check_onnx(loaded.model, path, args.height, args.width, args.seed, args.atol, args.rtol)
    print("\n".join(report.lines()))
    print(json.dumps({"onnx": str(path), "passed": report.passed, "max_abs_diff": report.max_abs_diff,
                      "atol": report.atol, "rtol": report.rtol, "device": report.device}))
    return 0 if report.passed else 1
