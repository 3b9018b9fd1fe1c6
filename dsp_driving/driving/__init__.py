"""Driving: the observation/action contract and the simulator adapters built on it."""
