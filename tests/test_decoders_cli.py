"""The sigmoid decoders end to end through the commands, each with the iRPE encoder: train, an exact
resume mid-epoch, evaluate (the project's checkpoint, weights only and a reference checkpoint with
its args, without a config), predict, ONNX export with its parity check, figures, error analysis
and attention distance."""

import json

import pytest
import torch
from engine_helpers import micro, run_tool, same_weights, tool_main, weights

from detr_irpe.config import load_config
from detr_irpe.engine.hooks import Hook
from detr_irpe.engine.interrupt import TrainingInterrupted
from detr_irpe.engine.trainer import Trainer, default_hooks
from detr_irpe.hub.checkpoint import save_checkpoint

#: each decoder's recipe on the micro model (test_training.py runs DETR's)
DECODERS = {
    "conditional": ["model.decoder=conditional", "loss.set_cost_class=2.0", "loss.ce_loss_coef=2.0"],
    "dab": ["model.decoder=dab", "model.activation=prelu", "model.pe_temperature=20", "model.dropout=0.0",
            "loss.set_cost_class=2.0", "model.num_patterns=2"],
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


@pytest.fixture(scope="module", params=list(DECODERS))
def run(request, cache, tmp_path_factory):
    """A micro run of the decoder, trained 2 epochs straight through."""
    out = tmp_path_factory.mktemp(request.param) / "run"
    overrides = micro(cache, out, *DECODERS[request.param])
    assert tool_main("train")(overrides) == 0
    return {"decoder": request.param, "out": out, "overrides": overrides}


class _StopAfter(Hook):
    def __init__(self, updates):
        self.updates = updates

    def after_step(self, trainer, scalars):
        if trainer.progress.update == self.updates:
            trainer.stop_signals.request(15)


def test_training_logs_ap_and_a_resume_mid_epoch_gives_identical_weights(run, cache, tmp_path):
    log = [json.loads(x) for x in (run["out"] / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and all("AP" in r and r["train_loss"] > 0 for r in log)
    out = tmp_path / "interrupted"
    trainer = Trainer(load_config(None, micro(cache, out, *DECODERS[run["decoder"]])))
    trainer.hooks = default_hooks(trainer) + [_StopAfter(4)]  # epoch 2, step 1
    with pytest.raises(TrainingInterrupted):
        trainer.train()
    assert tool_main("train")(micro(cache, out, *DECODERS[run["decoder"]]) + ["--resume", "auto"]) == 0
    assert same_weights(weights(run["out"] / "checkpoint.pth"), weights(out / "checkpoint.pth"))


def _evaluate(source, out, *extra):
    assert run_tool(tool_main("evaluate"), ["--checkpoint", source, "--output-dir", out, *extra]) == 0
    return json.loads((out / "metrics.json").read_text()), json.loads((out / "results.json").read_text())


def test_a_checkpoint_and_its_weights_alone_evaluate_alike(run, tmp_path):
    ckpt = run["out"] / "checkpoint.pth"
    metrics, results = _evaluate(ckpt, tmp_path / "ckpt")
    last = json.loads((run["out"] / "log.jsonl").read_text().splitlines()[-1])
    assert metrics["metrics"]["AP"] == pytest.approx(last["AP"], abs=1e-9)
    state = torch.load(ckpt, weights_only=True)
    only = tmp_path / "weights.pth"
    save_checkpoint({"model": state["model"]}, only)
    syn = state["config"]["data"]["synthetic"]
    data = [f"data.synthetic.cache_dir={syn['cache_dir']}", "data.synthetic.num_train=32", "data.synthetic.num_val=8",
            "data.synthetic.image_size=[64,80]", "data.synthetic.max_objects=2", "data.val_size=64",
            "data.max_size=96", "data.size_divisibility=32", "data.num_workers=0", "eval.batch_size=4"]
    # the weights tell the decoder, its sizes and the iRPE; the dilation is the one thing to give
    inferred, inferred_results = _evaluate(only, tmp_path / "weights", *data, "model.backbone.dilation=true",
                                           f"model.pe_temperature={state['config']['model']['pe_temperature']}")
    for key in ("AP", "AP50", "AP75", "AR100"):
        assert inferred["metrics"][key] == metrics["metrics"][key], key
    assert len(inferred_results) == len(results) > 0


def test_predict_and_export_work_on_the_decoder(run, cache, tmp_path, capsys):
    ckpt = run["out"] / "checkpoint.pth"
    images = next(p for p in cache.rglob("val") if p.is_dir())
    assert run_tool(tool_main("predict"), ["--checkpoint", ckpt, "--input", images, "--output-dir", tmp_path / "pred",
                                           "--device", "cpu"]) == 0
    results = json.loads((tmp_path / "pred" / "results.json").read_text())
    assert results and {"image_id", "category_id", "bbox", "score"} <= results[0].keys()
    capsys.readouterr()
    assert run_tool(tool_main("export"), ["--checkpoint", ckpt, "--height", 64, "--width", 96,
                                          "--output-dir", tmp_path / "onnx", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["passed"] and max(result["max_abs_diff"].values()) < 1e-4


def test_figures_error_analysis_and_attention_distance_work_on_the_decoder(run, tmp_path):
    ckpt = run["out"] / "checkpoint.pth"
    visualize = tool_main("visualize")
    for figure in (["predictions", "--val", 2, "--score-threshold", 0], ["attention", "--val-index", 0], ["rpe"]):
        out = tmp_path / figure[0]
        assert run_tool(visualize, [*figure, "--checkpoint", ckpt, "--output-dir", out]) == 0
        assert (out / f"{figure[0]}.png").stat().st_size > 1000
    out = tmp_path / "distance"
    assert run_tool(tool_main("attention"), ["--checkpoint", ckpt, "--images", 4, "--output-dir", out]) == 0
    assert any(p.suffix == ".json" for p in out.iterdir())
    out = tmp_path / "analysis"
    assert run_tool(tool_main("analyze"), ["--checkpoint", ckpt, "--score-threshold", 0, "--output-dir", out]) == 0
    analysis = json.loads((out / "analysis.json").read_text())
    assert len(analysis["models"]) == 1


#: the reference codes' command-line options of a small model, as their main.py stores them in
#: a checkpoint's ``args`` (Conditional DETR's name no model; DAB-DETR's do)
REFERENCE_ARGS = {
    "conditional": dict(cls_loss_coef=2, focal_alpha=0.25, set_cost_class=2),
    "dab": dict(modelname="dab_detr", transformer_activation="prelu", pe_temperatureH=20, pe_temperatureW=20,
                num_select=300, num_patterns=0, random_refpoints_xy=False, cls_loss_coef=1, focal_alpha=0.25),
}


@pytest.mark.parametrize("decoder", list(DECODERS))
def test_a_reference_checkpoint_with_args_evaluates_without_a_config(decoder, cache, tmp_path):
    import argparse

    common = dict(backbone="resnet18", dilation=False, position_embedding="sine", enc_layers=1, dec_layers=1,
                  dim_feedforward=64, hidden_dim=32, dropout=0.0, nheads=4, num_queries=5, dataset_file="coco",
                  set_cost_bbox=5, set_cost_giou=2, bbox_loss_coef=5, giou_loss_coef=2, lr=1e-4, epochs=50)
    model_overrides = [f"model.decoder={decoder}", "model.backbone.name=resnet18", "model.backbone.weights=none",
                       "model.backbone.norm=frozen_bn", "model.backbone.dilation=false", "model.hidden_dim=32",
                       "model.nheads=4", "model.enc_layers=1", "model.dec_layers=1", "model.dim_feedforward=64",
                       "model.num_queries=5", "model.num_classes=91", "model.dropout=0.0", "model.irpe=null"]
    if decoder == "dab":
        model_overrides += ["model.activation=prelu", "model.pe_temperature=20", "model.num_select=300"]
    overrides = micro(cache, tmp_path / "unused", *model_overrides)
    cfg = load_config(None, overrides)
    from detr_irpe.models import build_model

    torch.manual_seed(0)
    state = build_model(cfg)[0].state_dict()
    reference = tmp_path / "reference.pth"
    save_checkpoint({"model": state, "args": argparse.Namespace(**common, **REFERENCE_ARGS[decoder])}, reference)
    data = [o for o in overrides if o.startswith(("data.", "eval."))]
    from_args, results = _evaluate(reference, tmp_path / "args", *data)
    own = tmp_path / "own.pth"
    from detr_irpe.config import config_to_dict

    save_checkpoint({"model": state, "config": config_to_dict(cfg)}, own)
    from_config, own_results = _evaluate(own, tmp_path / "own", *data)
    assert len(results) == len(own_results) > 0
    for key in ("AP", "AP50", "AR100"):
        assert from_args["metrics"][key] == from_config["metrics"][key], key
