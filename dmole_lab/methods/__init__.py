"""Continual methods. Importing this package registers every method."""

from . import (  # noqa: F401
    branchlora,  # "branchlora"
    dmole,  # "dmole"
    ewc,  # "ewc"
    lwf,  # "lwf"
    mixture,  # "moelora", "mole", "mola"
    multitask,  # "multitask"
    olora,  # "o-lora"
    seq_ft,  # "seq-ft"
    seq_lora,  # "seq-lora"
)
from .base import METHODS, ContinualMethod, check_method, make_method, register

__all__ = ["METHODS", "ContinualMethod", "check_method", "make_method", "register"]
