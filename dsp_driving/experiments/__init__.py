"""Experiments at the paper's scale: the variants (the method and the simpler routes to a
small policy), sweeps of env x variant x seed on Ray Tune, and the table with interval
estimates over seeds (docs/experiments.md)."""
