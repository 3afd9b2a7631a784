"""Errors that reach a user as one clear message, never as a traceback."""

from __future__ import annotations


class InputError(Exception):
    """Bad input (a traffic log, a param, a catalog): the message says what, where and what was expected."""


class ParamsError(InputError):
    """params.yaml (or a CLI flag) holds a key or value the pipeline cannot use."""


def one_line(message: object) -> str:
    """A message as the one line the CLI and the stage runner print: its lines joined by spaces, indents dropped
    (a multi-line validation summary becomes `invalid X (N checked): - column 'a': ... No outputs were written.`)."""
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip())
