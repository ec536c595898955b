"""Errors caused by the user's input: reported in one line, without a traceback."""


class UserError(Exception):
    """Something the user can fix: a bad config value, a missing file, malformed data."""


class ConfigError(UserError, ValueError):
    """An invalid configuration value or combination of values."""
