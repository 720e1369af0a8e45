"""Frozen values and specs, NumPy only: what the stages hand each other and what a run directory holds."""
