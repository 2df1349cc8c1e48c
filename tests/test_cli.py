"""detr_irpe.commands.cli: overrides anywhere among the options, no option guessed from a prefix, and the
line between user errors (one line, exit 2) and bugs (traceback, exit 1)."""

import subprocess
import sys
from pathlib import Path

import pytest

from detr_irpe.commands.cli import Parser, add_overrides_argument, parse_command_line, run_main
from detr_irpe.commands import COMMANDS, command_module
from detr_irpe.core.errors import UserError


def parser():
    p = Parser(prog="t")
    p.add_argument("--config")
    p.add_argument("--resume", nargs="?", const="auto")
    p.add_argument("--output-dir")
    add_overrides_argument(p)
    return p


def test_overrides_are_collected_wherever_they_stand_in_order():
    args = parse_command_line(parser(), ["a.b=1", "--config", "c.yaml", "x.y=2", "--output-dir", "o", "z=3"])
    assert args.config == "c.yaml" and args.output_dir == "o"
    assert args.overrides == ["a.b=1", "x.y=2", "z=3"]


def test_a_bare_resume_means_auto_and_leaves_the_next_override_alone():
    args = parse_command_line(parser(), ["--resume", "train.output_dir=out", "train.epochs=1"])
    assert args.resume == "auto"
    assert args.overrides == ["train.output_dir=out", "train.epochs=1"]
    assert parse_command_line(parser(), ["--resume", "ck.pth"]).resume == "ck.pth"


def test_an_option_prefix_is_not_guessed(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_command_line(parser(), ["--out", "x.png"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --out" in capsys.readouterr().err


def test_a_token_that_is_no_override_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_command_line(parser(), ["--config", "c.yaml", "stray"])
    assert exc.value.code == 2
    assert "stray" in capsys.readouterr().err


def test_a_user_error_is_one_line_and_status_2(capsys):
    def main(argv):
        raise UserError("config x.yaml: model.nheads must be > 0, got 0")

    assert run_main(main, []) == 2
    err = capsys.readouterr().err
    assert err == "error: config x.yaml: model.nheads must be > 0, got 0\n"


@pytest.mark.parametrize("exc", [KeyError("state"), ValueError("a bug"), OSError("a bug")])
def test_any_other_exception_is_a_bug_that_keeps_its_traceback(exc):
    def main(argv):
        raise exc

    with pytest.raises(type(exc)):
        run_main(main, [])


def test_a_bug_exits_1_with_a_traceback_from_the_command_line(tmp_path):
    code = ("import sys; from detr_irpe.commands.cli import run_main\n"
            "def main(argv):\n    raise KeyError('missing')\n"
            "sys.exit(run_main(main))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "KeyError: 'missing'" in proc.stderr


def test_every_command_builds_its_parser_without_importing_torch():
    code = ("import sys\nfrom detr_irpe.commands import COMMANDS, command_module\n"
            "for name in COMMANDS:\n    command_module(name).build_parser().format_help()\n"
            "print(sorted(m for m in ('torch', 'scipy', 'numpy', 'yaml') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_every_registered_command_has_a_parser_and_a_main():
    for name in COMMANDS:
        module = command_module(name)
        assert callable(module.main) and module.build_parser().prog


def test_unknown_command_suggests_the_nearest(capsys):
    from detr_irpe.commands import main

    assert main(["evalute"]) == 2
    assert "did you mean 'evaluate'" in capsys.readouterr().err


#: the commands that read a model source and write into a folder, with their sub-commands
OUTPUT_COMMANDS = {"analyze": "outputs/analysis", "attention": "outputs/attention", "export": "outputs/export",
                   "visualize predictions": "outputs/figures", "visualize attention": "outputs/figures",
                   "visualize rpe": "outputs/figures", "predict": "outputs/predictions", "evaluate": None}


def _options(name: str) -> dict:
    """Option string -> argparse action of command ``name`` (``visualize rpe``: the sub-command's)."""
    import argparse

    command, *sub = name.split()
    parser = command_module(command).build_parser()
    if sub:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[sub[0]]
    return {s: a for a in parser._actions for s in a.option_strings}


@pytest.mark.parametrize("name", OUTPUT_COMMANDS)
def test_the_commands_share_one_name_and_meaning_per_option(name):
    from detr_irpe.commands.cli import CONFIG_HELP, DEVICE_HELP, SOURCE_HELP

    options = _options(name)
    assert "--out" not in options
    out = options["--output-dir"]
    assert out.dest == "output_dir" and out.default == OUTPUT_COMMANDS[name] and out.metavar == "DIR"
    source = options["--checkpoint"]
    assert source.option_strings == ["--checkpoint", "--model"] and source.dest == "checkpoint"
    assert source.help.startswith(SOURCE_HELP)
    if "--device" in options:  # evaluate takes the device from the config (train.device)
        assert options["--device"].default == "auto" and options["--device"].help.endswith(DEVICE_HELP)
    if "--config" in options:
        assert options["--config"].option_strings == ["--config", "--config-file"]
        assert options["--config"].help == CONFIG_HELP
    every = {"--output-dir", "--checkpoint"} | ({"--device"} if name != "evaluate" else set())
    assert every <= set(options)
    assert ("--config" in options) == (name not in ("analyze", "attention"))


def test_the_output_dir_is_refused_only_when_it_cannot_be_a_folder(tmp_path):
    from detr_irpe.commands.cli import check_output_dir
    from detr_irpe.core.errors import OutputError

    assert check_output_dir(tmp_path) == tmp_path
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checked, not created
    taken = tmp_path / "taken"
    taken.write_text("x")
    with pytest.raises(OutputError, match=f"^--output-dir {taken} is a file, not a folder"):
        check_output_dir(taken)
    with pytest.raises(OutputError, match=f"^--draw {taken / 'a'} is inside {taken}, which is a file"):
        check_output_dir(taken / "a", "--draw")


def test_a_model_is_named_after_its_source():
    from detr_irpe.commands.naming import default_label, model_file_name

    assert default_label("outputs/tiny_irpe/checkpoint_best.pth") == "tiny_irpe"  # a run's checkpoint
    assert default_label("outputs/tiny_irpe/checkpoint.pth") == "tiny_irpe"
    assert default_label("weights/detr-r50-e632da11.pth") == "detr-r50-e632da11"  # a file
    assert default_label("https://dl.fbaipublicfiles.com/detr/detr-r50-e632da11.pth") == "detr-r50-e632da11"
    assert default_label("irpe-detr-r50-9x9-300e") == "irpe-detr-r50-9x9-300e"  # a zoo name
    assert default_label("hf/detr-resnet-50/") == "detr-resnet-50"  # a Hugging Face folder
    assert model_file_name("outputs/tiny_irpe/checkpoint_best.pth", ".onnx") == "tiny_irpe.onnx"
    assert model_file_name("detr-r50", ".onnx") == "detr-r50.onnx"


def test_every_command_runs_as_a_tools_script_too():
    from detr_irpe.commands import COMMANDS

    tools = Path(__file__).resolve().parents[1] / "tools"
    for name in COMMANDS:
        script = tools / f"{name.replace('-', '_')}.py"
        assert script.is_file(), f"no {script.name} for command {name}"
        assert f'run_tool("{name}")' in script.read_text(), script
