"""Hooks of the training loop: evaluation, checkpoints and the writers (JSON lines, TensorBoard,
console). Each is called by the Trainer at fixed points; order matters (evaluation first, so
that checkpoints and writers see the epoch's AP)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from .evaluation import evaluate

log = logging.getLogger(__name__)

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


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
    """COCO AP on the validation split every ``eval_every`` epochs and after the last."""

    def after_epoch(self, trainer, record):
        tc, epoch = trainer.cfg.train, record["epoch"]
        if epoch % tc.eval_every and epoch != tc.epochs:
            return
        ec = trainer.cfg.eval
        metrics = evaluate(trainer.model, trainer.postprocess, trainer.val_loader, trainer.val_set.coco, trainer.device,
                           tc.amp, ec.backend, ec.per_category, progress=sys.stderr.isatty(),
                           channels_last=tc.channels_last)
        record.update({k: metrics[k] for k in METRIC_KEYS if k in metrics})
        if "per_category" in metrics:
            record["per_category_AP"] = metrics["per_category"]
        record.update(eval_batch_size=ec.batch_size * trainer.dist.world_size, eval_backend=ec.backend,
                      eval_seconds=metrics.get("eval_seconds"), inference_images_per_s=metrics.get("inference_images_per_s"))


class CheckpointHook(Hook):
    """``checkpoint.pth`` after every epoch (atomically) and ``checkpoint_best.pth`` by AP."""

    def after_epoch(self, trainer, record):
        p = trainer.progress
        ap = record.get("AP")
        better = ap is not None and ap > p.best_ap
        if better:
            p.best_ap = ap
        state = trainer.state_dict()
        trainer.save("checkpoint.pth", state)
        if better:
            trainer.save("checkpoint_best.pth", state)
            record["best"] = True
        stale = trainer.out / "checkpoint_interrupted.pth"
        if trainer.is_main and stale.exists():
            stale.unlink()


class JsonlWriter(Hook):
    """One JSON line per epoch in ``log.jsonl``."""

    def after_epoch(self, trainer, record):
        if not trainer.is_main:
            return
        path = trainer.out / "log.jsonl"
        with open(path, "a") as f:
            f.write(json.dumps({**record, "time": time.time()}) + "\n")
            f.flush()
            os.fsync(f.fileno())


class TensorBoardWriter(Hook):
    """Scalars in ``tensorboard/``: training losses and rates per log interval, metrics per epoch."""

    def __init__(self):
        self.writer = None

    def before_train(self, trainer):
        if trainer.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(trainer.out / "tensorboard"))

    def after_step(self, trainer, scalars):
        if self.writer:
            for k, v in scalars.items():
                self.writer.add_scalar(f"train/{k}", v, trainer.progress.update)

    def after_epoch(self, trainer, record):
        if self.writer:
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch":
                    group = "eval" if k in METRIC_KEYS else "epoch"
                    self.writer.add_scalar(f"{group}/{k}", v, record["epoch"])
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
                "device_name": torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else "cpu",
                "torch": torch.__version__}
        atomic_write_json(trainer.out / "run_info.json", info, indent=1)


class ConsoleWriter(Hook):
    """A concise line per epoch; without a terminal (no progress bar) also one per log interval."""

    def before_train(self, trainer):
        if trainer.is_main:
            tc = trainer.cfg.train
            log.info("training %s for %d epochs (%d batches of %d per process, %d process(es)) into %s",
                     trainer.cfg.model.irpe or "DETR without iRPE", tc.epochs, trainer.batches_per_epoch,
                     tc.batch_size, trainer.dist.world_size, trainer.out)

    def after_step(self, trainer, scalars):
        if trainer.is_main and not sys.stderr.isatty():
            p = trainer.progress
            log.info("epoch %d step %d/%d: loss %.4f lr %.2e", p.epoch + 1, p.step_in_epoch, trainer.batches_per_epoch,
                     scalars.get("loss", float("nan")), scalars["lr"])

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
    return [RunInfoWriter(), EvalHook(), CheckpointHook(), JsonlWriter(), TensorBoardWriter(), ConsoleWriter()]
