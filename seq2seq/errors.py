"""Errors caused by the user's input: reported in one line, without a traceback."""


class UserError(Exception):
    """Something the user can fix: a bad config value, a missing file, malformed data."""


class ConfigError(UserError, ValueError):
    """An invalid configuration value or combination of values."""


def first_line(error: BaseException) -> str:
    """The first line of an error's cause, or of the error (libraries' messages span lines)."""
    text = str(error.__cause__ or error).strip() or str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class DamagedFileError(UserError):
    """A file of a run directory that does not hold what seq2seq wrote there."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(
            f"{path} is invalid or damaged: {problem}; restore it from a copy of the run"
        )
