"""Errors that reach a user as one clear message, never as a traceback."""

from __future__ import annotations


class InputError(Exception):
    """Bad input (a traffic log, a param, a catalog): the message says what, where and what was expected."""


class ParamsError(InputError):
    """params.yaml (or a CLI flag) holds a key or value the pipeline cannot use."""
