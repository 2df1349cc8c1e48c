"""Group DETR query groups and DN-DETR query denoising through the trainer: each trains, logs its
own loss terms, evaluates, and resumes mid-epoch to the weights of a run never stopped (model EMA's
resume is in test_ema.py)."""

import json

import pytest
from engine_helpers import micro, same_weights, tool_main, weights

from detr_irpe.config import load_config
from detr_irpe.engine.hooks import Hook
from detr_irpe.engine.interrupt import TrainingInterrupted
from detr_irpe.engine.trainer import Trainer, default_hooks

DAB = ["model.decoder=dab", "model.activation=prelu", "model.pe_temperature=20", "model.dropout=0.0",
       "loss.set_cost_class=2.0"]
#: option -> (overrides, a loss term only that option logs)
OPTIONS = {
    "groups on dab": ([*DAB, "model.num_groups=2"], "train_loss_ce_g1"),
    "groups on detr": (["model.num_groups=3"], "train_loss_ce_g2"),
    "denoising on dab": ([*DAB, "model.dn_groups=2"], "train_tgt_loss_ce"),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


class _StopAfter(Hook):
    def after_step(self, trainer, scalars):
        if trainer.progress.update == 4:  # epoch 2, step 1
            trainer.stop_signals.request(15)


@pytest.mark.parametrize("option", list(OPTIONS))
def test_the_option_trains_evaluates_and_resumes_mid_epoch_exactly(option, cache, tmp_path):
    overrides, own_term = OPTIONS[option]
    straight = tmp_path / "straight"
    assert tool_main("train")(micro(cache, straight, *overrides)) == 0
    log = [json.loads(x) for x in (straight / "log.jsonl").read_text().splitlines()]
    assert all("AP" in r and r.get(own_term, 0) > 0 for r in log), log[-1].keys()
    out = tmp_path / "stopped"
    trainer = Trainer(load_config(None, micro(cache, out, *overrides)))
    trainer.hooks = default_hooks(trainer) + [_StopAfter()]
    with pytest.raises(TrainingInterrupted):
        trainer.train()
    assert tool_main("train")(micro(cache, out, *overrides) + ["--resume", "auto"]) == 0
    assert same_weights(weights(straight / "checkpoint.pth"), weights(out / "checkpoint.pth"))
