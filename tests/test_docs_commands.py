"""Every command line shown in the README and docs parses with the command it names, and its
``--config`` and ``key=value`` overrides load as a config (the commands that are cheap here also
run)."""

import re
import shlex
from pathlib import Path

import pytest

from detr_irpe.commands.cli import parse_command_line
from detr_irpe.config import ConfigError, load_config
from detr_irpe.commands import COMMANDS, command_module, main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "datasets" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: how a documented line starts -> how many words precede the command's own arguments
LAUNCHERS = (
    (re.compile(r"^detr-irpe (\S+)"), 2),
    (re.compile(r"^python -m detr_irpe (\S+)"), 4),
    (re.compile(r"^torchrun .*?-m detr_irpe (\S+)"), None),
    (re.compile(r"^python tools/(\w+)\.py"), 2),
)
#: tools that are not commands of this package (detectron2's own command line)
NOT_COMMANDS = ("d2_train_net",)


def code_blocks(text: str) -> list[str]:
    """The contents of the fenced code blocks of a Markdown text."""
    blocks, current = [], None
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line.strip())
    return blocks


def documented_lines() -> list[tuple[str, str]]:
    """(where, command line) of every shell line in the docs' code blocks, continuations joined."""
    found = []
    for doc in DOCS:
        for block in code_blocks(doc.read_text()):
            joined = re.sub(r"\\\n\s*", " ", block)
            for line in joined.splitlines():
                line = line.split(" #", 1)[0].strip()
                line = re.sub(r"^(\w+=\S+ )+", "", line)  # environment assignments before the command
                if any(p.match(line) for p, _ in LAUNCHERS):
                    found.append((f"{doc.relative_to(ROOT)}: {line[:60]}", line))
    return found


def command_and_argv(line: str) -> tuple[str, list[str]]:
    words = shlex.split(line)
    for pattern, skip in LAUNCHERS:
        m = pattern.match(line)
        if m:
            name = m.group(1).replace("_", "-")
            if skip is None:
                skip = words.index("detr_irpe") + 2
            return name, words[skip:]
    raise AssertionError(line)


LINES = documented_lines()


def test_the_docs_show_command_lines():
    names = {command_and_argv(line)[0] for _, line in LINES}
    assert {"train", "evaluate", "ablate", "compare", "zoo"} <= names


@pytest.mark.parametrize("line", [line for _, line in LINES], ids=[where for where, _ in LINES])
def test_a_documented_command_line_parses(line):
    if line in ("detr-irpe --help", "detr-irpe -h"):
        assert main(["--help"]) == 0
        return
    name, argv = command_and_argv(line)
    if name.replace("-", "_") in NOT_COMMANDS:
        pytest.skip(f"{name} is detectron2's command line")
    assert name in COMMANDS, f"{line}: no command {name!r}"
    if argv and argv[0] in ("-h", "--help"):
        with pytest.raises(SystemExit) as exc:
            parse_command_line(command_module(name).build_parser(), argv)
        assert exc.value.code == 0
        return
    parser = command_module(name).build_parser()
    if name == "submit":  # its own options, then train's
        args, rest = parser.parse_known_args(argv)
        load_documented_config(parse_command_line(command_module("train").build_parser(), rest))
        return
    load_documented_config(parse_command_line(parser, argv))


def load_documented_config(args) -> None:
    """Load the config a parsed command line names, with its overrides: a shipped config by name
    must exist; a user's own YAML file (not in this checkout) is replaced by the defaults."""
    config, overrides = getattr(args, "config", None), getattr(args, "overrides", None) or []
    if config is None and not overrides:
        return
    if config is not None and config.endswith(".yaml") and not config.startswith("configs/"):
        config = None
    load_config(config, overrides)


@pytest.mark.parametrize("line, words", [
    ("detr-irpe train --config tiny/abs_irpe train.epochz=1", "train.epochz"),
    ("detr-irpe train --config tiny/abs_irpe model.irpe=rpe-9-bogus", "rpe-9-bogus"),
    ("detr-irpe train --config tiny/abs_irpee", "tiny/abs_irpee"),
])
def test_a_documented_line_with_a_bad_config_would_fail(line, words):
    name, argv = command_and_argv(line)
    with pytest.raises(ConfigError, match=words):
        load_documented_config(parse_command_line(command_module(name).build_parser(), argv))


def test_the_documented_zoo_command_runs(capsys):
    assert main(["zoo"]) == 0
    assert "irpe-detr-r50-9x9-300e" in capsys.readouterr().out
