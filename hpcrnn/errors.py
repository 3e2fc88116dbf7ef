"""Project exceptions: one-line messages shown to the user by the CLI without a traceback."""


class HpcrnnError(Exception):
    """Base class of every error hpcrnn reports as a one-line message."""


class ConfigError(HpcrnnError):
    """A bad config value, config key or command-line flag."""


class DataError(HpcrnnError):
    """A bad, missing or inconsistent data file."""
