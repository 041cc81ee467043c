"""Runners: the continual loop over a stream, probe runs, runs side by side, and sweeps."""
