"""Errors that are the user's to fix: the command line prints them as one line and exits 2, no traceback."""


class LoyalError(Exception):
    """A problem with the user's input or environment, stated so that they can fix it."""
