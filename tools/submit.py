#!/usr/bin/env python
"""Submit a training run to SLURM through submitit (the same entry point as tools/train.py).

  python tools/submit.py --nodes 2 --gpus-per-node 8 --partition gpu --timeout-min 4320 \\
      --config configs/detr_r50_irpe_product_300e.yaml data.root=/data/coco train.output_dir=/ckpt/irpe300

Every task joins one process group (NCCL); a job that is preempted or reaches its time limit saves
its state and is requeued, continuing with --resume auto. ``--executor local`` runs the same job
on this machine (for trying the set-up without a cluster).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detr_irpe.cli import run_main  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    args, train_argv = parser.parse_known_args(argv)

    import submitit

    from detr_irpe.engine.launch import TrainTask, train_parser

    train_parser().parse_args(train_argv)  # fail here, not in the queue, on a bad command line
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


if __name__ == "__main__":
    sys.exit(run_main(main))
