"""The training loop. Evaluation and checkpoints (engine/hooks.py) and the log writers
(engine/writers.py) are hooks that the loop calls at fixed points, so that each concern lives in
one small class; the stop signals (engine/interrupt.py), the run folder (engine/run_folder.py,
engine/output_folder.py), what a resume may change (config/resume.py) and the weights a run starts
from (engine/initial_weights.py) have their own modules.

In a run of several processes every decision that changes what a process does next is agreed
first (core.runtime.agree), so that all take the same branch: at the start of a step, whether a
stop was asked for and whether the data has ended (one collective that also sums the box count
the loss needs); after the loss, whether any process saw a non-finite one."""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..config import Config, ConfigError, config_to_dict
from ..config.resolve import resolve_config
from ..config.resume import check_resume_changes
from ..core.errors import UserError
from ..core.runtime import DistInfo, agree, barrier, gather_objects, init_distributed, mean_over_processes
from ..data.build import build_dataset, build_loader
from ..evaluation.loop import autocast_context, evaluate, to_device
from ..evaluation.metrics_report import format_metrics_table
from ..hub.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..models import build_model
from ..models.criterion import box_count, boxes_per_process
from .ema import ModelEMA
from .hooks import CheckpointHook, EarlyStopping, EvalHook, Hook
from .initial_weights import load_initial_weights
from .interrupt import StopSignals, TrainingInterrupted
from .monitor import StepMonitor, console_for_progress_bars
from .optim import LRSchedule, build_optimizer
from .output_folder import check_output_folder, prepare_output_folder
from .precision import set_tf32
from .run_folder import RunFolder
from .state import gather_rng_states, seed_everything, set_rng_state
from .writers import ConsoleWriter, JsonlWriter, RunInfoWriter, build_writers

log = logging.getLogger(__name__)


class NonFiniteLossError(UserError):
    """A loss that is NaN or infinite; the message names the step and the loss terms."""


@dataclass
class Progress:
    """Where the run stands; saved in every checkpoint."""

    epoch: int = 0           # the epoch in progress (or the next one, at a boundary)
    step_in_epoch: int = 0   # batches of ``epoch`` already consumed
    update: int = 0          # optimizer updates so far
    best_ap: float = -1.0
    skipped_steps: int = 0
    # early stopping: the best value of the watched metric, evaluations since it, and why the run
    # ended early (None while it goes on)
    best_metric: float | None = None
    evals_since_best: int = 0
    stopped_early: dict | None = None
    # the epoch so far: summed loss terms, steps and images of this process (an epoch resumed
    # mid-way logs the same means as one never stopped)
    epoch_sums: dict = field(default_factory=dict)
    epoch_steps: int = 0
    epoch_images: int = 0


