"""The optional metric writers a config chooses (``train.writers``) beside ``log.jsonl``, which
every run writes: TensorBoard, Weights & Biases and MLflow. W&B and MLflow are not dependencies
of this project: each is imported only when chosen, when the trainer is built (before anything is
written), and a missing one is a config error naming the package to install."""

from __future__ import annotations

import importlib

from ..config import ConfigError, config_to_dict
from .hooks import Hook, TensorBoardWriter


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


def flat_config(cfg) -> dict:
    """The config as ``section.key`` -> value, for trackers' parameter tables."""
    out = {}

    def walk(d, at):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{at}{k}.")
            else:
                out[f"{at}{k}"] = v

    walk(config_to_dict(cfg), "")
    return out


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
