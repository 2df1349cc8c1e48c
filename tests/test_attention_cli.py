"""detr-irpe attention end to end on two micro checkpoints: the JSON and both figures, one entry
per model, distances between zero and the map's diagonal; bad values are one-line errors."""

import json
import math

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
            "--images", "5", "--out", str(tmp_path)]
    assert run_main(main, argv) == 0
    data = json.loads((tmp_path / "attention_distance.json").read_text())
    assert list(data) == ["abs", "abs_rel"]
    for d in data.values():
        h, w = max(d["feature_shapes"])
        assert d["images"] == 5
        assert all(0 < v < math.hypot(h, w) for row in d["distance_cells"] for v in row)
    assert (tmp_path / "attention_distance.png").is_file() and (tmp_path / "attention_offsets.png").is_file()
    assert "abs_rel: mean attention distance" in capsys.readouterr().out


def test_bad_values_are_one_line_errors(env, tmp_path, capsys):
    argv = ["--checkpoint", str(env["ckpt"]["abs"]), "--images", "0", "--out", str(tmp_path)]
    assert run_main(main, argv) == 2
    assert "--images must be > 0" in capsys.readouterr().err
