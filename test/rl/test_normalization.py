"""Running statistics: observation normaliser and reward scaler."""

from __future__ import annotations

import numpy as np
import torch

from dsp_driving.rl.normalization import ObsNormalizer, RewardScaler


def test_obs_normalizer_matches_numpy_statistics() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(300, 2))
    norm = ObsNormalizer(2, clip=10.0)
    for chunk in np.array_split(data, 7):
        norm.update(torch.as_tensor(chunk))
    # The prior count of 1e-4 at mean 0, var 1 is negligible at this size.
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(norm.var.numpy(), data.var(0), rtol=1e-5)
    assert norm.count.item() == np.float64(300 + 1e-4)
    out = norm(torch.tensor([[3.0, 1000.0]]))
    assert out.dtype == torch.float32
    assert out[0, 1].item() == 10.0  # clipped


def test_obs_normalizer_disabled_is_identity() -> None:
    norm = ObsNormalizer(2, enabled=False)
    norm.update(torch.ones(4, 2) * 5)
    x = torch.tensor([[1.5, -2.0]])
    assert torch.equal(norm(x), x)
    assert norm.mean.tolist() == [0.0, 0.0]


def test_reward_scaler_state_round_trip() -> None:
    scaler = RewardScaler(2, gamma=0.9, clip=5.0)
    for _ in range(5):
        scaler(np.array([1.0, 2.0]), np.array([False, True]))
    clone = RewardScaler(2, gamma=0.9, clip=5.0)
    clone.load_state_dict(scaler.state_dict())
    a = scaler(np.array([0.5, 0.5]), np.array([False, False]))
    b = clone(np.array([0.5, 0.5]), np.array([False, False]))
    np.testing.assert_array_equal(a, b)
    assert clone.returns[1] == 0.5  # env 1 was reset by its done flag


def test_numpy_rollout_path_equals_the_torch_path_the_policy_ships_with() -> None:
    """The rollout normalises with normalize_np, the deployed actor with forward()."""
    rng = np.random.default_rng(0)
    norm = ObsNormalizer(3, clip=2.0)
    for _ in range(5):
        norm.update(rng.normal([1.0, -3.0, 50.0], [0.5, 2.0, 10.0], size=(4, 3)))
    x = rng.normal([1.0, -3.0, 50.0], [2.0, 8.0, 40.0], size=(64, 3)).astype(np.float32)
    out_np = norm.normalize_np(x)
    out_torch = norm(torch.as_tensor(x)).numpy()
    assert out_np.dtype == np.float32
    assert np.abs(out_np).max() == 2.0  # some entries hit the clip
    np.testing.assert_allclose(out_np, out_torch, atol=1e-6)
    off = ObsNormalizer(3, enabled=False)
    np.testing.assert_array_equal(off.normalize_np(x), x)
