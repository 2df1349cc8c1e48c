"""Command-line plumbing shared by every command: parsing with ``key=value`` overrides anywhere
among the options, and reporting a user error as one line."""

from __future__ import annotations

import argparse
import os
import re
import sys

#: a config override on the command line: ``section.key=value``
OVERRIDE = re.compile(r"^[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*=")

OVERRIDES_HELP = ("key=value config overrides (e.g. data.root=/data/coco train.epochs=50) may appear anywhere "
                  "among the options")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that never guesses an option from its prefix and that reports a bad
    command line as one ``error:`` line with exit status 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {self.prog}: {message}\n")


def parse_command_line(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse ``argv`` with positionals (the ``key=value`` overrides among them) allowed anywhere among
    the options; a token in ``overrides`` that is not ``key=value`` is refused."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    if sub is not None and argv and argv[0] in sub.choices:
        # a command with sub-commands: the sub-command's own parser takes the rest
        args = parse_command_line(sub.choices[argv[0]], argv[1:])
        setattr(args, sub.dest, argv[0])
        return args
    if sub is not None:
        return parser.parse_args(argv)  # help, or an unknown / missing sub-command: argparse's message
    args = parser.parse_intermixed_args(argv)
    if hasattr(args, "overrides"):
        # an option with an optional value (a bare ``--resume``) must not swallow the override after it
        taken = list(args.overrides)
        for action in parser._actions:
            value = getattr(args, action.dest, None)
            if action.nargs == "?" and isinstance(value, str) and OVERRIDE.match(value) and not os.path.exists(value):
                setattr(args, action.dest, action.const)
                taken.append(value)
        args.overrides = [t for t in argv if t in taken]
    bad = [t for t in getattr(args, "overrides", None) or [] if not OVERRIDE.match(t)]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)} (overrides are key=value)")
    return args


def add_overrides_argument(parser: argparse.ArgumentParser) -> None:
    """The ``key=value`` config overrides, accepted anywhere among the options."""
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP)


def error_line(exc: BaseException) -> str:
    """The one line that tells the user what went wrong. An error re-raised from a DataLoader
    worker carries the worker's traceback: its last line is the original message."""
    text = str(exc).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text.splitlines()[0] if text else type(exc).__name__


def run_main(fn, argv=None) -> int:
    """Run a command's main; a user error (detr_irpe.core.errors.UserError) becomes ``error: <one line>``
    and exit status 2 (``DETR_IRPE_TRACEBACK=1`` shows the traceback instead). Any other exception
    is a bug: its traceback is shown and the status is 1."""
    from ..core.errors import UserError

    try:
        return fn(argv) or 0
    except UserError as exc:
        if os.environ.get("DETR_IRPE_TRACEBACK"):
            raise
        print(f"error: {error_line(exc)}", file=sys.stderr)
        return 2


#: the help of --checkpoint / --model: every kind of model source load_model reads
SOURCE_HELP = "checkpoint file, URL, zoo name or Hugging Face folder"
#: the help of --config / --config-file
CONFIG_HELP = "YAML config (path or shipped name); without it the source's own configuration is used"
#: the help of --device
DEVICE_HELP = "auto (CUDA when available), cpu, cuda or cuda:N"


def add_source_argument(parser: argparse.ArgumentParser, multiple: bool = False, required: bool = True,
                        help: str | None = None) -> None:
    """``--checkpoint`` / ``--model SOURCE`` (``args.checkpoint``): one model source, or with
    ``multiple`` a list of them (the option repeated; ``[]`` when not given)."""
    if multiple:
        parser.add_argument("--checkpoint", "--model", dest="checkpoint", action="append", required=required,
                            default=None if required else [], metavar="SOURCE",
                            help=help or f"{SOURCE_HELP} (repeat for models side by side)")
    else:
        parser.add_argument("--checkpoint", "--model", dest="checkpoint", required=required, metavar="SOURCE",
                            help=help or SOURCE_HELP)


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """``--config`` / ``--config-file`` (``args.config``): the YAML config that replaces the source's own."""
    parser.add_argument("--config", "--config-file", dest="config", help=CONFIG_HELP)


def add_device_argument(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--device`` (``args.device``), default ``auto``; ``help`` says what runs there."""
    parser.add_argument("--device", default="auto", help=f"{help}: {DEVICE_HELP}" if help else DEVICE_HELP)


def add_output_dir_argument(parser: argparse.ArgumentParser, default: str | None, help: str) -> None:
    """``--output-dir DIR`` (``args.output_dir``): the folder a command writes into; ``help`` says
    what goes there (the default is appended)."""
    suffix = f" (default {default})" if default else ""
    parser.add_argument("--output-dir", default=default, metavar="DIR", help=help + suffix)


def check_output_dir(path, option: str = "--output-dir"):
    """``path`` (a folder to write into, created later when missing) as a Path; an OutputError
    naming it when it, or the nearest part of it that exists, is not a folder or cannot be
    written. Call it before the work, so that nothing is computed for nothing."""
    from pathlib import Path

    from ..core.errors import OutputError

    folder = Path(path).expanduser()
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        where = "is" if probe == folder else f"is inside {probe}, which is"
        raise OutputError(f"{option} {path} {where} a file, not a folder; give a folder to write into")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == folder else f" ({probe} is not writable)"
        raise OutputError(f"{option} {path} cannot be written{where}")
    return folder
