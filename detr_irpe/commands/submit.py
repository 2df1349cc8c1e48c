"""``detr-irpe submit``: a training run as a SLURM job through submitit."""

from __future__ import annotations

from pathlib import Path

from ..cli import Parser, parse_command_line

USAGE = """Submit a training run to SLURM through submitit (the same entry point as detr-irpe train).

  detr-irpe submit --nodes 2 --gpus-per-node 8 --partition gpu --timeout-min 4320 \\
      --config configs/detr_r50_irpe_product_300e.yaml data.root=/data/coco train.output_dir=/ckpt/irpe300

Every task joins one process group (NCCL); a job that is preempted or reaches its time limit saves
its state and is requeued, continuing with --resume auto. ``--executor local`` runs the same job
on this machine (for trying the set-up without a cluster).
"""


def build_parser() -> Parser:
    parser = Parser(description=USAGE)
    parser.add_argument("--executor", choices=["slurm", "local"], default="slurm")
    parser.add_argument("--job-dir", default="outputs/submitit/%j", help="submitit's logs and pickles (%%j: job id)")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=8, help="also the number of tasks per node")
    parser.add_argument("--cpus-per-task", type=int, default=10)
    parser.add_argument("--partition", help="SLURM partition")
    parser.add_argument("--account", help="SLURM account")
    parser.add_argument("--timeout-min", type=int, default=4320)
    parser.add_argument("--name", default="detr_irpe")
    parser.add_argument("--wait", action="store_true", help="wait for the job and report its result")
    return parser


def main(argv=None) -> int:
    args, train_argv = build_parser().parse_known_args(argv)

    import submitit

    from ..launch.slurm import TrainTask
    from .train import build_parser as train_parser

    parse_command_line(train_parser(), train_argv)  # fail here, not in the queue, on a bad command line
    executor = submitit.AutoExecutor(folder=args.job_dir, cluster="local" if args.executor == "local" else None)
    params = dict(timeout_min=args.timeout_min, name=args.name, nodes=args.nodes)
    if args.executor == "slurm":
        params.update(tasks_per_node=args.gpus_per_node, gpus_per_node=args.gpus_per_node,
                      cpus_per_task=args.cpus_per_task, slurm_signal_delay_s=120)
        if args.partition:
            params["slurm_partition"] = args.partition
        if args.account:
            params["slurm_account"] = args.account
    else:
        params["tasks_per_node"] = 1
    executor.update_parameters(**params)
    job = executor.submit(TrainTask(train_argv))
    print(f"submitted job {job.job_id}; logs in {Path(str(args.job_dir).replace('%j', str(job.job_id)))}")
    if args.wait:
        status = job.result()
        print(f"job {job.job_id} finished with status {status}")
    return 0
