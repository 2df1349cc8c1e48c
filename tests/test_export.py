"""tools/export.py: ONNX export with an onnxruntime parity check, for an abs-only and an iRPE
model."""

import json
import shutil

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
    """The default (dynamo) exporter through the tool: PASS, the diffs printed, one ONNX file in
    --output-dir named after the checkpoint (abs.pth -> abs.onnx)."""
    onnx_path = tmp_path / "abs.onnx"
    assert run_tool(export_main, ["--checkpoint", env["ckpt"]["abs"], "--height", 64, "--width", 96,
                              "--output-dir", tmp_path, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "max abs diff" in out and "dynamo exporter" in out
    assert f"exported {onnx_path} " in out and "PyTorch (cpu)" in out
    result = _parity(out)
    assert result["onnx"] == str(onnx_path) and result["device"] == "cpu"
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
    """Without --device the check runs where auto puts the model (CUDA when available)."""
    assert run_tool(export_main, ["--checkpoint", env["ckpt"]["irpe"], "--height", 64, "--width", 96,
                              "--output-dir", tmp_path / "onnx", "--exporter", "torchscript"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "torchscript exporter" in out
    result = _parity(out)
    assert result["passed"] and result["onnx"] == str(tmp_path / "onnx" / "irpe.onnx")
    assert result["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert export_mod.onnx_info(tmp_path / "onnx" / "irpe.onnx")["inputs"] == {"images": [1, 3, 64, 96]}


def test_a_run_checkpoint_is_exported_under_the_run_folders_name(env, tmp_path, capsys):
    """outputs/<run>/checkpoint_best.pth -> <output-dir>/<run>.onnx, as analyze and attention name
    models; --no-check still prints the path."""
    run = tmp_path / "tiny_irpe"
    run.mkdir()
    shutil.copy(env["ckpt"]["irpe"], run / "checkpoint_best.pth")
    out = tmp_path / "export"
    assert run_tool(export_main, ["--model", run / "checkpoint_best.pth", "--height", 64, "--width", 64,
                              "--output-dir", out, "--exporter", "torchscript", "--no-check"]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed.strip().splitlines()[-1]) == {"onnx": str(out / "tiny_irpe.onnx")}
    assert "PASS" not in printed
    assert [p.name for p in out.iterdir()] == ["tiny_irpe.onnx"]
    outputs = export_mod.onnx_info(out / "tiny_irpe.onnx")["outputs"]
    assert outputs == {"pred_logits": [1, 5, 6], "pred_boxes": [1, 5, 4]}


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
    assert run_tool(export_main, ["--checkpoint", env["ckpt"]["abs"], "--height", 64, "--width", 64, "--output-dir",
                              tmp_path / "t", "--exporter", "torchscript"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and not _parity(out)["passed"]


def test_export_input_errors_are_one_line(env, tmp_path, capsys):
    ck = env["ckpt"]["abs"]
    assert run_tool(export_main, ["--checkpoint", ck, "--height", 16, "--width", 64, "--output-dir", tmp_path]) == 2
    assert "stride" in capsys.readouterr().err
    assert run_tool(export_main, ["--checkpoint", tmp_path / "nope.pth", "--height", 64, "--width", 64,
                              "--output-dir", tmp_path]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written
    # --output-dir naming a regular file: refused before the model is loaded, the file left as it was
    taken = tmp_path / "abs.onnx"
    taken.write_bytes(b"an older export")
    assert run_tool(export_main, ["--checkpoint", ck, "--height", 64, "--width", 64, "--output-dir", taken]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --output-dir {taken} is a file, not a folder; give a folder to write into\n"
    assert taken.read_bytes() == b"an older export"
    # --out is gone: one name for the output folder in every command
    with pytest.raises(SystemExit) as exc:
        export_main(["--checkpoint", str(ck), "--height", "64", "--width", "64", "--out", str(tmp_path / "a.onnx")])
    assert exc.value.code == 2
    assert "unrecognized arguments: --out" in capsys.readouterr().err
