import numpy as np
import pytest

from safealign.eval.ratings import bradley_terry, bradley_terry_ci, elo, elo_pass, elo_update


def row(a, b, sa, sb):
    return {"model_a": a, "model_b": b, "score_a": sa, "score_b": sb}


def test_elo_one_pass_over_three_games_by_hand():
    games = [("A", "B", 1.0), ("B", "C", 1.0), ("A", "C", 0.5)]
    r = elo_pass(games, {"A": 1200.0, "B": 1200.0, "C": 1200.0})
    # game 1: equal ratings, E = 0.5 -> A 1216, B 1184
    # game 2: B 1184 vs C 1200, E_B = 1/(1+10^(16/400)) = 0.476977 -> B += 32*0.523023 = 16.7367
    e_b = 1 / (1 + 10 ** (16 / 400))
    b = 1184 + 32 * (1 - e_b)
    c = 1200 - 32 * (1 - e_b)
    # game 3: A 1216 ties C
    e_a = 1 / (1 + 10 ** ((c - 1216) / 400))
    assert r["B"] == pytest.approx(b) and b == pytest.approx(1200.7367, abs=1e-3)
    assert r["A"] == pytest.approx(1216 + 32 * (0.5 - e_a)) and r["A"] == pytest.approx(1214.497, abs=1e-2)
    assert r["C"] == pytest.approx(c - 32 * (0.5 - e_a))
    assert sum(r.values()) == pytest.approx(3600)                   # Elo is zero-sum


def test_elo_update_symmetry():
    assert elo_update(1200, 1200, 1.0) == (1216.0, 1184.0)
    assert elo_update(1200, 1200, 0.5) == (1200.0, 1200.0)


def test_elo_rescales_sft_to_1000_and_keeps_ratios():
    rows = [row("m", "sft", 8, 3), row("m", "sft", 2, 5)] * 3 + [row("m", "sft", 6, 1)]
    out = elo(rows, np.random.default_rng(0), trials=1, passes=1)
    assert out["sft"] == (pytest.approx(1000.0), 0.0)
    # recompute the single trial by hand with the same permutation
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(rows))
    games = [("m", "sft", 1.0 if rows[i]["score_a"] > rows[i]["score_b"] else 0.0) for i in perm]
    raw = elo_pass(games, {"m": 1200.0, "sft": 1200.0})
    assert out["m"][0] == pytest.approx(raw["m"] * 1000 / raw["sft"])


def test_elo_is_seeded():
    rows = [row("a", "sft", 9, 1), row("b", "sft", 1, 9), row("a", "b", 5, 5), row("b", "a", 7, 2)] * 4
    assert elo(rows, np.random.default_rng(3)) == elo(rows, np.random.default_rng(3))
    assert elo(rows, np.random.default_rng(3)) != elo(rows, np.random.default_rng(4))
    with pytest.raises(ValueError, match="anchor"):
        elo([row("a", "b", 1, 2)], np.random.default_rng(0))


def test_bradley_terry_recovers_a_known_strength():
    # a beats sft 3 times in 4: the MLE gives P = 0.75 = 1/(1+10^(-d/400)) -> d = 400 log10(3) = 190.8
    games = [("a", "sft", 1.0)] * 3 + [("a", "sft", 0.0)]
    r = bradley_terry(games, ["a", "sft"], prior=0.0)
    assert r["sft"] == 1000.0 and r["a"] - 1000 == pytest.approx(400 * np.log10(3), abs=0.01)


def test_bootstrap_is_deterministic_under_a_seed():
    rows = [row("a", "sft", 9, 1), row("a", "sft", 1, 9), row("a", "sft", 8, 2), row("b", "sft", 3, 3),
            row("a", "b", 7, 1), row("b", "a", 6, 5)] * 3
    one = bradley_terry_ci(rows, np.random.default_rng(7), rounds=50)
    two = bradley_terry_ci(rows, np.random.default_rng(7), rounds=50)
    other = bradley_terry_ci(rows, np.random.default_rng(8), rounds=50)
    assert one == two and one != other
    point, low, high = one["a"]
    assert low <= point <= high
