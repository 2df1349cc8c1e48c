"""The user-error family: bad input a user can fix, reported as one ``error:`` line and exit
status 2. Any other exception is a bug and shows its traceback (exit status 1)."""

from __future__ import annotations


class UserError(Exception):
    """Input the user can fix; the message names the file, field or value and what was expected."""


class SourceError(UserError):
    """A model source (file, URL, zoo name, Hugging Face folder) that cannot be loaded."""


class DeviceError(UserError):
    """A device that was asked for and is not on this machine."""


class OutputError(UserError):
    """An output path that cannot be written (a folder that holds a run, no permission, full disk)."""


class UsageError(UserError):
    """A command-line value that cannot be used (outside the config)."""
