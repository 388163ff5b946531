import math

import pytest
import torch

from safealign.methods.rl_math import (clipped_surrogate, clipped_value_loss, combined_advantage, cost_model_loss,
                                       gae, lagrange_update, rectified, reward_model_loss, token_rewards)


def ls(x):
    return math.log(1 / (1 + math.exp(-x)))


def test_reward_model_loss_by_hand():
    got = reward_model_loss(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0]))
    assert got.item() == pytest.approx(-(ls(1.0) + ls(-1.0)) / 2)


def test_cost_model_loss_on_two_pairs_by_hand():
    # pair 1: safer answer is safe (c = -1), unsafer is unsafe (c = 2): s_safer = -1, s_unsafer = +1
    # pair 2: both unsafe (c_safer = 0.5, c_unsafer = 1.0): s = +1 for both
    c_safer, c_unsafer = torch.tensor([-1.0, 0.5]), torch.tensor([2.0, 1.0])
    got = cost_model_loss(c_safer, c_unsafer, torch.tensor([True, False]), torch.tensor([False, False]))
    pair1 = -ls(2.0 - (-1.0)) - ls(-1 * -1.0) - ls(1 * 2.0)
    pair2 = -ls(1.0 - 0.5) - ls(0.5) - ls(1.0)
    assert got.item() == pytest.approx((pair1 + pair2) / 2)


def test_lagrange_update_direction_and_cap():
    up = lagrange_update(0.0, mean_cost=1.0, threshold=0.0, lr=0.1)         # lambda 1: log l += 0.1 * 1 * 1
    assert up == pytest.approx(0.1)
    down = lagrange_update(0.0, mean_cost=-2.0, threshold=0.0, lr=0.1)
    assert down == pytest.approx(-0.2)
    capped = lagrange_update(math.log(4.9), mean_cost=10.0, lr=0.1, lambda_max=5.0)
    assert math.exp(capped) == pytest.approx(5.0)
    assert lagrange_update(0.5, mean_cost=0.3, threshold=0.3) == 0.5            # at the threshold: no move


def test_gae_three_token_episode_by_hand():
    r = torch.tensor([[0.0, 0.0, 1.0]])
    v = torch.tensor([[0.5, 0.6, 0.7]])
    m = torch.ones(1, 3)
    adv, ret = gae(r, v, m, gamma=1.0, lam=0.95)
    d2 = 1.0 + 0 - 0.7                   # 0.3
    d1 = 0.0 + 0.7 - 0.6                 # 0.1
    d0 = 0.0 + 0.6 - 0.5                 # 0.1
    a2, a1 = d2, d1 + 0.95 * d2
    a0 = d0 + 0.95 * a1
    assert adv[0].tolist() == pytest.approx([a0, a1, a2])
    assert ret[0].tolist() == pytest.approx([a0 + 0.5, a1 + 0.6, a2 + 0.7])
    adv_m, _ = gae(r, v, torch.tensor([[1.0, 1.0, 0.0]]))                        # padding contributes nothing
    assert adv_m[0, 2].item() == 0.0


def test_combined_advantage_and_token_rewards():
    assert combined_advantage(torch.tensor([2.0]), torch.tensor([1.0]), 1.0).item() == pytest.approx(0.5)
    assert combined_advantage(torch.tensor([2.0]), torch.tensor([1.0]), 0.0).item() == pytest.approx(2.0)
    kl = torch.tensor([[0.1, 0.2, 0.3, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    rew = token_rewards(kl, torch.tensor([60.0]), mask, kl_coeff=0.01, sign=-1.0)
    assert rew[0].tolist() == pytest.approx([-0.001, -0.002, -0.003 + 50.0, 0.0])   # score clipped to 50


def test_clipped_losses():
    adv, m = torch.tensor([[1.0, -1.0]]), torch.ones(1, 2)
    logp, old = torch.log(torch.tensor([[1.5, 0.5]])), torch.zeros(1, 2)             # ratios 1.5 and 0.5
    # token 1: min(1.5*1, 1.2*1) = 1.2; token 2: min(0.5*-1, 0.8*-1) = -0.8 -> loss -(1.2 - 0.8)/2
    assert clipped_surrogate(logp, old, adv, m).item() == pytest.approx(-(1.2 - 0.8) / 2)
    v, v_old, ret = torch.tensor([[10.0]]), torch.tensor([[0.0]]), torch.tensor([[0.0]])
    assert clipped_value_loss(v, v_old, ret, torch.ones(1, 1)).item() == pytest.approx(50.0)   # max(100, 25)/2


def test_rectified_penalty_is_zero_for_safe_samples():
    assert rectified(torch.tensor([-3.0, 0.0, 0.5, 2.0])).tolist() == [0.0, 0.0, 0.5, 2.0]
