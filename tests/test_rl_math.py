import math

import pytest
import torch

from safealign.methods.rl_math import (clipped_surrogate, clipped_value_loss, combined_advantage, cost_model_loss,
                                       gae, lagrange_update, masked_mean, rectified, reward_model_loss,
                                       shuffled_pass, token_rewards, violations)


def ls(x):
    return math.log(1 / (1 + math.exp(-x)))


def test_reward_model_loss_by_hand():
    got = reward_model_loss(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0]))
    assert got.item() == pytest.approx(-(ls(1.0) + ls(-1.0)) / 2)


def test_score_regularisation_by_hand():
    # 0.001 * mean of the squared scores of both answers: (4 + 0 + 1 + 1) / 4 = 1.5
    got = reward_model_loss(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0]), regularization=0.001)
    assert got.item() == pytest.approx(-(ls(1.0) + ls(-1.0)) / 2 + 0.001 * 1.5)
    plain = cost_model_loss(torch.tensor([-1.0]), torch.tensor([2.0]), torch.tensor([True]), torch.tensor([False]))
    reg = cost_model_loss(torch.tensor([-1.0]), torch.tensor([2.0]), torch.tensor([True]), torch.tensor([False]), 0.001)
    assert reg.item() == pytest.approx(plain.item() + 0.001 * (1 + 4) / 2)


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
    assert rew[0].tolist() == pytest.approx([-0.001, -0.002, 50.0, 0.0])    # the last token's total clipped to 50
    rew = token_rewards(kl, torch.tensor([2.0]), mask, kl_coeff=0.01, sign=+1.0)
    assert rew[0].tolist() == pytest.approx([0.001, 0.002, 0.003 + 2.0, 0.0])


def test_masked_mean_is_per_sequence_then_over_the_batch():
    x = torch.tensor([[1.0, 3.0, 0.0, 0.0], [4.0, 4.0, 4.0, 10.0]])
    m = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    # sequence means 2 and 4 -> 3; one token-level mean would give (1 + 3 + 12) / 5 = 3.2
    assert masked_mean(x, m).item() == pytest.approx(3.0)
    m_empty = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    assert masked_mean(x, m_empty).item() == pytest.approx(4.0)           # a row with no token is left out