class Trainer:
    """Builds everything a run needs from a Config and trains it.

    ``resume``: a checkpoint path or ``"auto"`` (the newest valid checkpoint in the output folder)
    to continue a run exactly; ``init_from``: weights to start from (fine-tuning), where a class
    head of another size is re-initialised.
    """

    def __init__(self, cfg: Config, resume: str | None = None, init_from: str | None = None,
                 dist_info: DistInfo | None = None, hooks=None, eval_only: bool = False):
        self.cfg = cfg
        tc = cfg.train
        self.dist = dist_info or init_distributed(tc.device, tc.dist_timeout_s)
        self.device = self.dist.device
        if self.device.type == "cuda":
            set_tf32(tc.tf32)
        if tc.amp != "none" and self.device.type != "cuda":
            raise ConfigError(f"train.amp={tc.amp} needs a CUDA device; this run is on {self.device} (use train.amp=none)")
        self.folder = RunFolder(tc.output_dir)
        self.out = self.folder.path
        self.progress = Progress()
        if not eval_only and self.is_main:
            check_output_folder(self.folder, resuming=bool(resume))
        seed_everything(tc.seed + self.dist.rank)

        self.train_set = build_dataset(cfg, "train")
        self.cfg = cfg = resolve_config(cfg, dataset=self.train_set, device=self.device,
                                       source=f"config of {self.out}")
        self.val_set = build_dataset(cfg, "val")
        self.train_loader = build_loader(self.train_set, cfg, train=True, world_size=self.dist.world_size,
                                         rank=self.dist.rank)
        self.val_loader = build_loader(self.val_set, cfg, train=False, world_size=self.dist.world_size,
                                       rank=self.dist.rank)
        #: the checkpoint the run continues from (None: a new run)
        self.resume_path = self._find_resume(resume) if resume else None

        model, self.criterion, post = build_model(cfg)
        self.postprocess = post["bbox"]
        self.model = model.to(self.device)
        if tc.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.criterion.to(self.device)
        if init_from:
            load_initial_weights(self.model, init_from)
        self.ema = ModelEMA(self.model, tc.ema_decay, tc.ema_warmup) if tc.ema else None
        self.optimizer = build_optimizer(self.model, tc)
        self.schedule = LRSchedule(tc.lr_drop, tc.warmup_iters)
        self.scaler = torch.amp.GradScaler("cuda", enabled=tc.amp == "fp16")
        self.batches_per_epoch = len(self.train_loader)
        if not self.batches_per_epoch and not eval_only:
            raise ConfigError(f"the train split has {len(self.train_set)} images, not one full batch of train.batch_size="
                              f"{tc.batch_size} per process ({self.dist.world_size} process(es)): an epoch would train "
                              f"on nothing; lower train.batch_size")
        if tc.max_steps_per_epoch:
            self.batches_per_epoch = min(self.batches_per_epoch, tc.max_steps_per_epoch)
        if self.resume_path is not None:
            self._resume(self.resume_path)
        self.train_model = self.model
        if self.dist.distributed and self.device.type == "cuda":
            # trainable batch norm sees the global batch (SyncBatchNorm needs CUDA; on the CPU each
            # process keeps its own running statistics and the checkpoint holds rank 0's)
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.train_model = self.model
        if self.dist.distributed:
            self.train_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if tc.compile:
            self.train_model = torch.compile(self.train_model)
        self.hooks = hooks if hooks is not None else default_hooks(self)
        self.stop_signals = StopSignals()

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def _prepare_output(self) -> None:
        """Create the output folder, save the resolved config, log to train.log (main process)."""
        if self.is_main:
            prepare_output_folder(self.folder, self.cfg)
        barrier()

    def _find_resume(self, resume: str) -> Path | None:
        """The checkpoint ``resume`` names (``auto``: the run folder's resume checkpoint), checked
        against the config: a setting that a resume may not change is refused before anything runs."""
        if resume == "auto":
            found = self.folder.resume_checkpoint()
            if found is None:
                log.info("resume auto: no checkpoint in %s, starting from scratch", self.out)
                return None
            path = found[0]
        else:
            path = Path(resume)
        stored = load_checkpoint(path, mmap=True).get("config")
        if isinstance(stored, dict):
            check_resume_changes(stored, self.cfg, source=str(path))
        return path

    def _resume(self, path: Path) -> None:
        ckpt = load_checkpoint(path, self.model)
        for key in ("optimizer", "epoch"):
            if key not in ckpt:
                raise CheckpointError(f"checkpoint {path} has no '{key}': it holds weights only; use --init-from")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        p = self.progress
        p.epoch, p.step_in_epoch = int(ckpt["epoch"]), int(ckpt.get("step_in_epoch", 0))
        p.update = int(ckpt.get("scheduler", {}).get("update", 0))
        p.best_ap = float(ckpt.get("best_ap", -1.0))
        p.skipped_steps = int(ckpt.get("skipped_steps", 0))
        p.best_metric, p.evals_since_best = ckpt.get("best_metric"), int(ckpt.get("evals_since_best", 0))
        p.stopped_early = ckpt.get("stopped_early")
        if self.ema is not None:
            if not ckpt.get("ema"):
                raise CheckpointError(f"checkpoint {path} has no EMA state: train.ema cannot be turned on when "
                                      f"resuming; start a new run with --init-from")
            self.ema.load_state_dict(ckpt["ema"])
        partial = ckpt.get("epoch_partial") or []
        if p.step_in_epoch and len(partial) == self.dist.world_size:
            mine = partial[self.dist.rank]
            p.epoch_sums = {k: torch.tensor(v, device=self.device) for k, v in mine["sums"].items()}
            p.epoch_steps, p.epoch_images = int(mine["steps"]), int(mine["images"])
        rngs = ckpt.get("rng") or []
        if len(rngs) == self.dist.world_size:
            set_rng_state(rngs[self.dist.rank])
        else:
            log.warning("resume: checkpoint saved by %d processes, this run has %d; random states not restored",
                        len(rngs), self.dist.world_size)
        log.info("resumed from %s at epoch %d, step %d", path, p.epoch, p.step_in_epoch)

    def state_dict(self) -> dict:
        """Everything a checkpoint holds (collective: every process must call it)."""
        p = self.progress
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": {"update": p.update, "lr_drop": self.cfg.train.lr_drop,
                              "warmup_iters": self.cfg.train.warmup_iters},
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "epoch": p.epoch, "step_in_epoch": p.step_in_epoch, "best_ap": p.best_ap,
                "skipped_steps": p.skipped_steps, "best_metric": p.best_metric,
                "evals_since_best": p.evals_since_best, "stopped_early": p.stopped_early,
                "ema": self.ema.state_dict() if self.ema is not None else None, "rng": gather_rng_states(),
                "epoch_partial": gather_objects({"sums": {k: float(v) for k, v in p.epoch_sums.items()},
                                                 "steps": p.epoch_steps, "images": p.epoch_images}),
                "config": config_to_dict(self.cfg), "world_size": self.dist.world_size}

    def save(self, name: str, state: dict | None = None) -> Path:
        """Write a checkpoint into the run folder atomically (main process; without ``state``
        a collective: every process must call it)."""
        state = state if state is not None else self.state_dict()
        path = self.folder / name
        if self.is_main:
            save_checkpoint(state, path)
        return path

    def train(self) -> dict:
        """Train to ``train.epochs``; returns the last epoch's record."""
        tc = self.cfg.train
        record: dict = {}
        self._prepare_output()
        with self.stop_signals:
            for hook in self.hooks:
                hook.before_train(self)
            with console_for_progress_bars():  # evaluation has a progress bar too
                while self.progress.epoch < tc.epochs and not self.progress.stopped_early:
                    record = self.train_one_epoch()
                    for hook in self.hooks:
                        hook.after_epoch(self, record)
            for hook in self.hooks:
                hook.after_train(self)
        return record

    def evaluate(self, raw: bool = False) -> dict:
        """COCO metrics on the val split (collective) of the EMA weights when ``train.ema`` is on
        (of the raw ones with ``raw``), else of the current weights."""
        model = self.ema.module if self.ema is not None and not raw else self.model
        return evaluate(model, self.postprocess, self.val_loader, self.cfg, self.device, progress=sys.stderr.isatty())

    def evaluate_only(self) -> dict:
        """COCO AP of the current weights on the val split, printed and returned (writes nothing)."""
        metrics = self.evaluate()
        if self.is_main:
            print(format_metrics_table(metrics))
        return metrics

    def train_one_epoch(self) -> dict:
        tc, p = self.cfg.train, self.progress
        epoch = p.epoch
        self.train_model.train()
        self.train_loader.batch_sampler.set_epoch(epoch, skip=p.step_in_epoch)
        total = self.batches_per_epoch
        bar = tqdm(total=total, initial=p.step_in_epoch, desc=f"epoch {epoch + 1}/{tc.epochs}",
                   disable=not self.is_main or not sys.stderr.isatty(), dynamic_ncols=True, mininterval=1.0)
        if p.step_in_epoch == 0:
            p.epoch_sums, p.epoch_steps, p.epoch_images = {}, 0, 0
        sums = p.epoch_sums
        start, images_before = time.perf_counter(), p.epoch_images
        accum = tc.grad_accum
        monitor = StepMonitor(total, p.step_in_epoch, (tc.epochs - epoch - 1) * total, self.device)
        batches = iter(self.train_loader)
        while p.step_in_epoch < total:
            batch = next(batches, None)
            monitor.data_ready()
            votes = agree({"stop": bool(self.stop_signals.requested) and p.step_in_epoch % accum == 0,
                           "end_of_data": batch is None},
                          number=box_count(batch[2]) if batch is not None else 0)
            if votes["end_of_data"]:
                if len(votes["end_of_data"]) < self.dist.world_size:
                    log.warning("the data of rank(s) %s ended at step %d of %d; the epoch ends there on every rank",
                                ", ".join(map(str, votes["end_of_data"])), p.step_in_epoch, total)
                break
            if votes["stop"]:
                raise self._interrupt(votes["stop"])
            images, mask, targets = to_device(*batch, self.device)
            if tc.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            last_micro = (p.step_in_epoch + 1) % accum == 0 or p.step_in_epoch + 1 == total
            num_boxes = boxes_per_process(votes.total, self.dist.world_size)
            losses, loss = self.forward_backward(images, mask, targets, num_boxes, sync=last_micro)
            if loss is None:  # a skipped non-finite step
                p.step_in_epoch += 1
                monitor.step_done(0)
                bar.update(1)
                continue
            if last_micro:
                self._update()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0) + v.detach().float()
            sums["loss"] = sums.get("loss", 0) + loss.detach().float()
            p.epoch_steps += 1
            p.epoch_images += len(targets)
            p.step_in_epoch += 1
            monitor.step_done(len(targets) * self.dist.world_size)
            bar.update(1)
            if p.step_in_epoch % tc.log_every == 0 or p.step_in_epoch == total:
                scalars = {k: float(v) / p.epoch_steps
                           for k, v in ((k, sums[k]) for k in ("loss", "loss_ce", "loss_bbox", "loss_giou")) if k in sums}
                lr = self.optimizer.param_groups[0]["lr"]
                bar.set_postfix(loss=f"{scalars['loss']:.3f}", lr=f"{lr:.2e}", refresh=False)
                scalars.update(lr=lr, **monitor.scalars())
                for hook in self.hooks:
                    hook.after_step(self, scalars)
        bar.close()
        elapsed = time.perf_counter() - start
        means = mean_over_processes({k: v / max(1, p.epoch_steps) for k, v in sums.items()})
        world = self.dist.world_size
        record = {"epoch": epoch + 1, **{f"train_{k}": float(v) for k, v in sorted(means.items())},
                  "lr": self.optimizer.param_groups[0]["lr"], "lr_backbone": self._lr_of("backbone"),
                  "train_seconds": elapsed, "train_images": p.epoch_images * world,
                  "train_images_per_s": (p.epoch_images - images_before) * world / max(elapsed, 1e-9),
                  "updates": p.update, "world_size": self.dist.world_size,
                  "batch_size": tc.batch_size * self.dist.world_size * tc.grad_accum}
        if p.skipped_steps:
            record["skipped_steps"] = p.skipped_steps
        if self.train_set.base.skipped_images:
            record["skipped_images"] = self.train_set.base.skipped_images
        p.epoch += 1
        p.step_in_epoch = 0
        return record

    def _lr_of(self, name: str):
        for g in self.optimizer.param_groups:
            if g.get("name") == name:
                return g["lr"]
        return None

    def forward_backward(self, images, mask, targets, num_boxes: float, sync: bool = True):
        """One step's forward pass and loss, then its backward pass unless some process saw a
        non-finite loss; returns the loss terms and the weighted loss (None for a skipped step).
        ``num_boxes``: the box-loss normaliser over all processes (boxes_per_process). Collective."""
        tc = self.cfg.train
        ctx = self.train_model.no_sync() if (self.dist.distributed and not sync and hasattr(self.train_model, "no_sync")) \
            else contextlib.nullcontext()
        with ctx:
            with autocast_context(self.device, tc.amp):
                # query denoising builds its extra queries from the targets (training only)
                extra = {"targets": targets} if self.cfg.model.dn_groups else {}
                outputs = self.train_model(images, mask, **extra)
            # matching and loss in float32
            losses = self.criterion(_float_outputs(outputs), targets, num_boxes=num_boxes)
            weights = self.criterion.weight_dict
            loss = sum(losses[k] * weights[k] for k in losses if k in weights)
            # the matcher already waited for the device this step, so reading the loss costs no extra sync
            bad = agree({"nonfinite": not bool(torch.isfinite(loss))})["nonfinite"]
            if bad:
                return self._nonfinite(losses, loss, bad)
            self.scaler.scale(loss / tc.grad_accum).backward()
        return losses, loss

    def _update(self) -> None:
        tc, p = self.cfg.train, self.progress
        if tc.clip_max_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.clip_max_norm)
        self.schedule.apply(self.optimizer, p.epoch, p.update)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        p.update += 1
        if self.ema is not None:
            self.ema.update(self.model)

    def _nonfinite(self, losses: dict, loss, ranks: tuple[int, ...]):
        """Every process is here at the same step: skip it, or save the last good state and stop."""
        tc, p = self.cfg.train, self.progress
        mine = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in sorted(losses.items())
                         if k.startswith("loss") and not math.isfinite(float(v.detach()))) or f"loss={float(loss)}"
        seen = gather_objects(mine)  # each process's terms, so that the message names them everywhere
        bad = "; ".join(f"rank {r}: {seen[r]}" for r in ranks) if self.dist.distributed else mine
        where = f"epoch {p.epoch + 1}, step {p.step_in_epoch + 1} (update {p.update})"
        self.optimizer.zero_grad(set_to_none=True)
        if tc.on_nonfinite == "skip":
            p.skipped_steps += 1
            log.warning("non-finite loss at %s: %s; step skipped on every process (%d so far)", where, bad,
                        p.skipped_steps)
            return losses, None
        path = self.save(self.folder.NONFINITE)
        raise NonFiniteLossError(f"non-finite loss at {where}: {bad}; the last good state is in {path} "
                                 f"(train.on_nonfinite=skip skips such steps)")

    def _interrupt(self, ranks: tuple[int, ...]) -> TrainingInterrupted:
        """Every process is here at the same step boundary: save the state and stop."""
        path = self.save(self.folder.INTERRUPTED)
        signal_name = self.stop_signals.requested or "a stop signal"
        by = f"{signal_name} (on rank {', '.join(map(str, ranks))})" if self.dist.distributed else signal_name
        msg = (f"stopped by {by} at epoch {self.progress.epoch + 1}, step {self.progress.step_in_epoch}; "
               f"state saved to {path}; continue with --resume auto")
        log.warning(msg)
        # a handler installed before ours (submitit's: it requeues the SLURM job) runs after the save
        self.stop_signals.pass_on()
        return TrainingInterrupted(msg)


def default_hooks(trainer: Trainer) -> list[Hook]:
    """Evaluation first (the writers see the epoch's AP), the checkpoint last (it commits the epoch)."""
    return [RunInfoWriter(), EvalHook(), EarlyStopping(), JsonlWriter(), *build_writers(trainer.cfg.train.writers),
            ConsoleWriter(), CheckpointHook()]


def _float_outputs(outputs: dict) -> dict:
    out = {k: v.float() if torch.is_tensor(v) else v for k, v in outputs.items() if k != "aux_outputs"}
    if "aux_outputs" in outputs:
        out["aux_outputs"] = [{k: v.float() for k, v in a.items()} for a in outputs["aux_outputs"]]
    return out
