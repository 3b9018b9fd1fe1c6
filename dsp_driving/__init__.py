"""dsp_driving: small, trustworthy deep-RL driving policies through dynamic structured pruning."""

__version__ = "0.1.0"
