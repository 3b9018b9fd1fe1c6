"""The pruning step of one layer by hand: tau, ratio target and both budgets."""

from __future__ import annotations

import pytest
import torch

from dsp_driving.config import PruningConfig
from dsp_driving.pruning import select_to_prune
from dsp_driving.pruning.threshold import dynamic_threshold, prune_budget, ratio_target_alive

# Five neurons; mean 15 / 5 = 3; ascending: 0.5 (3), 1 (1), 3 (2), 4 (0), 6.5 (4).
S = torch.tensor([4.0, 1.0, 3.0, 0.5, 6.5])
ALL = torch.ones(5)


def _dynamic(**kw: float) -> PruningConfig:
    """kappa(t) = kappa_final from t = 0.5 on."""
    base = {"mode": "dynamic", "kappa_final": 1.0, "t_start": 0.0, "t_end": 0.5,
            "max_prune_frac": 1.0, "min_alive": 1}
    return PruningConfig(**(base | kw))


def _ratio(**kw: float) -> PruningConfig:
    """p(t) = ratio_final from t = 0.5 on."""
    base = {"mode": "ratio", "ratio_initial": 0.0, "t_start": 0.0, "t_end": 0.5,
            "max_prune_frac": 1.0, "min_alive": 1}
    return PruningConfig(**(base | kw))


def _hybrid(**kw: float) -> PruningConfig:
    """kappa(t) = kappa_final and p(t) = ratio_final from t = 0.5 on."""
    base = {"mode": "hybrid", "kappa_final": 1.0, "ratio_initial": 0.0, "ratio_final": 0.6,
            "t_start": 0.0, "t_end": 0.5, "max_prune_frac": 1.0, "min_alive": 1}
    return PruningConfig(**(base | kw))


def _select(s: torch.Tensor, mask: torch.Tensor, t: float, dense: int, cfg: PruningConfig
            ) -> tuple[list[int], float]:
    idx, tau = select_to_prune(s, mask, t, dense, cfg)
    return idx.tolist(), tau


def test_dynamic_threshold_is_kappa_times_the_alive_mean() -> None:
    assert dynamic_threshold(S, 1.0) == 3.0
    assert dynamic_threshold(S, 0.5) == 1.5
    assert dynamic_threshold(torch.zeros(0), 1.0) == 0.0
    # kappa = 1: tau = 3; s = 1 and s = 0.5 lie below it, lowest first
    assert _select(S, ALL, 1.0, 5, _dynamic()) == ([3, 1], 3.0)
    # kappa_final = 2: tau = 6 puts four below it
    assert _select(S, ALL, 1.0, 5, _dynamic(kappa_final=2.0)) == ([3, 1, 2, 0], 6.0)
    # tau = 1: s < tau is strict, s = 1 stays
    assert _select(S, ALL, 1.0, 5, _dynamic(kappa_final=1.0 / 3.0)) == ([3], 1.0)
    # half-way up the ramp: u = 0.5, kappa = 2 * (1 - 0.5^3) = 1.75, tau = 5.25
    assert _select(S, ALL, 0.25, 5, _dynamic(kappa_final=2.0)) == ([3, 1, 2, 0], 5.25)
    # before t_start kappa = 0: tau = 0, nothing is cut
    assert _select(S, ALL, 0.1, 5, _dynamic(t_start=0.2, t_end=0.6)) == ([], 0.0)


def test_dynamic_threshold_ignores_masked_neurons() -> None:
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0])  # s = 0.5 is already gone
    # alive mean = (4 + 1 + 3 + 6.5) / 4 = 3.625: s = 1 and s = 3 are below it
    assert _select(S, mask, 1.0, 5, _dynamic()) == ([1, 2], 3.625)
    assert _select(S, torch.zeros(5), 1.0, 5, _dynamic()) == ([], 0.0)


def test_dynamic_mode_budgets() -> None:
    # tau = 6 (kappa_final = 2) makes four candidates, [3, 1, 2, 0]
    # max_prune_frac: floor(0.4 * 5) = 2 per step, the two lowest
    assert _select(S, ALL, 1.0, 5, _dynamic(kappa_final=2.0, max_prune_frac=0.4)) == (
        [3, 1], 6.0)
    # min_alive = 3 leaves room for 2 cuts; min_alive = 5 for none
    assert _select(S, ALL, 1.0, 5, _dynamic(kappa_final=2.0, min_alive=3))[0] == [3, 1]
    assert _select(S, ALL, 1.0, 5, _dynamic(kappa_final=2.0, min_alive=5))[0] == []


