"""Early stopping (engine/hooks.py EarlyStopping): a run whose watched metric stops improving ends
as a finished run, says why in train.log and run_info.json, is not resumed by the launchers and
is compared as finished."""

import json

from engine_helpers import micro, tool_main

from detr_irpe.analysis.compare import discover_runs
from detr_irpe.engine.run_folder import RunFolder


def test_a_run_that_stops_improving_ends_as_finished_and_says_why(tmp_path):
    out = tmp_path / "run"
    # AP50 cannot improve by more than 1.0 (a fraction): the second evaluation ends the run
    overrides = micro(tmp_path / "cache", out, "train.epochs=5", "train.early_stop_metric=AP50",
                      "train.early_stop_patience=1", "train.early_stop_min_delta=1.0")
    assert tool_main("train")(overrides) == 0
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and log[-1]["stopped_early"] is True
    info = json.loads((out / "run_info.json").read_text())
    assert info["epochs"] == 5 and info["stopped_early"]["epoch"] == 2 and info["stopped_early"]["metric"] == "AP50"
    assert "early stop after epoch 2: AP50 has not improved" in (out / "train.log").read_text()
    assert RunFolder(out).state(epochs=5) == "done"
    runs, _ = discover_runs([out])
    assert len(runs) == 1 and runs[0].finished
    # resuming a stopped run trains nothing more
    assert tool_main("train")(overrides + ["--resume", "auto"]) == 0
    assert len((out / "log.jsonl").read_text().splitlines()) == 2
