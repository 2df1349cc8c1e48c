"""The SLURM options of ``submit`` and ``ablate --launcher slurm``, declared once."""

from __future__ import annotations

import argparse


def add_slurm_arguments(parser: argparse.ArgumentParser, per_run_names: bool = False) -> None:
    """The job's resources as options (``per_run_names``: the job name and folder are each run's own,
    not options)."""
    group = parser.add_argument_group("SLURM")
    group.add_argument("--nodes", type=int, default=1, help="nodes per job")
    group.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node, also the tasks per node")
    group.add_argument("--cpus-per-task", type=int, default=10)
    group.add_argument("--partition", help="SLURM partition")
    group.add_argument("--account", help="SLURM account")
    group.add_argument("--timeout-min", type=int, default=4320, help="time limit per job in minutes")
    if not per_run_names:
        group.add_argument("--name", default="detr_irpe", help="job name")
        group.add_argument("--job-dir", default="outputs/submitit/%j", help="submitit's logs and pickles (%%j: job id)")


def slurm_job(args: argparse.Namespace, **names):
    """The SlurmJob the parsed options ask for; ``names`` (name, job_dir) for per-run names."""
    from ..launch.slurm import SlurmJob

    fields = dict(nodes=args.nodes, gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task,
                  partition=args.partition, account=args.account, timeout_min=args.timeout_min)
    if hasattr(args, "name"):
        fields.update(name=args.name, job_dir=args.job_dir)
    return SlurmJob(**fields, **names)
