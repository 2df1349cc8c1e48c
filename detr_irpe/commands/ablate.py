"""``detr-irpe ablate``: every variant x seed of an ablation file, each into its own folder of one study."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..cli import Parser, add_overrides_argument, parse_command_line
from ..errors import UsageError

USAGE = """Run an ablation: every variant x seed of an ablation file into its own folder of one study.

  detr-irpe ablate configs/ablations/tiny_position.yaml
  detr-irpe ablate configs/ablations/coco_position.yaml --launcher slurm --nodes 1 --gpus-per-node 8 \\
      data.root=/data/coco
  detr-irpe ablate configs/ablations/coco_method.yaml --launcher torchrun --nproc-per-node 8 --dry-run

Locally runs go one after another (--parallel N for more at once); finished runs are skipped and
interrupted ones resumed, so the same command continues a study. Then: detr-irpe compare STUDY_DIR.
"""


def build_parser() -> Parser:
    parser = Parser(description=USAGE)
    parser.add_argument("ablation", help="ablation file (configs/ablations/*.yaml)")
    parser.add_argument("--study-dir", help="study folder (default: outputs/ablations/<name>)")
    parser.add_argument("--launcher", choices=["local", "torchrun", "slurm"], default="local")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--only", nargs="+", metavar="VARIANT", help="run only these variants")
    parser.add_argument("--parallel", type=int, default=1, help="local: runs at once (threads split between them)")
    parser.add_argument("--nproc-per-node", type=int, default=1, help="torchrun: processes per run")
    parser.add_argument("--nodes", type=int, default=1, help="slurm: nodes per run")
    parser.add_argument("--gpus-per-node", type=int, default=8, help="slurm: GPUs (tasks) per node")
    parser.add_argument("--partition", help="slurm partition")
    parser.add_argument("--timeout-min", type=int, default=4320, help="slurm time limit per job")
    add_overrides_argument(parser)
    return parser


def main(argv=None) -> int:
    args = parse_command_line(build_parser(), argv)
    from ..analysis.ablation import load_ablation, run_specs, shell_command, write_study
    from ..launch.local import child_env, run_local, run_state
    from ..utils.logs import setup_logging

    setup_logging()

    ab = load_ablation(args.ablation)
    study = Path(args.study_dir or f"outputs/ablations/{ab.name}")
    specs = run_specs(ab, study, args.overrides, args.only)
    if args.only and not specs:
        raise UsageError(f"--only {' '.join(args.only)}: no such variant in {args.ablation} ({', '.join(ab.variants)})")
    print(f"study {ab.name}: {len(ab.variants)} variants x {len(ab.seeds)} seeds = {len(specs)} runs in {study}")
    commands = {}
    for spec in specs:
        cmd = spec.command()
        if args.launcher == "torchrun":
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc_per_node}",
                   *cmd[1:]]  # torchrun -m detr_irpe train ...
        elif args.launcher == "slurm":
            cmd = [sys.executable, "-m", "detr_irpe", "submit", f"--nodes={args.nodes}",
                   f"--gpus-per-node={args.gpus_per_node}", f"--timeout-min={args.timeout_min}",
                   f"--job-dir={spec.output_dir / 'submitit'}", f"--name={ab.name}-{spec.name.replace('/', '-')}",
                   *([f"--partition={args.partition}"] if args.partition else []), *cmd[4:]]
        commands[spec.name] = cmd
    if args.dry_run:
        for spec in specs:
            print(f"# {spec.name} [{run_state(spec.output_dir, spec.epochs)}]")
            print(shell_command(commands[spec.name]))
        return 0
    write_study(ab, study, specs)
    if args.launcher == "local":
        threads = max(1, (os.cpu_count() or 1) // max(1, args.parallel))
        status = run_local(specs, parallel=args.parallel, threads=threads)
    else:
        status = {}
        for spec in specs:
            if run_state(spec.output_dir, spec.epochs) == "done":
                print(f"{spec.name}: done")
                continue
            print(f"{spec.name}: {shell_command(commands[spec.name])}")
            status[spec.name] = subprocess.call(commands[spec.name], env=child_env())
    failed = [n for n, s in status.items() if s]
    if failed:
        print(f"error: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"done; compare with: detr-irpe compare {study}")
    return 0
