"""``detr-irpe submit``: a training run as a SLURM job through submitit."""

from __future__ import annotations

from .cli import Parser, parse_command_line
from .slurm_options import add_slurm_arguments, slurm_job

USAGE = """Submit a training run to SLURM through submitit (the same entry point as detr-irpe train).

  detr-irpe submit --nodes 2 --gpus-per-node 8 --partition gpu --timeout-min 4320 \\
      --config configs/detr_r50_irpe_product_300e.yaml data.root=/data/coco train.output_dir=/ckpt/irpe300

Every task joins one process group (NCCL); a job that is preempted or reaches its time limit saves
its state and is requeued, continuing with --resume auto. ``--executor local`` runs the same job
on this machine (for trying the set-up without a cluster).
"""


def build_parser() -> Parser:
    parser = Parser(description=USAGE)
    parser.add_argument("--executor", choices=["slurm", "local"], default="slurm",
                        help="slurm, or local: the same job on this machine")
    add_slurm_arguments(parser)
    parser.add_argument("--wait", action="store_true", help="wait for the job and report its result")
    return parser


def main(argv=None) -> int:
    args, train_argv = build_parser().parse_known_args(argv)
    import functools

    from ..launch.slurm import submit_training
    from . import run_tool
    from .train import build_parser as train_parser

    parse_command_line(train_parser(), train_argv)  # fail here, not in the queue, on a bad command line
    job = slurm_job(args)
    submitted = submit_training(job, train_argv, functools.partial(run_tool, "train"), local=args.executor == "local")
    print(f"submitted job {submitted.job_id}; logs in {job.log_folder(submitted.job_id)}")
    if args.wait:
        status = submitted.result()
        print(f"job {submitted.job_id} finished with status {status}")
    return 0
