"""Launching a training run as a SLURM job (detr-irpe submit): the picklable task submitit runs
and requeues."""

from __future__ import annotations


class TrainTask:
    """A picklable training job; ``checkpoint`` makes submitit requeue it, resuming automatically."""

    def __init__(self, argv: list[str]):
        self.argv = list(argv)

    def __call__(self) -> int:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export()  # RANK, WORLD_SIZE, MASTER_ADDR, ...
        argv = self.argv if "--resume" in self.argv else self.argv + ["--resume", "auto"]
        from ..commands import run_tool

        status = run_tool("train", argv)
        if status not in (0, 3):
            raise RuntimeError(f"training failed with exit status {status}")
        return status

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(TrainTask(self.argv))
