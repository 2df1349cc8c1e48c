"""detr_irpe.commands.cli: overrides anywhere among the options, no option guessed from a prefix, and the
line between user errors (one line, exit 2) and bugs (traceback, exit 1)."""

import subprocess
import sys

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
