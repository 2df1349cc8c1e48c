"""``detr-irpe ablate``: every variant x seed of an ablation file, each into its own folder of one study."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..core.errors import UsageError
from .cli import Parser, add_overrides_argument, parse_command_line
from .slurm_options import add_slurm_arguments, slurm_job

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
    add_slurm_arguments(parser, per_run_names=True)
    add_overrides_argument(parser)
    return parser


def main(argv=None) -> int:
    args = parse_command_line(build_parser(), argv)
    from ..analysis.ablation import load_ablation, run_specs, shell_command, write_study
    from ..engine.run_folder import RunFolder
    from ..launch.local import child_env, run_local
    from ..core.logs import setup_logging

    setup_logging()

    ab = load_ablation(args.ablation)
    study = Path(args.study_dir or f"outputs/ablations/{ab.name}")
    specs = run_specs(ab, study, args.overrides, args.only)
    if args.only and not specs:
        raise UsageError(f"--only {' '.join(args.only)}: no such variant in {args.ablation} ({', '.join(ab.variants)})")
    print(f"study {ab.name}: {len(ab.variants)} variants x {len(ab.seeds)} seeds = {len(specs)} runs in {study}")
    commands = {}
    for spec in specs:
        if args.launcher == "torchrun":
            cmd = spec.torchrun_command(args.nproc_per_node)
        elif args.launcher == "slurm":
            job = slurm_job(args, name=f"{ab.name}-{spec.name.replace('/', '-')}",
                            job_dir=str(spec.output_dir / "submitit"))
            cmd = spec.slurm_command(job)
        else:
            cmd = spec.command()
        commands[spec.name] = cmd
    if args.dry_run:
        for spec in specs:
            print(f"# {spec.name} [{RunFolder(spec.output_dir).state(spec.epochs)}]")
            print(shell_command(commands[spec.name]))
        return 0
    write_study(ab, study, specs)
    if args.launcher == "local":
        threads = max(1, (os.cpu_count() or 1) // max(1, args.parallel))
        status = run_local(specs, parallel=args.parallel, threads=threads)
    else:
        status = {}
        for spec in specs:
            if RunFolder(spec.output_dir).state(spec.epochs) == "done":
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