def test_clipped_losses():
    adv, m = torch.tensor([[1.0, -1.0]]), torch.ones(1, 2)
    logp, old = torch.log(torch.tensor([[1.5, 0.5]])), torch.zeros(1, 2)             # ratios 1.5 and 0.5
    # token 1: min(1.5*1, 1.2*1) = 1.2; token 2: min(0.5*-1, 0.8*-1) = -0.8 -> loss -(1.2 - 0.8)/2
    assert clipped_surrogate(logp, old, adv, m).item() == pytest.approx(-(1.2 - 0.8) / 2)
    # two sequences of 1 and 3 tokens, ratio 1: per-sequence means of -A are -1 and -(2+2+2)/3 = -2 -> -1.5
    # (a token-level mean would give -(1 + 6) / 4 = -1.75)
    adv2 = torch.tensor([[1.0, 9.0, 9.0], [2.0, 2.0, 2.0]])
    m2 = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert clipped_surrogate(torch.zeros(2, 3), torch.zeros(2, 3), adv2, m2).item() == pytest.approx(-1.5)
    v, v_old, ret = torch.tensor([[10.0]]), torch.tensor([[0.0]]), torch.tensor([[0.0]])
    assert clipped_value_loss(v, v_old, ret, torch.ones(1, 1)).item() == pytest.approx(50.0)   # max(100, 25)/2
    # per sequence: 0.5 * 4 = 2 (one token) and 0.5 * (0 + 1) / 2 = 0.25 -> (2 + 0.25) / 2
    v = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    got = clipped_value_loss(v, v.clone(), torch.zeros(2, 2), torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    assert got.item() == pytest.approx((2.0 + 0.25) / 2)


def test_rectified_penalty_is_zero_for_safe_samples():
    assert rectified(torch.tensor([-3.0, 0.0, 0.5, 2.0])).tolist() == [0.0, 0.0, 0.5, 2.0]


def test_the_share_variant_of_repos_multiplier_follows_the_violation_share_and_can_fall():
    # repo_multiplier = "share" (the suite's earlier rule; the default "rectified" is in tests/test_ppo_rules.py)
    costs = torch.tensor([-2.0, 0.5, -1.0, -0.1, 3.0, -4.0, -0.5, -2.0, -1.0, -3.0])
    assert violations(costs).tolist() == [0, 1, 0, 0, 1, 0, 0, 0, 0, 0]
    share = violations(costs).mean().item()                                      # 2 of 10 violate
    # lambda 1, target 0.05: log lambda += 0.1 * 1 * (0.2 - 0.05) = 0.015 -> rises
    assert lagrange_update(0.0, share, 0.05, lr=0.1) == pytest.approx(0.015)
    # once no answer violates: log lambda += 0.1 * 2 * (0 - 0.05) = -0.01 -> falls
    safe_share = violations(torch.tensor([-1.0, -0.2, -3.0, 0.0])).mean().item()     # C <= 0 meets C(x, y) <= 0
    down = lagrange_update(math.log(2.0), safe_share, 0.05, lr=0.1)
    assert down == pytest.approx(math.log(2.0) - 0.01)
    assert math.exp(down) < 2.0


def test_shuffled_pass_takes_every_prompt_once_per_epoch():
    n, batch = 10, 4                                     # 3 batches a pass, the last filled from the pass's start
    epoch0 = [shuffled_pass(n, batch, s, seed=0) for s in range(3)]
    assert all(len(b) == batch for b in epoch0)
    assert sorted(epoch0[0] + epoch0[1] + epoch0[2][:2]) == list(range(n))
    assert epoch0[2][2:] == epoch0[0][:2]
    epoch1 = [shuffled_pass(n, batch, s, seed=0) for s in range(3, 6)]
    assert sorted(epoch1[0] + epoch1[1] + epoch1[2][:2]) == list(range(n))
    assert epoch1 != epoch0                               # a fresh shuffle each pass
    assert shuffled_pass(n, batch, 4, seed=0) == epoch1[1]      # a pure function of the step (resume)


def test_grouped_loss_by_hand_and_split_over_two_processes():
    from safealign.methods.rl_math import grouped_loss
    per_seq, group = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 0, 1])
    # RePO's two halves: mean(1, 2) and 3 weigh the same -> (1.5 + 3) / 2
    assert grouped_loss(per_seq, group, torch.tensor([2, 1])).item() == pytest.approx(2.25)
    # one group: the plain batch mean
    assert grouped_loss(per_seq, torch.zeros(3, dtype=torch.long), torch.tensor([3, 0])).item() == pytest.approx(2.0)
    # rows 0-1 on one process and row 2 on another, whole-batch counts: the mean over processes is the same 2.25
    a = grouped_loss(per_seq[:2], group[:2], torch.tensor([2, 1]), world=2)
    b = grouped_loss(per_seq[2:], group[2:], torch.tensor([2, 1]), world=2)
    assert a.item() == pytest.approx(1.5) and b.item() == pytest.approx(3.0)
    assert ((a + b) / 2).item() == pytest.approx(2.25)
    # the PPO loop's actor loss (one group over sequence_means of the surrogate) is Safe RLHF's clipped surrogate
    from safealign.methods.rl_math import sequence_means, surrogate_tokens
    logp, old, adv = torch.tensor([[0.1, 0.3], [0.2, -0.4]]), torch.zeros(2, 2), torch.tensor([[1.0, -2.0], [0.5, 1.5]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    per_seq = sequence_means(surrogate_tokens(logp, old, adv, 0.2), mask)
    one_group = grouped_loss(per_seq, torch.zeros(2, dtype=torch.long), torch.tensor([2, 0]))
    assert one_group.item() == pytest.approx(clipped_surrogate(logp, old, adv, mask, 0.2).item(), abs=1e-7)


def test_gumbel_sampler_draws_softmax_and_each_row_from_its_own_seed():
    from safealign.methods.rollouts import GumbelSampler, row_seeds
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    draws = []
    for s in range(4000):       # argmax(logits / T + Gumbel) is a sample of softmax(logits / T)
        draws.append(int(GumbelSampler([s], 1.0, "cpu")(None, logits).argmax()))
    freq = torch.bincount(torch.tensor(draws), minlength=3).float() / len(draws)
    assert freq.tolist() == pytest.approx([0.5, 0.3, 0.2], abs=0.03)        # 4 standard errors at n = 4000
    # T = 0.5 sharpens to softmax(2 logits) = [25, 9, 4] / 38
    sharp = [int(GumbelSampler([s], 0.5, "cpu")(None, logits).argmax()) for s in range(4000)]
    assert (torch.bincount(torch.tensor(sharp), minlength=3).float() / 4000).tolist() == \
        pytest.approx([25 / 38, 9 / 38, 4 / 38], abs=0.03)
    # a row's noise depends on its seed alone, not on the rows beside it
    seeds = row_seeds(0, 3, 0, 4)
    both = GumbelSampler(seeds, 1.0, "cpu")(None, torch.zeros(4, 5))
    half = GumbelSampler(seeds[2:], 1.0, "cpu")(None, torch.zeros(2, 5))
    assert torch.equal(both[2:], half) and row_seeds(0, 3, 2, 2) == seeds[2:] and len(set(seeds)) == 4
