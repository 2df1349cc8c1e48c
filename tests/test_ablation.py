"""An ablation of two micro variants x two seeds runs end to end; the comparison table has one row
per variant with numbers that match the runs' own logs; the plots are real images."""

import csv
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import micro, tool_main
from PIL import Image

from detr_irpe.analysis.ablation import load_ablation, run_specs
from detr_irpe.config import ConfigError, load_config, save_config

ROOT = Path(__file__).resolve().parents[1]



def _study_files(tmp_path):
    base = tmp_path / "base.yaml"
    save_config(load_config(None, micro(tmp_path / "cache", tmp_path / "unused", "train.epochs=1")), base)
    ab = tmp_path / "two.yaml"
    ab.write_text("name: two\nbase: base.yaml\nbaseline: abs\nseeds: [0, 1]\n"
                  "variants:\n  abs: {model.irpe: null}\n  abs_rel: [model.irpe=rpe-2.0-product-ctx-1-k]\n")
    return ab


def test_ablation_runs_and_compare_reads_the_answer(tmp_path, capsys):
    ab = _study_files(tmp_path)
    study = tmp_path / "study"
    ablate, compare = tool_main("ablate"), tool_main("compare")
    assert ablate([str(ab), "--study-dir", str(study), "--dry-run"]) == 0
    assert "--config" in capsys.readouterr().out
    assert not (study / "abs").exists()  # a dry run writes nothing

    assert ablate([str(ab), "--study-dir", str(study)]) == 0
    runs = sorted(p.parent for p in study.rglob("log.jsonl"))
    assert [str(p.relative_to(study)) for p in runs] == ["abs/seed0", "abs/seed1", "abs_rel/seed0", "abs_rel/seed1"]
    assert json.loads((study / "abs_rel" / "seed1" / "variant.json").read_text())["seed"] == 1
    assert load_config(study / "abs" / "seed1" / "config.yaml").train.seed == 1
    # running it again skips finished runs
    before = (study / "abs" / "seed0" / "log.jsonl").read_text()
    assert ablate([str(ab), "--study-dir", str(study)]) == 0
    assert (study / "abs" / "seed0" / "log.jsonl").read_text() == before

    assert compare([str(study), "--markdown", str(tmp_path / "t.md"), "--csv", str(tmp_path / "t.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert [r["variant"] for r in rows] == ["abs", "abs_rel"] and all(r["runs"] == "2" for r in rows)
    for r in rows:
        finals = [json.loads((study / r["variant"] / f"seed{s}" / "log.jsonl").read_text().splitlines()[-1])
                  for s in (0, 1)]
        for m in ("AP", "AP50", "AP75", "APs", "APm"):
            assert abs(float(r[f"{m}_mean"]) - statistics.fmean(f[m] for f in finals)) < 1e-12
            assert abs(float(r[f"{m}_std"]) - statistics.stdev(f[m] for f in finals)) < 1e-12
        info = json.loads((study / r["variant"] / "seed0" / "run_info.json").read_text())
        assert int(r["parameters"]) == info["parameters"] and int(r["irpe_parameters"]) == info["irpe_parameters"]
    assert int(rows[0]["irpe_parameters"]) == 0 and int(rows[1]["irpe_parameters"]) > 0
    assert abs(float(rows[0]["delta_AP"])) == 0.0
    assert rows[1]["paired_AP_seeds"] == "2" and rows[1]["paired_AP_verdict"]
    md = (tmp_path / "t.md").read_text()
    assert "dAP vs abs [95% CI]" in md and "| abs_rel | 2 |" in md and "| abs_rel | AP75 | 2 |" in md
    assert "for ±1 AP (abs_rel vs abs)" in md
    for name in ("ap_vs_epoch.png", "losses.png", "final_ap.png", "paired_differences.png"):
        with Image.open(study / name) as im:
            assert im.size == (800, 500) and len(np.unique(np.asarray(im.convert("L")))) > 10


def test_bad_ablation_files_are_named(tmp_path):
    ab = _study_files(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(ab.read_text().replace("model.irpe: null", "model.irpee: null"))
    with pytest.raises(ConfigError, match="variant 'abs'.*unknown key 'model.irpee'"):
        load_ablation(bad)
    bad.write_text(ab.read_text().replace("baseline: abs", "baseline: nope"))
    with pytest.raises(ConfigError, match="baseline 'nope' is not one of the variants"):
        load_ablation(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_ablation(tmp_path / "missing.yaml")


def test_every_shipped_ablation_file_loads():
    files = sorted((ROOT / "configs" / "ablations").glob("*.yaml"))
    studies = {f.stem.split("_", 1)[1] for f in files}
    assert studies == {"position", "method", "mode", "rpe_on", "shared", "buckets", "decoders", "ema", "groups", "denoising"}
    for f in files:
        ab = load_ablation(f)
        assert ab.baseline in ab.variants
        for overrides in ab.variants.values():  # every variant is a valid config
            load_config(ab.base, [*ab.overrides, *overrides])


def test_runs_go_seed_by_seed(tmp_path):
    ab = load_ablation(ROOT / "configs" / "ablations" / "tiny_position.yaml")
    names = [s.name for s in run_specs(ab, tmp_path)]
    assert names == [f"{v}/seed{s}" for s in ab.seeds for v in ab.variants]
    assert [s.name for s in run_specs(ab, tmp_path, only=["rel"])] == [f"rel/seed{s}" for s in ab.seeds]
