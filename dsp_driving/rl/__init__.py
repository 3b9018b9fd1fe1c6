"""PPO: networks, normalisation, losses, environments and the learner."""
