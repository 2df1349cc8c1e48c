"""compare: rows of fake run folders pair each variant's seeds with the baseline's, the table and
the verdict table show the intervals, the seed advice follows the spread, the plots are images."""

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from detr_irpe.analysis.compare import (StudyError, aggregate, discover_runs, plot, seed_advice, table, to_csv,
                                        verdict_table)
from detr_irpe.analysis.stats import t_interval


def _write_run(folder, variant, seed, aps):
    folder.mkdir(parents=True)
    lines = []
    for epoch, ap in enumerate(aps, 1):
        lines.append(json.dumps({"epoch": epoch, "AP": ap, "AP50": min(1.0, 2 * ap), "AP75": ap / 2, "APs": ap,
                                 "APm": ap, "APl": -1.0, "train_loss": 10 - epoch, "train_loss_ce": 1.0 / epoch,
                                 "train_loss_bbox": 0.3, "train_loss_giou": 0.7, "train_seconds": 30.0 + seed}))
    (folder / "log.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "variant.json").write_text(json.dumps({"variant": variant, "seed": seed}))


@pytest.fixture
def study(tmp_path):
    """A study of three variants x five seeds: 'up' gains 3 AP on every seed, 'same' gains noise."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.15, 0.35, size=5)
    finals = {"abs": base, "up": base + 0.03 + rng.normal(0, 0.003, 5), "same": base + rng.normal(0, 0.03, 5)}
    for variant, values in finals.items():
        for seed, v in enumerate(values):
            _write_run(tmp_path / variant / f"seed{seed}", variant, seed, [v / 3, v / 2, v])
    (tmp_path / "study.json").write_text(json.dumps({"baseline": "abs", "variants": {"abs": [], "up": [], "same": []}}))
    return tmp_path, finals


def test_paired_differences_are_per_seed_differences(study):
    folder, finals = study
    runs, baseline = discover_runs([folder])
    rows = aggregate(runs, baseline)
    assert [r.variant for r in rows] == ["abs", "up", "same"] and not rows[0].paired
    for r in rows[1:]:
        d = r.paired["AP"]
        assert d.seeds == (0, 1, 2, 3, 4)
        assert np.allclose(d.differences, finals[r.variant] - finals["abs"])
        assert d.interval == t_interval(finals[r.variant] - finals["abs"])
    assert rows[1].paired["AP"].verdict == "better"
    assert rows[2].paired["AP"].verdict == "no difference detected at 5 seeds"


def test_tables_show_intervals_and_verdicts(study):
    rows = aggregate(*discover_runs([study[0]]))
    head, body = table(rows)
    up = rows[1].paired["AP"].interval
    assert head[8] == "dAP vs abs [95% CI]" and body[0][8] == "(baseline)"
    assert body[1][8] == f"{100 * up.mean:+.1f} [{100 * up.low:+.1f}, {100 * up.high:+.1f}]"
    vhead, vbody = verdict_table(rows)
    assert [c[:2] for c in vbody] == [[v, m] for v in ("up", "same") for m in ("AP", "AP50", "AP75")]
    assert vbody[0][5] == "better" and vbody[0][2] == "5"
    assert vhead[-1] == "seeds for ±1"
    reader = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert reader[1]["paired_AP_verdict"] == "better"
    assert float(reader[1]["paired_AP_ci_low"]) == pytest.approx(up.low)
    assert reader[0]["paired_AP_mean"] == ""


def test_seed_advice_asks_more_of_a_noisy_difference(study):
    rows = aggregate(*discover_runs([study[0]]))
    up, same = seed_advice(rows)
    assert "reached with the 5 seeds run" in up
    assert same.startswith("for ±1 AP (same vs abs): about ") and "more seeds" in same


def test_plots_are_800_by_500_images(study, tmp_path):
    rows = aggregate(*discover_runs([study[0]]))
    paths = plot(rows, tmp_path / "plots")
    assert [p.name for p in paths] == ["ap_vs_epoch.png", "losses.png", "final_ap.png", "paired_differences.png"]
    for p in paths:
        with Image.open(p) as im:
            assert im.size == (800, 500) and len(np.unique(np.asarray(im.convert("L")))) > 10


def test_a_folder_without_runs_is_a_user_error(tmp_path):
    with pytest.raises(StudyError, match="no run folders"):
        discover_runs([tmp_path])
    with pytest.raises(StudyError, match="does not exist"):
        discover_runs([tmp_path / "missing"])


def test_unfinished_runs_are_left_out(study, caplog):
    folder, _ = study
    (folder / "up" / "seed4" / "run_info.json").write_text(json.dumps({"epochs": 5}))
    with caplog.at_level("WARNING"):
        runs, _ = discover_runs([folder])
    assert len(runs) == 14 and not any(r.folder.name == "seed4" and r.variant == "up" for r in runs)
    assert "epoch 3 of 5" in caplog.text
    rows = aggregate(runs, "abs")
    assert rows[1].paired["AP"].seeds == (0, 1, 2, 3)


def test_the_compare_command_leaves_out_a_log_line_of_damaged_bytes(study, capsys, caplog):
    from detr_irpe.commands.cli import run_main
    from detr_irpe.commands.compare import main

    folder, _ = study
    log = folder / "up" / "seed2" / "log.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(lines[0] + b"\x80\xff not utf-8\n" + b"".join(lines[1:]))
    assert run_main(main, [str(folder), "--no-plots"]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "up/seed2/log.jsonl, line 2: not a JSON record" in caplog.text
    assert "up" in out.out
