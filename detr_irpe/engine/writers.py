"""The writers of a training run: ``log.jsonl``, ``run_info.json`` and the console, which every run
writes, and the optional metric writers a config chooses (``train.writers``): TensorBoard, Weights
& Biases and MLflow. W&B and MLflow are not dependencies of this project: each is imported only
when chosen, when the trainer is built (before anything is written), and a missing one is a config
error naming the package to install."""

from __future__ import annotations

import importlib
import json
import logging
import os
import time

import torch

from ..config import ConfigError, config_to_dict, flat_config
from ..core.io import atomic_write_json, atomic_write_text
from ..core.names import METRIC_NAMES
from ..core.runtime import is_distributed
from .hooks import Hook
from .monitor import step_line

log = logging.getLogger(__name__)


def import_writer_package(name: str):
    """The package of writer ``name``, or a ConfigError saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ConfigError(f"train.writers includes {name}, but the {name} package is not installed "
                          f"(pip install {name}, or leave {name} out of train.writers)") from None


def numbers(record: dict, prefix: str = "") -> dict:
    """The numeric entries of ``record`` (booleans left out), keys prefixed."""
    return {f"{prefix}{k}": float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


class JsonlWriter(Hook):
    """One JSON line per epoch in ``log.jsonl``. A resumed run first drops the lines of epochs past
    its checkpoint (and a line torn by a kill), which it is about to write again."""

    def before_train(self, trainer):
        path = trainer.folder / trainer.folder.EPOCH_LOG
        if not trainer.is_main or not path.is_file():
            return
        lines = path.read_text().splitlines()
        kept = [line for line in lines if _epoch_of(line) is not None and _epoch_of(line) <= trainer.progress.epoch]
        if kept != lines:
            log.info("log.jsonl: %d line(s) past the checkpoint (epoch %d) dropped", len(lines) - len(kept),
                     trainer.progress.epoch)
            atomic_write_text(path, "".join(line + "\n" for line in kept))

    def after_epoch(self, trainer, record):
        if not trainer.is_main:
            return
        path = trainer.folder / trainer.folder.EPOCH_LOG
        with open(path, "a") as f:
            f.write(json.dumps({**record, "time": time.time()}) + "\n")
            f.flush()
            os.fsync(f.fileno())


class TensorBoardWriter(Hook):
    """Scalars in ``tensorboard/``, all against the optimizer-update counter: training losses and
    rates per log interval, an epoch's record (with ``epoch`` itself) at its last update. Points
    are flushed as they are written, and a run (resumed or not) starts with ``purge_step`` at the
    update after its checkpoint, so TensorBoard drops points a killed run wrote past it."""

    def __init__(self):
        self.writer = None

    def before_train(self, trainer):
        if trainer.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(trainer.folder / trainer.folder.TENSORBOARD), purge_step=trainer.progress.update + 1)

    def after_step(self, trainer, scalars):
        if self.writer:
            for k, v in scalars.items():
                self.writer.add_scalar(f"train/{k}", v, trainer.progress.update)
            self.writer.flush()

    def after_epoch(self, trainer, record):
        if self.writer:
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    group = "eval" if k in METRIC_NAMES else "epoch"
                    self.writer.add_scalar(f"{group}/{k}", v, trainer.progress.update)
            self.writer.flush()

    def after_train(self, trainer):
        if self.writer:
            self.writer.close()


class RunInfoWriter(Hook):
    """``run_info.json``: what a comparison needs to know about a run without loading its model
    (parameter counts, the encodings, the decoder, the machine), and why it ended early, if it did."""

    def after_train(self, trainer):
        if trainer.is_main and trainer.progress.stopped_early:
            path = trainer.folder / trainer.folder.RUN_INFO
            info = json.loads(path.read_text())
            atomic_write_json(path, {**info, "stopped_early": trainer.progress.stopped_early}, indent=1)

    def before_train(self, trainer):
        if not trainer.is_main:
            return
        model, cfg = trainer.model, trainer.cfg
        irpe = sum(p.numel() for n, p in model.named_parameters() if "lookup_table" in n)
        info = {"parameters": sum(p.numel() for p in model.parameters()),
                "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                "irpe_parameters": irpe, "irpe": str(cfg.model.irpe) if cfg.model.irpe else None,
                "position_embedding": cfg.model.position_embedding, "encoder_abs_pos": cfg.model.encoder_abs_pos,
                "decoder": cfg.model.decoder, "ema": cfg.train.ema,
                "backbone": cfg.model.backbone.name, "seed": cfg.train.seed, "epochs": cfg.train.epochs,
                "world_size": trainer.dist.world_size, "device": str(trainer.device),
                "dist_backend": torch.distributed.get_backend() if is_distributed() else None,
                "device_name": torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else "cpu",
                "torch": torch.__version__, "stopped_early": trainer.progress.stopped_early}
        atomic_write_json(trainer.folder / trainer.folder.RUN_INFO, info, indent=1)


class ConsoleWriter(Hook):
    """A concise line per epoch, and one per log interval with the speed, the ETAs and peak memory."""

    def before_train(self, trainer):
        if trainer.is_main:
            tc = trainer.cfg.train
            log.info("training %s for %d epochs (%d batches of %d per process, %d process(es)) into %s",
                     trainer.cfg.model.irpe or "DETR without iRPE", tc.epochs, trainer.batches_per_epoch,
                     tc.batch_size, trainer.dist.world_size, trainer.out)

    def after_step(self, trainer, scalars):
        # a line per log interval also under a progress bar: train.log and SLURM logs show no bar
        if trainer.is_main:
            p = trainer.progress
            log.info(step_line(p.epoch + 1, trainer.cfg.train.epochs, p.step_in_epoch, trainer.batches_per_epoch,
                               p.update, scalars))

    def after_epoch(self, trainer, record):
        if not trainer.is_main:
            return
        parts = [f"epoch {record['epoch']}/{trainer.cfg.train.epochs}",
                 f"loss {record.get('train_loss', float('nan')):.4f}",
                 f"(ce {record.get('train_loss_ce', float('nan')):.3f}, l1 {record.get('train_loss_bbox', float('nan')):.3f}, "
                 f"giou {record.get('train_loss_giou', float('nan')):.3f})",
                 f"lr {record['lr']:.2e}", f"{record['train_images_per_s']:.1f} img/s", f"{record['train_seconds']:.0f} s"]
        if "AP" in record:
            parts.append(f"| AP {record['AP']:.3f} AP50 {record['AP50']:.3f} AP75 {record['AP75']:.3f}"
                         + (" (best)" if record.get("best") else ""))
        log.info(" ".join(parts))


class WandbWriter(Hook):
    """Weights & Biases: the config, training scalars per log interval and each epoch's record,
    all against the optimizer-update counter; the run is named after the output folder."""

    def __init__(self):
        self.wandb = import_writer_package("wandb")
        self.run = None

    def before_train(self, trainer):
        if trainer.is_main:
            self.run = self.wandb.init(project=trainer.cfg.train.experiment, name=trainer.out.name,
                                       dir=str(trainer.out), config=config_to_dict(trainer.cfg), resume="allow")

    def after_step(self, trainer, scalars):
        if self.run is not None:
            self.run.log(numbers(scalars, "train/"), step=trainer.progress.update)

    def after_epoch(self, trainer, record):
        if self.run is not None:
            self.run.log(numbers(record, "epoch/"), step=trainer.progress.update)

    def after_train(self, trainer):
        if self.run is not None:
            self.run.finish()


class MLflowWriter(Hook):
    """MLflow: the config as parameters, training scalars per log interval and each epoch's
    record as metrics against the optimizer-update counter, in experiment ``train.experiment``
    (the tracking URI comes from MLflow's own ``MLFLOW_TRACKING_URI``)."""

    def __init__(self):
        self.mlflow = import_writer_package("mlflow")
        self.active = False

    def before_train(self, trainer):
        if trainer.is_main:
            self.mlflow.set_experiment(trainer.cfg.train.experiment)
            self.mlflow.start_run(run_name=trainer.out.name)
            self.mlflow.log_params({k: str(v)[:500] for k, v in flat_config(trainer.cfg).items()})
            self.active = True

    def after_step(self, trainer, scalars):
        if self.active:
            self.mlflow.log_metrics(numbers(scalars, "train_"), step=trainer.progress.update)

    def after_epoch(self, trainer, record):
        if self.active:
            self.mlflow.log_metrics(numbers(record, "epoch_"), step=trainer.progress.update)

    def after_train(self, trainer):
        if self.active:
            self.mlflow.end_run()
            self.active = False


def build_writers(names) -> list[Hook]:
    """One writer hook per name in ``train.writers``."""
    classes = {"tensorboard": TensorBoardWriter, "wandb": WandbWriter, "mlflow": MLflowWriter}
    return [classes[name]() for name in names]


def _epoch_of(line: str) -> int | None:
    """The epoch of a log.jsonl line; None for a line torn by a kill."""
    try:
        return int(json.loads(line)["epoch"])
    except (ValueError, KeyError, TypeError):
        return None
