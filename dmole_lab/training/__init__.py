"""The training loop: one stage of optimisation, and evaluation by generation."""
