"""detr-irpe attention end to end on two micro checkpoints: the JSON and both figures, one entry
per model, distances between zero and the map's diagonal; bad values are one-line errors."""

import json
import math
from pathlib import Path

import pytest
from engine_helpers import micro_checkpoints

from detr_irpe.commands.cli import run_main
from detr_irpe.commands.attention import main


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return micro_checkpoints(tmp_path_factory.mktemp("attention"),
                             {"abs": ("null", 0, []), "abs_rel": ("rpe-2.0-product-ctx-1-k", 1, [])})


def test_two_checkpoints_side_by_side(env, tmp_path, capsys):
    argv = ["--checkpoint", str(env["ckpt"]["abs"]), "--checkpoint", str(env["ckpt"]["abs_rel"]),
            "--images", "5", "--output-dir", str(tmp_path)]
    assert run_main(main, argv) == 0
    data = json.loads((tmp_path / "attention_distance.json").read_text())
    assert list(data) == ["abs", "abs_rel"]
    for d in data.values():
        h, w = max(d["feature_shapes"])
        assert d["images"] == 5
        assert all(0 < v < math.hypot(h, w) for row in d["distance_cells"] for v in row)
    assert (tmp_path / "attention_distance.png").is_file() and (tmp_path / "attention_offsets.png").is_file()
    assert "abs_rel: mean attention distance" in capsys.readouterr().out


def test_the_default_output_dir_and_labels_from_run_folders(env, tmp_path, monkeypatch, capsys):
    """Without --output-dir: outputs/attention; a run's checkpoint*.pth is named after its folder."""
    run = tmp_path / "tiny_irpe"
    run.mkdir()
    (run / "checkpoint_best.pth").write_bytes(env["ckpt"]["abs_rel"].read_bytes())
    monkeypatch.chdir(tmp_path)
    assert run_main(main, ["--model", str(run / "checkpoint_best.pth"), "--images", "2"]) == 0
    out = tmp_path / "outputs" / "attention"
    data = json.loads((out / "attention_distance.json").read_text())
    assert list(data) == ["tiny_irpe"] and data["tiny_irpe"]["images"] == 2
    printed = capsys.readouterr().out
    assert f"figure: {Path('outputs/attention/attention_offsets.png')}" in printed
    written = str(Path("outputs/attention/attention_distance.json"))
    assert json.loads(printed.strip().splitlines()[-1]) == {"attention": written}


def test_bad_values_are_one_line_errors(env, tmp_path, capsys):
    argv = ["--checkpoint", str(env["ckpt"]["abs"]), "--images", "0", "--output-dir", str(tmp_path)]
    assert run_main(main, argv) == 2
    assert "--images must be > 0" in capsys.readouterr().err
    # an --output-dir inside a regular file: refused before any model is loaded
    taken = tmp_path / "attention"
    taken.write_text("a file")
    out = taken / "run1"
    assert run_main(main, ["--checkpoint", str(env["ckpt"]["abs"]), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --output-dir {out} is inside {taken}, which is a file, not a folder; "
                   "give a folder to write into\n")
    assert taken.read_text() == "a file"
