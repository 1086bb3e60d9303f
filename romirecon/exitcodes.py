"""Exit codes and the error types that map to them: the one place they are defined.

The codes are a public contract (cron jobs and CI gates branch on them) and never change meaning.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    PASS = 0  # run complete, every check passed (warnings allowed)
    SLA_BREACHED = 1  # run complete, at least one check failed (or warned, with --fail-on warn)
    USAGE = 2  # bad command line, project file or mapping file
    RUNTIME = 3  # results incomplete: an input could not be read, a stage failed
    INCONCLUSIVE = 4  # an input is missing, empty or stale: nothing to judge


class RomireconError(Exception):
    """An error a user can act on: printed as one line, no traceback (unless --debug)."""

    exit_code: ExitCode = ExitCode.RUNTIME

    def __init__(self, message: str, *, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class ConfigError(RomireconError):
    """The project file or a mapping file is invalid. `details` lists every problem found."""

    exit_code = ExitCode.USAGE


class InputError(RomireconError):
    """An input file exists but cannot be read or parsed (results would be incomplete)."""

    exit_code = ExitCode.RUNTIME


class MissingInputError(RomireconError):
    """An input is missing, empty or stale: the run cannot judge anything."""

    exit_code = ExitCode.INCONCLUSIVE


class LockedError(RomireconError):
    """Another run holds the state folder's lock."""

    exit_code = ExitCode.RUNTIME


class ResourceError(RomireconError):
    """The run needs more memory or temp space than the project allows (state.memory_limit,
    state.temp_dir): the message says which setting to raise."""

    exit_code = ExitCode.RUNTIME
