"""Errors that are the user's to fix: the command line prints them as one line and exits 2, no traceback."""


class LoyalError(Exception):
    """A problem with the user's input or environment, stated so that they can fix it."""


class LoyalWarning(UserWarning):
    """Something the user should know, that does not stop the command (stale features, a champion that cannot be
    measured). Never filtered; an error in the tests, where none should pass unnoticed."""
