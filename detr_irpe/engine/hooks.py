"""Hooks of the training loop, and the two that decide what an epoch leaves: evaluation and the
checkpoint. The Trainer calls each hook at fixed points; order matters: evaluation first, so that
the writers (engine/writers.py) see the epoch's AP, and the checkpoint last. The checkpoint is the
commit point of an epoch: a run killed before it resumes from the previous one, and the writers
drop on resume what they wrote past it, so that every epoch and step is recorded exactly once
however often the run is killed."""

from __future__ import annotations

from ..core.names import METRIC_NAMES


class Hook:
    """Does nothing at every point; a hook overrides the points it acts at."""

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
        metrics = trainer.evaluate()
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
        folder = trainer.folder
        state = trainer.state_dict()
        if record.get("best"):
            trainer.save(folder.BEST, state)
        trainer.save(folder.CHECKPOINT, state)
        stale = folder / folder.INTERRUPTED
        if trainer.is_main and stale.exists():
            stale.unlink()
