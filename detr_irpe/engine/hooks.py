"""Hooks of the training loop, and the two that decide what an epoch leaves: evaluation and the
checkpoint. The Trainer calls each hook at fixed points; order matters: evaluation first, so that
the writers (engine/writers.py) see the epoch's AP, and the checkpoint last. The checkpoint is the
commit point of an epoch: a run killed before it resumes from the previous one, and the writers
drop on resume what they wrote past it, so that every epoch and step is recorded exactly once
however often the run is killed."""

from __future__ import annotations

import logging

from ..core.names import METRIC_NAMES

log = logging.getLogger(__name__)


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
        if tc.eval_raw:
            raw = trainer.evaluate(raw=True)
            record.update({f"raw_{k}": raw[k] for k in METRIC_NAMES if k in raw})
        # with train.ema the metrics are the EMA weights', so checkpoint_best is chosen on them
        if record.get("AP") is not None and record["AP"] > trainer.progress.best_ap:
            trainer.progress.best_ap = record["AP"]
            record["best"] = True


class EarlyStopping(Hook):
    """Ends the run, as a finished one, when ``train.early_stop_metric`` has not improved by more
    than ``early_stop_min_delta`` for ``early_stop_patience`` evaluations. The metrics are the
    same on every process (the evaluation broadcasts them), so every process decides alike."""

    def after_epoch(self, trainer, record):
        tc, p = trainer.cfg.train, trainer.progress
        metric = tc.early_stop_metric
        if metric is None or record.get(metric) is None:
            return
        value = float(record[metric])
        if p.best_metric is None or value > p.best_metric + tc.early_stop_min_delta:
            p.best_metric, p.evals_since_best = value, 0
            return
        p.evals_since_best += 1
        if p.evals_since_best >= tc.early_stop_patience:
            p.stopped_early = {"epoch": record["epoch"], "metric": metric, "best": p.best_metric, "last": value,
                               "patience": tc.early_stop_patience, "min_delta": tc.early_stop_min_delta}
            record["stopped_early"] = True
            log.info("early stop after epoch %d: %s has not improved on %.4f by more than %g for %d evaluations",
                     record["epoch"], metric, p.best_metric, tc.early_stop_min_delta, p.evals_since_best)


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