def test_prune_budget_and_ratio_target_by_hand() -> None:
    assert prune_budget(5, 0.4, 1) == 2  # floor(2.0)
    assert prune_budget(5, 0.39, 1) == 1  # floor(1.95)
    assert prune_budget(5, 1.0, 3) == 2  # 5 - 3
    assert prune_budget(1, 1.0, 2) == 0  # never negative
    assert ratio_target_alive(0.6, 5, 1) == 2  # ceil(0.4 * 5)
    assert ratio_target_alive(0.7, 10, 1) == 3  # (1 - 0.7) * 10 = 3.0000000000000004
    assert ratio_target_alive(0.9, 5, 2) == 2  # ceil(0.5) = 1, min_alive 2
    assert ratio_target_alive(0.5, 5, 1) == 3  # ceil(2.5)


def test_ratio_mode_cuts_to_the_target_of_the_dense_layer() -> None:
    # p = 0.6 of 5: keep 2, cut the three lowest; tau = lowest kept importance (4)
    assert _select(S, ALL, 1.0, 5, _ratio(ratio_final=0.6)) == ([3, 1, 2], 4.0)
    # the target counts the dense layer: 5 neurons left of 10, p = 0.7 keeps 3
    assert _select(S, ALL, 1.0, 10, _ratio(ratio_final=0.7)) == ([3, 1], 3.0)
    # half-way up the ramp p = 0.8 * 0.875 = 0.7 of 10: the same
    assert _select(S, ALL, 0.25, 10, _ratio(ratio_final=0.8)) == ([3, 1], 3.0)
    # masked neurons count as gone: 4 alive, keep 2
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0])
    assert _select(S, mask, 1.0, 5, _ratio(ratio_final=0.6)) == ([1, 2], 4.0)
    assert _select(S, torch.zeros(5), 1.0, 5, _ratio(ratio_final=0.6)) == ([], 0.0)


def test_ratio_mode_budgets() -> None:
    # p = 0.9 targets ceil(0.5) = 1 alive; min_alive = 3 keeps three: tau = 3
    assert _select(S, ALL, 1.0, 5, _ratio(ratio_final=0.9, min_alive=3)) == ([3, 1], 3.0)
    # max_prune_frac = 0.4: two of the three target cuts now; tau is the importance of the
    # lowest neuron actually kept (s = 3), not of the target's lowest kept (s = 4)
    assert _select(S, ALL, 1.0, 5, _ratio(ratio_final=0.6, max_prune_frac=0.4)) == (
        [3, 1], 3.0)


def test_hybrid_mode_never_cuts_below_the_final_size() -> None:
    # kappa_final = 2: the dynamic threshold tau = 6 would cut four ([3, 1, 2, 0]), but
    # ratio_final = 0.6 of 5 keeps ceil(0.4 * 5) = 2: three go, tau = lowest kept = 4
    assert _select(S, ALL, 1.0, 5, _dynamic(kappa_final=2.0))[0] == [3, 1, 2, 0]
    assert _select(S, ALL, 1.0, 5, _hybrid(kappa_final=2.0)) == ([3, 1, 2], 4.0)
    # half-way up the ramp: dynamic (kappa 1.75, tau 5.25) cuts four, the ratio schedule
    # (p = 0.525, keep ceil(2.375) = 3) two; hybrid holds at the final size: three
    assert _select(S, ALL, 0.25, 5, _dynamic(kappa_final=2.0))[0] == [3, 1, 2, 0]
    assert _select(S, ALL, 0.25, 5, _ratio(ratio_final=0.6))[0] == [3, 1]
    assert _select(S, ALL, 0.25, 5, _hybrid(kappa_final=2.0)) == ([3, 1, 2], 4.0)
    # the final size counts the dense layer: with s = 0.5 gone 4 are alive, 2 may go
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0])
    assert _select(S, mask, 1.0, 5, _hybrid(kappa_final=2.0)) == ([1, 2], 4.0)
    # at the final size nothing more goes, however high the threshold
    at_final = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0])
    assert _select(S, at_final, 1.0, 5, _hybrid(kappa_final=100.0)) == ([], 4.0)
    # and min_alive raises the final size: ratio_final 0.9 keeps ceil(0.5) = 1, min_alive 3
    assert _select(S, ALL, 1.0, 5, _hybrid(kappa_final=2.0, ratio_final=0.9,
                                           min_alive=3)) == ([3, 1], 3.0)


