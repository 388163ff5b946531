import math

import pytest

from safealign.eval.winrate import outcome, win_rate


def test_outcome():
    assert outcome(7, 5) == 1.0 and outcome(5, 5) == 0.5 and outcome(4, 5) == 0.0


def test_win_rate_with_ties_and_rounds_by_hand():
    rows = [  # round 0: win, tie, loss, win -> 2.5/4 = 0.625 ; round 1: win, win, tie, loss -> 2.5/4 = 0.625
        {"repetition": 0, "score_model": 8, "score_baseline": 3},
        {"repetition": 0, "score_model": 5, "score_baseline": 5},
        {"repetition": 0, "score_model": 2, "score_baseline": 9},
        {"repetition": 0, "score_model": 6, "score_baseline": 1},
        {"repetition": 1, "score_model": 8, "score_baseline": 3},
        {"repetition": 1, "score_model": 7, "score_baseline": 3},
        {"repetition": 1, "score_model": 5, "score_baseline": 5},
        {"repetition": 1, "score_model": 0, "score_baseline": 1},
        {"repetition": 2, "score_model": 9, "score_baseline": 1},   # round 2: 1 win -> 1.0
    ]
    wr = win_rate(rows)
    assert wr["mean"] == pytest.approx((0.625 + 0.625 + 1.0) / 3)
    # population std of (0.625, 0.625, 1.0): mean 0.75, deviations -.125,-.125,.25 -> sqrt(0.09375/3)
    assert wr["std"] == pytest.approx(math.sqrt((0.125**2 * 2 + 0.25**2) / 3))
    assert wr["n"] == 9 and wr["failures"] == 0


def test_failures_are_reported_not_tied_unless_asked():
    rows = [{"repetition": 0, "score_model": 9, "score_baseline": 1},
            {"repetition": 0, "score_model": None, "score_baseline": None, "ok": False}]
    assert win_rate(rows)["mean"] == 1.0 and win_rate(rows)["failures"] == 1
    assert win_rate(rows, failed_as_tie=True)["mean"] == 0.75     # the official code's behaviour
    assert math.isnan(win_rate([])["mean"])
