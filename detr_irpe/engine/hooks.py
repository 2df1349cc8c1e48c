"""Hooks of the training loop: evaluation, checkpoints and the writers (JSON lines, TensorBoard,
console). Each is called by the Trainer at fixed points; order matters: evaluation first, so that
the writers see the epoch's AP, and the checkpoint last. The checkpoint is the commit point of an
epoch: a run killed before it resumes from the previous one, and the writers drop on resume what
they wrote past it (log lines of later epochs, TensorBoard points of later steps), so that every
epoch and step is recorded exactly once however often the run is killed."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from ..evaluation.names import METRIC_NAMES
from ..evaluation.loop import evaluate
from .monitor import step_line

log = logging.getLogger(__name__)


class Hook:
    def before_train(self, trainer) -> None:
        pass

    def after_step(self, trainer, scalars: dict) -> None:
        pass

    def after_epoch(self, trainer, record: dict) -> None:
        pass

    def after_train(self, trainer) -> None:
        pass


class EvalHook(Hook):
    """COCO AP on the validation split every ``eval_every`` epochs and after the last; marks the
    record ``best`` when the AP is the best so far."""

    def after_epoch(self, trainer, record):
        tc, epoch = trainer.cfg.train, record["epoch"]
        if epoch % tc.eval_every and epoch != tc.epochs:
            return
        ec = trainer.cfg.eval
        metrics = evaluate(trainer.model, trainer.postprocess, trainer.val_loader, trainer.val_set.coco, trainer.device,
                           tc.amp, ec.backend, ec.per_category, progress=sys.stderr.isatty(),
                           channels_last=tc.channels_last)
        record.update({k: metrics[k] for k in METRIC_NAMES if k in metrics})
        if "per_category" in metrics:
            record["per_category_AP"] = metrics["per_category"]
        record.update(eval_batch_size=ec.batch_size * trainer.dist.world_size, eval_backend=ec.backend,
                      eval_seconds=metrics.get("eval_seconds"), inference_images_per_s=metrics.get("inference_images_per_s"))
        if record.get("AP") is not None and record["AP"] > trainer.progress.best_ap:
            trainer.progress.best_ap = record["AP"]
            record["best"] = True


class CheckpointHook(Hook):
    """``checkpoint_best.pth`` when the epoch's AP is the best, then ``checkpoint.pth`` (both
    atomically; the latter commits the epoch, so it is written last)."""

    def after_epoch(self, trainer, record):
        state = trainer.state_dict()
        if record.get("best"):
            trainer.save("checkpoint_best.pth", state)
        trainer.save("checkpoint.pth", state)
        stale = trainer.out / "checkpoint_interrupted.pth"
        if trainer.is_main and stale.exists():
            stale.unlink()


class JsonlWriter(Hook):
    """One JSON line per epoch in ``log.jsonl``. A resumed run first drops the lines of epochs past
    its checkpoint (and a line torn by a kill), which it is about to write again."""

    def before_train(self, trainer):
        path = trainer.out / "log.jsonl"
        if not trainer.is_main or not path.is_file():
            return
        from ..utils.io import atomic_write_text

        lines = path.read_text().splitlines()
        kept = [line for line in lines if _epoch_of(line) is not None and _epoch_of(line) <= trainer.progress.epoch]
        if kept != lines:
            log.info("log.jsonl: %d line(s) past the checkpoint (epoch %d) dropped", len(lines) - len(kept),
                     trainer.progress.epoch)
            atomic_write_text(path, "".join(line + "\n" for line in kept))

    def after_epoch(self, trainer, record):
        if not trainer.is_main:
            return
        path = trainer.out / "log.jsonl"
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

            self.writer = SummaryWriter(str(trainer.out / "tensorboard"), purge_step=trainer.progress.update + 1)

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
    (parameter counts, the encodings, the machine)."""

    def before_train(self, trainer):
        if not trainer.is_main:
            return
        import torch

        from ..utils.io import atomic_write_json

        model, cfg = trainer.model, trainer.cfg
        irpe = sum(p.numel() for n, p in model.named_parameters() if "lookup_table" in n)
        info = {"parameters": sum(p.numel() for p in model.parameters()),
                "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                "irpe_parameters": irpe, "irpe": str(cfg.model.irpe) if cfg.model.irpe else None,
                "position_embedding": cfg.model.position_embedding, "encoder_abs_pos": cfg.model.encoder_abs_pos,
                "backbone": cfg.model.backbone.name, "seed": cfg.train.seed, "epochs": cfg.train.epochs,
                "world_size": trainer.dist.world_size, "device": str(trainer.device),
                "dist_backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
                "device_name": torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else "cpu",
                "torch": torch.__version__}
        atomic_write_json(trainer.out / "run_info.json", info, indent=1)


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


def default_hooks(trainer) -> list[Hook]:
    from .writers import build_writers

    return [RunInfoWriter(), EvalHook(), JsonlWriter(), *build_writers(trainer.cfg.train.writers), ConsoleWriter(),
            CheckpointHook()]


def _epoch_of(line: str) -> int | None:
    """The epoch of a log.jsonl line; None for a line torn by a kill."""
    try:
        return int(json.loads(line)["epoch"])
    except (ValueError, KeyError, TypeError):
        return None
