"""Errors caused by the user's input: reported in one line, without a traceback."""


class UserError(Exception):
    """Something the user can fix: a bad config value, a missing file, malformed data."""


class ConfigError(UserError, ValueError):
    """An invalid configuration value or combination of values."""


def first_line(error: BaseException) -> str:
    """The first line of an error's cause, or of the error (libraries' messages span lines)."""
    text = str(error.__cause__ or error).strip() or str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
