"""Network building blocks shared by training (rl/) and pruning (pruning/)."""

from dsp_driving.modules.mlp import (
    MLP,
    count_params,
    layer_init,
    macs,
    macs_of_sizes,
    params_of_sizes,
)

__all__ = ["MLP", "count_params", "layer_init", "macs", "macs_of_sizes", "params_of_sizes"]
