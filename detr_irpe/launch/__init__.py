"""Launching runs: local subprocesses side by side (local.py) and SLURM jobs through submitit (slurm.py); the process group itself is set up by detr_irpe.core.runtime."""
