"""Probes: recorders of what happens inside a model (hooks, sensitivity proxies, training dynamics).

Everything here touches torch; the analysis of what probes return (profiles, rank correlations)
lives in the torch-free :mod:`dmole_lab.analysis.profiles`.
"""

from .hooks import Cache, hooked, record
from .sensitivity import PROXIES, check_proxies, probe_batches, sensitivity

__all__ = ["Cache", "hooked", "record", "PROXIES", "check_proxies", "probe_batches",
           "sensitivity"]
