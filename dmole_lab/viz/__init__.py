"""Figures and notebook widgets (torch-free): plots, explorers, stored results, per-run reports."""
