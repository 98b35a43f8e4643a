"""Errors that reach the user as one clear line (the CLI prints them without a traceback)."""


class UserError(Exception):
    """Bad input from the user: the message names the bad value and says what to do instead."""