def test_hybrid_mode_cuts_at_least_the_ratio_schedule() -> None:
    # kappa_final = 0: the dynamic threshold is 0 and cuts nothing
    assert _select(S, ALL, 1.0, 5, _dynamic(kappa_final=0.0)) == ([], 0.0)
    # the ratio schedule at t >= t_end (p = 0.6, keep 2) still cuts three
    assert _select(S, ALL, 1.0, 5, _hybrid(kappa_final=0.0)) == ([3, 1, 2], 4.0)
    # half-way up the ramp p = 0.525 keeps 3: two go, tau = 3
    assert _select(S, ALL, 0.25, 5, _hybrid(kappa_final=0.0)) == ([3, 1], 3.0)
    # before t_start both are 0: nothing goes, tau = the lowest alive importance
    assert _select(S, ALL, 0.1, 5, _hybrid(t_start=0.2, t_end=0.6)) == ([], 0.5)
    # uniform importances: nothing lies strictly below kappa * mean, yet the schedule cuts
    flat = torch.full((5,), 2.0)
    assert _select(flat, ALL, 1.0, 5, _dynamic(kappa_final=1.0)) == ([], 2.0)
    assert _select(flat, ALL, 0.25, 5, _hybrid(kappa_final=1.0)) == ([0, 1], 2.0)
    assert _select(flat, ALL, 1.0, 5, _hybrid(kappa_final=1.0)) == ([0, 1, 2], 2.0)


def test_hybrid_mode_between_the_bounds_follows_the_dynamic_threshold() -> None:
    # t = 0.1: u = 0.2, ramp = 1 - 0.8^3 = 0.488. Dynamic: tau = 0.488 * 3 = 1.464 cuts two;
    # the schedule p = 0.6 * 0.488 = 0.2928 keeps ceil(3.536) = 4, cuts one; the final size
    # (keep 2) allows three. Hybrid takes the dynamic two; tau = lowest kept s = 3
    idx, tau = _select(S, ALL, 0.1, 5, _dynamic())
    assert idx == [3, 1] and tau == pytest.approx(1.464)
    assert _select(S, ALL, 0.1, 5, _ratio(ratio_final=0.6))[0] == [3]
    assert _select(S, ALL, 0.1, 5, _hybrid()) == ([3, 1], 3.0)


def test_hybrid_mode_respects_the_prune_budget() -> None:
    # the final size allows three, max_prune_frac = 0.4 two per step: tau = lowest kept = 3
    assert _select(S, ALL, 1.0, 5, _hybrid(kappa_final=2.0, max_prune_frac=0.4)) == (
        [3, 1], 3.0)
    assert _select(S, ALL, 1.0, 5, _hybrid(kappa_final=0.0, max_prune_frac=0.4)) == (
        [3, 1], 3.0)
    # max_prune_frac = 0.2 of 4 alive floors to 0: nothing goes
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0])
    assert _select(S, mask, 1.0, 5, _hybrid(kappa_final=2.0, max_prune_frac=0.2)) == (
        [], 1.0)


def test_select_to_prune_is_pure() -> None:
    s, mask = S.clone(), torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0])
    select_to_prune(s, mask, 1.0, 5, _dynamic(kappa_final=2.0))
    select_to_prune(s, mask, 1.0, 5, _ratio(ratio_final=0.6))
    assert torch.equal(s, S)
    assert mask.tolist() == [1.0, 1.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("mode", ["dynamic", "ratio", "hybrid"])
def test_select_to_prune_returns_alive_indices_lowest_first(mode: str) -> None:
    torch.manual_seed(0)
    s = torch.rand(12)
    mask = (torch.arange(12) % 3 != 0).float()
    cfg = PruningConfig(mode=mode, kappa_final=1.0, ratio_final=0.5, t_start=0.0, t_end=0.5,
                        max_prune_frac=1.0, min_alive=1)
    idx, _ = select_to_prune(s, mask, 1.0, 12, cfg)
    assert idx.numel() > 0
    assert bool((mask[idx] == 1).all())
    assert s[idx].tolist() == sorted(s[idx].tolist())
    kept = mask.clone()
    kept[idx] = 0.0
    assert float(s[idx].max()) < float(s[kept > 0].min())  # the lowest alive ones go
