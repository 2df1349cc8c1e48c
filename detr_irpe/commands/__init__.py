"""The ``detr-irpe`` commands: one module per command, each with ``build_parser()`` and
``main(argv)``. Modules import only the standard library at the top, so that ``--help`` answers
before torch is loaded."""

from __future__ import annotations

import importlib
import sys

#: command name -> one-line summary (the module is the name with '-' as '_')
COMMANDS = {
    "train": "train DETR (with or without iRPE) from a config and key=value overrides",
    "evaluate": "COCO box AP of a model: a checkpoint, URL, zoo name or Hugging Face folder",
    "predict": "detections of a model on image files, as COCO results",
    "visualize": "figures: detections, encoder attention, learned iRPE tables",
    "export": "export a model to ONNX and check it against PyTorch",
    "ablate": "run every variant x seed of an ablation file",
    "compare": "compare runs: tables with confidence intervals, plots",
    "analyze": "error analysis of detections: per-class AP, PR curves, confusions, error types",
    "attention": "mean attention distance per encoder layer and head, attention by relative offset",
    "benchmark": "speed and memory benchmarks that print figures",
    "zoo": "the released DETR / iRPE-DETR models and the command that evaluates each",
    "demo": "the main job: two tiny DETRs (absolute, absolute + iRPE) on the synthetic dataset",
    "smoke": "one training step of every iRPE variant on a small model",
    "submit": "submit a training run to SLURM (submitit)",
    "check-dataset": "check a COCO-format dataset before training",
    "make-synthetic": "generate the built-in synthetic COCO-format dataset",
}


def command_module(name: str):
    """The module of command ``name``."""
    return importlib.import_module(f"{__name__}.{name.replace('-', '_')}")


def run_tool(name: str, argv=None) -> int:
    """Run command ``name`` with ``argv`` (default: the process's arguments); user errors become
    one line and exit status 2."""
    from .cli import run_main

    return run_main(command_module(name).main, argv)


def main(argv=None) -> int:
    """``detr-irpe COMMAND [options]``: run one of the commands."""
    try:
        return dispatch(sys.argv[1:] if argv is None else list(argv))
    except BrokenPipeError:  # the reader of the output went away (``detr-irpe zoo | head``)
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def dispatch(argv: list[str]) -> int:
    """Run the command that ``argv`` names with the rest of ``argv``; without one, list them."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {summary}" for name, summary in COMMANDS.items()]
        print("usage: detr-irpe COMMAND [options] [key=value ...]\n\ncommands:\n" + "\n".join(lines)
              + "\n\n'detr-irpe COMMAND --help' describes one command. Also: python -m detr_irpe COMMAND, "
              "torchrun ... -m detr_irpe train ...")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        near = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        print(f"error: unknown command {name!r}{hint}; one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    sys.argv[0] = f"detr-irpe {name}"
    return run_tool(name, rest)
