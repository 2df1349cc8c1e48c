"""Training runs as SLURM jobs through submitit (detr-irpe submit, ablate --launcher slurm): the job's
resources, the picklable task submitit runs and requeues, and the submission."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SlurmJob:
    """The resources and names of one SLURM training job."""

    nodes: int = 1
    #: GPUs per node, also the number of tasks (processes) per node
    gpus_per_node: int = 8
    cpus_per_task: int = 10
    partition: str | None = None
    account: str | None = None
    timeout_min: int = 4320
    name: str = "detr_irpe"
    #: submitit's logs and pickles (``%j``: the job id)
    job_dir: str = "outputs/submitit/%j"

    def submit_args(self) -> list[str]:
        """The ``detr-irpe submit`` options that ask for this job."""
        args = [f"--nodes={self.nodes}", f"--gpus-per-node={self.gpus_per_node}",
                f"--cpus-per-task={self.cpus_per_task}", f"--timeout-min={self.timeout_min}",
                f"--name={self.name}", f"--job-dir={self.job_dir}"]
        args += [f"--partition={self.partition}"] if self.partition else []
        args += [f"--account={self.account}"] if self.account else []
        return args

    def log_folder(self, job_id: str) -> Path:
        return Path(str(self.job_dir).replace("%j", str(job_id)))


class TrainTask:
    """A picklable training job: ``run(argv)`` (the train command, given by the caller) with
    ``--resume auto``, so that a requeued job continues; ``checkpoint`` makes submitit requeue it."""

    def __init__(self, argv: list[str], run):
        self.argv, self.run = list(argv), run

    def __call__(self) -> int:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export()  # RANK, WORLD_SIZE, MASTER_ADDR, ...
        argv = self.argv if "--resume" in self.argv else self.argv + ["--resume", "auto"]
        status = self.run(argv)
        if status not in (0, 3):
            raise RuntimeError(f"training failed with exit status {status}")
        return status

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(TrainTask(self.argv, self.run))


def submit_training(job: SlurmJob, argv: list[str], run, local: bool = False):
    """Submit ``run(argv)`` as ``job`` (``local``: on this machine, through submitit's local
    executor); returns submitit's job."""
    import submitit

    executor = submitit.AutoExecutor(folder=job.job_dir, cluster="local" if local else None)
    params = dict(timeout_min=job.timeout_min, name=job.name, nodes=job.nodes)
    if local:
        params["tasks_per_node"] = 1
    else:
        params.update(tasks_per_node=job.gpus_per_node, gpus_per_node=job.gpus_per_node,
                      cpus_per_task=job.cpus_per_task, slurm_signal_delay_s=120)
        if job.partition:
            params["slurm_partition"] = job.partition
        if job.account:
            params["slurm_account"] = job.account
    executor.update_parameters(**params)
    return executor.submit(TrainTask(argv, run))
