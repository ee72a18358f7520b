"""The one base class of every failure a user can act on.

Each command's `main` catches `UserError` alone, prints one line (`python -m onepfrac.generate:
error: <message>`, or `error: <message>` from the trainer) and exits with the error's
`exit_code`: 2 for bad input (argparse's convention), 1 for work that could not be done (a
bounded search that ran out of tries, a download that failed), 3 for a diverged training run.
Subclasses keep their older built-in bases (ValueError, RuntimeError) so existing callers that
catch those still do.
"""

from __future__ import annotations


class UserError(Exception):
    """A failure caused by, and explained to, the user; never shown as a traceback."""

    exit_code = 2


class UsageError(UserError, ValueError):
    """A bad option value or file: the message names it, the value given and what is allowed."""
