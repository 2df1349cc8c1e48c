"""The training engine end to end on the synthetic data: checkpoints, exact resume (at an epoch
boundary and mid-epoch), logs, evaluation, fine-tuning, and clear errors."""

import json
import signal

import pytest
import torch

from detr_irpe.config import load_config
from detr_irpe.core.errors import OutputError
from detr_irpe.engine.hooks import Hook
from detr_irpe.commands.train import main as train_main
from detr_irpe.engine.interrupt import TrainingInterrupted
from detr_irpe.engine.trainer import Trainer
from engine_helpers import micro, same_weights, weights, tool_main


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


def test_train_checkpoint_log_and_evaluate(cache, tmp_path):
    out = tmp_path / "run"
    assert train_main(micro(cache, out)) == 0
    for name in ("checkpoint.pth", "checkpoint_best.pth", "config.yaml", "log.jsonl", "train.log"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").iterdir())
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    for r in lines:
        assert {"train_loss", "train_loss_ce", "train_loss_bbox", "train_loss_giou", "lr", "AP", "AP50", "AP75",
                "eval_batch_size", "train_seconds"} <= r.keys()
        assert r["updates"] == 3 * r["epoch"] and r["eval_batch_size"] == 4
    ckpt = torch.load(out / "checkpoint.pth", weights_only=False)
    assert ckpt["epoch"] == 2 and ckpt["config"]["model"]["num_classes"] == 5  # 4 shapes, ids 1..4
    # the saved config reproduces the run
    assert load_config(out / "config.yaml").model.irpe is not None

    evaluate_main = tool_main("evaluate")
    assert evaluate_main(["--checkpoint", str(out / "checkpoint.pth"), "--output-dir", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["eval_batch_size"] == 4 and 0 <= metrics["metrics"]["AP"] <= 1
    assert abs(metrics["metrics"]["AP"] - lines[-1]["AP"]) < 1e-9  # the evaluation tool agrees with the run's log
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert len(results) == 8 * 5 and {"image_id", "category_id", "bbox", "score"} <= results[0].keys()


def test_resume_at_an_epoch_boundary_gives_identical_weights(cache, tmp_path):
    straight = tmp_path / "straight"
    assert train_main(micro(cache, straight)) == 0
    split = tmp_path / "split"
    assert train_main(micro(cache, split, "train.epochs=1")) == 0
    assert train_main(micro(cache, split) + ["--resume", "auto"]) == 0
    assert same_weights(weights(straight / "checkpoint.pth"), weights(split / "checkpoint.pth"))
    assert len((split / "log.jsonl").read_text().splitlines()) == 2


class _StopAfter(Hook):
    """Asks the trainer to stop, as a SIGTERM would, after ``n`` steps."""

    def __init__(self, n):
        self.n, self.seen = n, 0

    def after_step(self, trainer, scalars):
        self.seen += 1
        if self.seen == self.n:
            trainer.stop_signals.request(signal.SIGTERM)


def test_resume_mid_epoch_gives_identical_weights(cache, tmp_path):
    straight = tmp_path / "straight"
    assert train_main(micro(cache, straight)) == 0
    out = tmp_path / "interrupted"
    cfg = load_config(None, micro(cache, out))
    trainer = Trainer(cfg)
    from detr_irpe.engine.trainer import default_hooks
    trainer.hooks = default_hooks(trainer) + [_StopAfter(4)]  # epoch 2, step 1
    with pytest.raises(TrainingInterrupted, match="epoch 2, step 1"):
        trainer.train()
    assert (out / "checkpoint_interrupted.pth").is_file()
    assert train_main(micro(cache, out) + ["--resume", "auto"]) == 0
    assert not (out / "checkpoint_interrupted.pth").exists()
    assert same_weights(weights(straight / "checkpoint.pth"), weights(out / "checkpoint.pth"))


def test_a_finished_run_is_not_overwritten(cache, tmp_path):
    out = tmp_path / "run"
    assert train_main(micro(cache, out, "train.epochs=1")) == 0
    before = (out / "checkpoint.pth").read_bytes()
    with pytest.raises(OutputError, match="already holds a run"):
        train_main(micro(cache, out, "train.epochs=1"))
    assert (out / "checkpoint.pth").read_bytes() == before


def test_init_from_reinitialises_a_class_head_of_another_size(cache, tmp_path):
    src = tmp_path / "src"
    assert train_main(micro(cache, src, "train.epochs=1", "model.num_classes=9")) == 0
    out = tmp_path / "ft"
    assert train_main(micro(cache, out, "train.epochs=1") + ["--init-from", str(src / "checkpoint.pth")]) == 0
    assert "class head has 10 outputs there and 6 here; re-initialising the class head" in (out / "train.log").read_text()
    a, b = weights(src / "checkpoint.pth"), weights(out / "checkpoint.pth")
    assert a["class_embed.weight"].shape[0] == 10 and b["class_embed.weight"].shape[0] == 6


def test_amp_on_cpu_and_unwritable_output_are_clear_errors(cache, tmp_path):
    with pytest.raises(ValueError, match="train.amp=bf16 needs a CUDA device"):
        train_main(micro(cache, tmp_path / "a", "train.amp=bf16"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot be written"):
        train_main(micro(cache, blocker / "sub"))


def test_resume_applies_the_changes_a_resume_may_make_and_refuses_the_others(cache, tmp_path, capsys):
    from reliability_helpers import expect_error

    out = tmp_path / "run"
    assert train_main(micro(cache, out, "train.epochs=1")) == 0
    expect_error(capsys, train_main, micro(cache, out, "train.epochs=2", "train.lr=1e-3") + ["--resume", "auto"],
                 "train.lr=0.001 differs from the run's train.lr=0.0001", "--init-from", out=out)
    assert train_main(micro(cache, out, "train.epochs=2") + ["--resume", "auto"]) == 0
    assert [json.loads(x)["epoch"] for x in (out / "log.jsonl").read_text().splitlines()] == [1, 2]
    assert "resume: train.epochs changed from 1 to 2" in (out / "train.log").read_text()
