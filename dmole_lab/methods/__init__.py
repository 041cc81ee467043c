"""Continual methods. Importing this package registers every method."""

from . import dmole, seq_ft, seq_lora  # noqa: F401  (register "dmole", "seq-ft", "seq-lora")
from .base import METHODS, ContinualMethod, check_method, make_method, register

__all__ = ["METHODS", "ContinualMethod", "check_method", "make_method", "register"]
