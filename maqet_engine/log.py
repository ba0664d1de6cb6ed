"""Library logging: a NullHandler on the package logger, a child logger per module."""

from __future__ import annotations

import logging

_ROOT = logging.getLogger("maqet_engine")
if not any(isinstance(h, logging.NullHandler) for h in _ROOT.handlers):
    _ROOT.addHandler(logging.NullHandler())


def get_logger(name: str) -> logging.Logger:
    """Logger for a maqet module (``name`` is its ``__name__``)."""
    return logging.getLogger(name)
