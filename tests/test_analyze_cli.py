"""detr-irpe analyze end to end: two micro checkpoints side by side, and a results file with its
ground truth; bad command lines are one-line errors."""

import json

import pytest
from engine_helpers import micro_checkpoints

from detr_irpe.analysis.error_report import FIGURES
from detr_irpe.commands.cli import run_main
from detr_irpe.commands.analyze import main


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return micro_checkpoints(tmp_path_factory.mktemp("analyze"),
                             {"abs": ("null", 0, []), "abs_rel": ("rpe-2.0-product-ctx-1-k", 1, [])})


def test_two_checkpoints_side_by_side(env, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--checkpoint", str(env["ckpt"]["abs"]), "--checkpoint", str(env["ckpt"]["abs_rel"]),
            "--labels", "abs", "abs+iRPE", "--output-dir", str(out), "--score-threshold", "0"]
    assert run_main(main, argv) == 0
    data = json.loads((out / "analysis.json").read_text())
    assert list(data["models"]) == ["abs", "abs+iRPE"]
    for label in ("abs", "abs+iRPE"):
        results = json.loads((out / f"{label}_results.json").read_text())
        errors = data["models"][label]["errors"]
        # every detection is a true positive or one error; every object found or one error
        fp = sum(errors["counts"][k] for k in ("classification", "localisation", "both", "duplicate", "background"))
        assert errors["detections"] == len(results) == errors["true_positives"] + fp
        assert sum(map(sum, data["models"][label]["confusion"]["counts"])) >= errors["ground_truth"]
    assert all((out / name).is_file() for name in FIGURES)
    assert "abs+iRPE: AP50" in capsys.readouterr().out


def test_a_results_file_with_its_ground_truth(env, tmp_path, monkeypatch):
    first = tmp_path / "first"
    assert run_main(main, ["--checkpoint", str(env["ckpt"]["abs"]), "--output-dir", str(first)]) == 0
    gt = next(env["data"].glob("annotations/instances_val.json"))
    monkeypatch.chdir(tmp_path)  # without --output-dir: outputs/analysis
    assert run_main(main, ["--results", str(first / "abs_results.json"), "--annotations", str(gt)]) == 0
    out = tmp_path / "outputs" / "analysis"
    again = json.loads((out / "analysis.json").read_text())["models"]["abs_results"]
    assert again == json.loads((first / "analysis.json").read_text())["models"]["abs"]


@pytest.mark.parametrize("argv, message", [
    (["--output-dir", "x"], "either --results files"),
    (["--results", "r.json", "--output-dir", "x"], "--results needs --annotations"),
    (["--results", "r.json", "--annotations", "a.json", "--labels", "a", "b", "--output-dir", "x"], "--labels names 2"),
])
def test_bad_command_lines_are_one_line_errors(argv, message, capsys):
    assert run_main(main, argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_an_output_dir_that_is_a_file_is_a_one_line_error(env, tmp_path, capsys):
    """Refused before any model runs; the file is left as it was."""
    taken = tmp_path / "analysis.json"
    taken.write_text("{}")
    assert run_main(main, ["--checkpoint", str(env["ckpt"]["abs"]), "--output-dir", str(taken)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --output-dir {taken} is a file, not a folder; give a folder to write into\n"
    assert taken.read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["analysis.json"]
