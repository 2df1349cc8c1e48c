"""tools/export.py: ONNX export with an onnxruntime parity check, for an abs-only and an iRPE
model."""

import json

import pytest
import torch
from engine_helpers import abs_and_irpe_checkpoints, run_tool, tool_main

from detr_irpe.inference import export as export_mod
from detr_irpe.hub.loader import load_model
from detr_irpe.models.irpe import bucket_ids, cached_index

export_main = tool_main("export")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return abs_and_irpe_checkpoints(tmp_path_factory.mktemp("export"))


def _parity(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_export_abs_only_with_the_tool(env, tmp_path, capsys):
    """The default (dynamo) exporter through the tool: PASS, the diffs printed, one ONNX file."""
    onnx_path = tmp_path / "abs.onnx"
    assert run_tool(export_main, ["--checkpoint", env["ckpt"]["abs"], "--height", 64, "--width", 96,
                              "--out", onnx_path]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "max abs diff" in out and "dynamo exporter" in out
    result = _parity(out)
    assert result["passed"] and result["atol"] == export_mod.ATOL and result["rtol"] == export_mod.RTOL
    assert max(result["max_abs_diff"].values()) < 1e-5
    info = export_mod.onnx_info(onnx_path)
    assert info["inputs"] == {"images": [1, 3, 64, 96]}
    assert info["outputs"] == {"pred_logits": [1, 5, 6], "pred_boxes": [1, 5, 4]}
    assert [p.name for p in tmp_path.iterdir()] == [onnx_path.name]  # one self-contained file


def test_export_irpe_with_dynamo_leaves_the_model_and_the_bucket_cache_intact(env, tmp_path):
    """torch.export traces with fake tensors: an iRPE bucket index cached during the trace would be a
    fake tensor that breaks every later export at that map size."""
    loaded = load_model(env["ckpt"]["irpe"])
    spec = loaded.cfg.model.irpe
    x = export_mod.example_input(96, 64, seed=4)
    with torch.no_grad():
        before = loaded.model(x)["pred_boxes"]
        fh, fw = loaded.model(x, need_weights=True)["feature_shape"]
    cached_index.cache_clear()
    path = export_mod.export_onnx(loaded.model, tmp_path / "irpe.onnx", 96, 64)
    report = export_mod.check_onnx(loaded.model, path, 96, 64)
    assert report.passed, report.lines()
    assert max(report.max_abs_diff.values()) < 1e-5
    index = cached_index(spec, fh, fw, torch.device("cpu"))
    assert type(index) is torch.Tensor and torch.equal(index, bucket_ids(spec, fh, fw)["index"])
    with torch.no_grad():
        assert torch.equal(loaded.model(x)["pred_boxes"], before)
    assert not loaded.model.training


def test_export_irpe_with_torchscript_with_the_tool(env, tmp_path, capsys):
    assert run_tool(export_main, ["--checkpoint", env["ckpt"]["irpe"], "--height", 64, "--width", 96,
                              "--out", tmp_path / "irpe.onnx", "--exporter", "torchscript"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "torchscript exporter" in out
    assert _parity(out)["passed"]


def test_parity_check_fails_on_a_different_model(env, tmp_path, capsys, monkeypatch):
    loaded = load_model(env["ckpt"]["abs"])
    path = export_mod.export_onnx(loaded.model, tmp_path / "m.onnx", 64, 64, exporter="torchscript")
    with torch.no_grad():
        loaded.model.class_embed.bias += 0.5
    report = export_mod.check_onnx(loaded.model, path, 64, 64)
    assert not report.passed and report.lines()[-1] == "FAIL"
    assert report.max_abs_diff["pred_logits"] == pytest.approx(0.5, abs=1e-3)

    # the tool exits non-zero on FAIL
    real = export_mod.check_onnx

    def perturbed(model, *args, **kwargs):
        with torch.no_grad():
            model.bbox_embed.layers[-1].bias += 0.5
        return real(model, *args, **kwargs)

    monkeypatch.setattr(export_mod, "check_onnx", perturbed)
    assert run_tool(export_main, ["--checkpoint", env["ckpt"]["abs"], "--height", 64, "--width", 64, "--out",
                              tmp_path / "t.onnx", "--exporter", "torchscript"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and not _parity(out)["passed"]


def test_export_input_errors_are_one_line(env, tmp_path, capsys):
    ck = env["ckpt"]["abs"]
    assert run_tool(export_main, ["--checkpoint", ck, "--height", 16, "--width", 64, "--out", tmp_path / "a.onnx"]) == 2
    assert "stride" in capsys.readouterr().err
    assert run_tool(export_main, ["--checkpoint", ck, "--height", 64, "--width", 64, "--out", tmp_path / "a.pt"]) == 2
    assert ".onnx" in capsys.readouterr().err
    assert run_tool(export_main, ["--checkpoint", tmp_path / "nope.pth", "--height", 64, "--width", 64,
                              "--out", tmp_path / "a.onnx"]) == 2
    assert "does not exist" in capsys.readouterr().err
