"""detr-irpe benchmark end to end on tiny shapes: the encoder table's rows per variant and kernel,
the training step's rows per decoder and variant, its profile breakdown, and the reference
option's errors."""

import json
import subprocess
import sys

import pytest

from detr_irpe.benchmark.encoder import VARIANTS
from detr_irpe.benchmark.train_step import PHASES
from detr_irpe.commands.cli import run_main
from detr_irpe.commands.benchmark import main


def _json_objects(text: str) -> list[dict]:
    decoder, objects, i = json.JSONDecoder(), [], 0
    while (start := text.find("{", i)) >= 0:
        obj, i = decoder.raw_decode(text, start)
        objects.append(obj)
    return objects


def test_help_answers_without_importing_torch():
    code = ("import sys; from detr_irpe.commands import benchmark; benchmark.build_parser().format_help(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_encoder_table_has_a_row_per_variant_and_kernel(capsys):
    argv = ["encoder", "--device", "cpu", "--batch", "1", "--height", "3", "--width", "4", "--layers", "1",
            "--kernels", "auto", "sdpa", "flex", "--no-memory", "--repeats", "1", "--json"]
    assert main(argv) == 0
    table, = _json_objects(capsys.readouterr().out)
    rows = [(r["variant"], r["kernel"]) for r in table["rows"]]
    with_values = [n for n, s in VARIANTS.items() if s.endswith("v")]
    assert rows[0] == ("no iRPE", "auto") and table["rows"][0]["fwd+bwd ms"] > 0
    assert rows == [(n, "auto") for n in VARIANTS] + [(n, "sdpa") for n in VARIANTS if n not in with_values]
    assert "flex: no backward pass on the cpu" in table["left out"]


def test_train_step_table_has_a_row_per_decoder_and_variant(capsys):
    argv = ["train-step", "--device", "cpu", "--backbone", "resnet18", "--height", "64", "--width", "64",
            "--decoders", "detr", "conditional", "dab", "--no-memory", "--repeats", "1", "--json"]
    assert main(argv) == 0
    table, = _json_objects(capsys.readouterr().out)
    rows = [(r["decoder"], r["variant"]) for r in table["rows"]]
    assert rows == [(d, v) for d in ("detr", "conditional", "dab") for v in ("no iRPE", "rpe-2.0-product-ctx-1-k")]
    assert all(r["s/step"] > 0 and r["iRPE overhead"].endswith("%") for r in table["rows"])
    assert [r["iRPE overhead"] for r in table["rows"]][::2] == ["+0.0%"] * 3  # each decoder against its own


def test_train_step_profile_breaks_a_step_into_its_phases(capsys):
    argv = ["train-step", "--profile", "--device", "cpu", "--backbone", "resnet18", "--height", "64", "--width", "64",
            "--profile-steps", "1", "--top", "5", "--json"]
    assert main(argv) == 0
    phases, ops = _json_objects(capsys.readouterr().out)
    assert [r["phase"] for r in phases["rows"]] == list(PHASES)
    assert all(r["host ms/step"] > 0 for r in phases["rows"])
    assert sum(r["% of wall"] for r in phases["rows"]) <= 100.5
    assert float(phases["operators (outermost aten calls) per step"]) > 100
    assert len(ops["rows"]) == 5 and ops["rows"][0]["self cpu ms/step"] >= ops["rows"][-1]["self cpu ms/step"]


def test_a_reference_path_that_is_not_the_reference_code_is_one_line(tmp_path, capsys):
    argv = ["infer", "--device", "cpu", "--reference", str(tmp_path), "--batches", "1", "--dtypes", "fp32"]
    assert run_main(main, argv) == 2
    assert "expected the DETR-with-iRPE folder" in capsys.readouterr().err


def test_bad_options_are_one_line(capsys):
    assert run_main(main, ["encoder", "--kernels", "bogus"]) == 2
    assert "'bogus' is not an attention kernel" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train-step", "--precisions", "fp16"])
    assert exc.value.code == 2 and "invalid choice: 'fp16'" in capsys.readouterr().err


def test_train_step_options_add_a_row_per_variant_with_the_option(capsys):
    argv = ["train-step", "--device", "cpu", "--backbone", "resnet18", "--height", "64", "--width", "64",
            "--decoders", "detr", "dab", "--ema", "--num-groups", "2", "--dn-groups", "2", "--no-memory",
            "--repeats", "1", "--json"]
    assert main(argv) == 0
    table, = _json_objects(capsys.readouterr().out)
    rows = [(r["decoder"], r["variant"]) for r in table["rows"]]
    base = ["no iRPE", "rpe-2.0-product-ctx-1-k"]
    options = ["", " + EMA", " + 2 groups"]
    assert rows == [("detr", n + o) for o in options for n in base] + [("dab", n + o) for o in [*options, " + DN 2"]
                                                                          for n in base]  # denoising: dab only
    assert all(r["s/step"] > 0 for r in table["rows"])
