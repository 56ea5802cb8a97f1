"""engine.run.validation: CPCV splits and paths, OOS Sharpe over CPCV paths, PBO by CSCV, deflated Sharpe."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from engine.run.validation import (
    IDENTICAL_COMBINATIONS,
    ONE_COMBINATION,
    best_index,
    cpcv,
    cpcv_oos_sharpe,
    deflated_sharpe,
    deflated_sharpe_ratio,
    distinct_columns,
    expected_max_sharpe,
    first_identical,
    pbo_cscv,
    relative_rank,
    sharpe_columns,
)

LN3 = math.log(3.0)

# ---- CPCV splits -------------------------------------------------------------------------------


def test_cpcv_counts_and_paths() -> None:
    cv = cpcv(n_windows=12, n_groups=6, n_test_groups=2)
    assert cv.n_splits == math.comb(6, 2) == 15
    assert cv.n_paths == 2 * 15 // 6 == math.comb(5, 1) == 5
    # every path covers every window exactly once, each group from a split that tests it
    for p in range(cv.n_paths):
        covered = np.concatenate([w for _, w in cv.path_windows(p)])
        assert covered.tolist() == list(range(12))
        for g, (s, _) in enumerate(cv.path_windows(p)):
            assert g in cv.test_groups[s]
    # every (split, test group) pair is used by exactly one path
    pairs = sorted((int(cv.paths[g, p]), g) for g in range(6) for p in range(cv.n_paths))
    assert pairs == sorted((s, int(g)) for s in range(cv.n_splits) for g in cv.test_groups[s])


def test_cpcv_purge_and_embargo_by_hand() -> None:
    # 12 windows, 4 groups of 3: g0 = 0-2, g1 = 3-5, g2 = 6-8, g3 = 9-11; split 1 tests g0 and g2
    cv = cpcv(12, 4, 2, purge=1, embargo=1)
    assert cv.test_groups[1].tolist() == [0, 2]
    train, test = cv.splits[1]
    assert test.tolist() == [0, 1, 2, 6, 7, 8]
    # after block g0: purge 3, embargo 4; before block g2: purge 5; after g2: purge 9, embargo 10
    assert train.tolist() == [11]
    # adjacent test groups (g0, g1) form one block: nothing purged between them
    train, test = cv.splits[0]
    assert test.tolist() == [0, 1, 2, 3, 4, 5] and train.tolist() == [8, 9, 10, 11]


def test_cpcv_remainder_goes_to_last_group() -> None:
    cv = cpcv(11, 3, 1)
    assert cv.groups.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2]
    assert cv.n_paths == 1  # k = 1: plain (purged) k-fold, one path


@pytest.mark.parametrize(
    ("t", "n", "k", "purge", "embargo"),
    [(1, 2, 1, 0, 0), (10, 1, 1, 0, 0), (10, 3, 3, 0, 0), (10, 3, 0, 0, 0), (10, 3, 1, -1, 0), (6, 3, 2, 2, 2)],
)
def test_cpcv_rejects_bad_settings(t: int, n: int, k: int, purge: int, embargo: int) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        cpcv(t, n, k, purge, embargo)


SKFOLIO_CASES = [
    # (windows, n_folds, n_test_folds, purge, embargo)
    (12, 3, 2, 0, 0),
    (12, 3, 2, 1, 0),
    (12, 3, 2, 0, 1),
    (40, 6, 2, 1, 1),
    (53, 8, 3, 2, 1),  # 53 windows: the last group takes the remainder
    (30, 5, 4, 0, 2),
    (100, 10, 2, 3, 2),
]


@pytest.mark.parametrize(("t", "n", "k", "purge", "embargo"), SKFOLIO_CASES)
@pytest.mark.parametrize("obs_per_window", [1, 3])
def test_cpcv_matches_skfolio(t: int, n: int, k: int, purge: int, embargo: int, obs_per_window: int) -> None:
    """Each window is ``obs_per_window`` consecutive observations for skfolio's CombinatorialPurgedCV,
    with purge and embargo scaled alike; its train/test observations, mapped back to windows, must be
    ours, split by split, and its path ids must put each test group on the same path as ours."""
    skcv = pytest.importorskip("skfolio.model_selection", reason="skfolio (test extra) is not installed")
    m = obs_per_window
    if m > 1 and t % n:
        pytest.skip("with several observations per window, skfolio's groups match ours only when n divides T")
    ours = cpcv(t, n, k, purge, embargo)
    theirs = skcv.CombinatorialPurgedCV(n_folds=n, n_test_folds=k, purged_size=purge * m, embargo_size=embargo * m)
    x = np.zeros((t * m, 1))
    splits = list(theirs.split(x))
    assert len(splits) == ours.n_splits
    assert theirs.n_test_paths == ours.n_paths
    path_ids = theirs.get_path_ids()
    for s, (train_obs, tests_obs) in enumerate(splits):
        train, test = ours.splits[s]
        # a window is trained on iff all its observations are (purge/embargo are whole windows)
        assert np.array_equal(np.unique(train_obs // m), train)
        assert len(train_obs) == m * len(train)
        assert np.array_equal(np.unique(np.concatenate(tests_obs) // m), test)
        for j, obs in enumerate(tests_obs):
            g = int(ours.groups[obs[0] // m])
            assert g == ours.test_groups[s][j]
            assert ours.paths[g, path_ids[s, j]] == s


# ---- selection helpers -------------------------------------------------------------------------


def test_sharpe_columns_undefined_cases() -> None:
    r = np.array([[0.0, 0.01, np.nan, 0.02, 0.01], [0.0, 0.03, 0.01, 0.02, 0.01], [0.0, 0.02, 0.02, 0.02, 0.01]])
    sr = sharpe_columns(r)
    assert math.isnan(sr[0])  # never traded: all zeros
    assert sr[1] == pytest.approx(0.02 / 0.01)
    assert math.isnan(sr[2])  # a NaN return
    assert math.isnan(sr[3]) and math.isnan(sr[4])  # zero variance (up to rounding)
    assert np.isnan(sharpe_columns(r[:1])).all()  # one row


def test_best_index_undefined_last_and_ties_lowest() -> None:
    assert best_index(np.array([np.nan, -5.0, np.nan])) == 1
    assert best_index(np.array([1.0, 2.0, 2.0])) == 1
    assert best_index(np.array([np.nan, np.nan])) == 0
    assert best_index(np.array([np.inf, 0.0])) == 0  # +inf is the highest value (engine.core.best)
    assert best_index(np.array([-np.inf, np.nan, -1.0])) == 2  # -inf ties with undefined, last
    assert relative_rank(np.array([np.nan, 1.0, 3.0]), 0) == pytest.approx(1 / 4)
    assert relative_rank(np.array([2.0, 2.0, 3.0]), 0) == pytest.approx(1.5 / 4)


# ---- CPCV out-of-sample Sharpe distribution ----------------------------------------------------


def test_cpcv_oos_sharpe_by_hand() -> None:
    # 6 windows, 3 groups of 2 (g0 = 0-1, g1 = 2-3, g2 = 4-5), k = 1: 3 splits, 1 path
    r = np.array(
        [
            [0.01, 0.03],
            [0.02, 0.01],
            [0.03, 0.00],
            [0.01, 0.02],
            [-0.01, 0.04],
            [0.00, 0.05],
        ]
    )
    cv = cpcv(6, 3, 1)
    res = cpcv_oos_sharpe(r, cv)
    # split 0 trains on windows 2-5: col0 mean 0.0075, col1 mean 0.0275 -> Sharpe of col1 higher
    expected_is = sharpe_columns(r[2:])
    assert res.chosen[0] == int(np.argmax(expected_is)) == 1
    # split 1 trains on 0,1,4,5; split 2 on 0-3
    assert res.chosen[1] == int(np.argmax(sharpe_columns(r[[0, 1, 4, 5]])))
    assert res.chosen[2] == int(np.argmax(sharpe_columns(r[:4])))
    path = np.concatenate([r[0:2, res.chosen[0]], r[2:4, res.chosen[1]], r[4:6, res.chosen[2]]])
    assert res.path_returns is not None and res.path_sharpe is not None
    assert np.allclose(res.path_returns[:, 0], path)
    assert res.path_sharpe[0] == pytest.approx(path.mean() / path.std(ddof=1))
    assert res.summary()["n_paths"] == 1


def test_cpcv_oos_sharpe_paths_and_dominant_combination() -> None:
    rng = np.random.default_rng(7)
    r = rng.normal(0.0, 0.02, size=(40, 5))
    r[:, 3] += 0.05  # combination 3 is best in every window
    res = cpcv_oos_sharpe(r, cpcv(40, 8, 2, purge=1, embargo=1))
    assert (res.chosen == 3).all()
    assert res.path_sharpe is not None and res.path_sharpe.shape == (res.cv.n_paths,) == (7,)
    # every path is then combination 3 itself
    assert np.allclose(res.path_returns, r[:, [3]])
    summary = res.summary()
    assert summary["share_negative"] == 0.0 and summary["mean"] == pytest.approx(sharpe_columns(r[:, 3])[0])


def test_cpcv_oos_sharpe_one_combination_is_null_with_reason() -> None:
    res = cpcv_oos_sharpe(np.linspace(-0.01, 0.02, 12)[:, None], cpcv(12, 4, 2))
    assert res.path_sharpe is None and res.path_returns is None and res.reason == ONE_COMBINATION
    assert res.summary()["mean"] is None


def test_cpcv_oos_sharpe_undefined_objective_ranks_last_never_crashes() -> None:
    rng = np.random.default_rng(1)
    r = np.column_stack([np.zeros(20), rng.normal(-0.01, 0.02, 20), np.full(20, np.nan)])
    res = cpcv_oos_sharpe(r, cpcv(20, 5, 2))
    assert (res.chosen == 1).all()  # the only defined objective, however bad
    # all undefined (never trades, constant, NaN): the first combination is taken, the objective is
    # NaN, nothing raises
    undefined = np.column_stack([np.zeros(20), np.full(20, 0.01), np.full(20, np.nan)])
    res = cpcv_oos_sharpe(undefined, cpcv(20, 5, 2))
    assert (res.chosen == 0).all() and np.isnan(res.is_objective).all()
    assert res.path_sharpe is not None and np.isnan(res.path_sharpe).all()
    # three identical never-trading combinations are one: no distribution, as with one
    assert cpcv_oos_sharpe(np.zeros((20, 3)), cpcv(20, 5, 2)).path_sharpe is None


# ---- PBO by CSCV -------------------------------------------------------------------------------

# 4 windows (rows) × 3 combinations A, B, C; S = 4, so each submatrix is one window and the
# C(4, 2) = 6 splits put two windows in sample (J) and two out of sample (J̄).
HAND = np.array(
    [
        [-3.0, -2.0, -3.0],
        [2.0, -3.0, 1.0],
        [-1.0, 1.0, 3.0],
        [-2.0, 4.0, 4.0],
    ]
)


def test_pbo_hand_case() -> None:
    # The Sharpe ratio of two returns a, b is (a + b) / 2 / (|a - b| / sqrt 2) = (a + b) / |a - b| / sqrt 2;
    # the common factor 1/sqrt 2 does not change ranks, so below q = (a + b) / |a - b|.
    #
    # J = {0, 1}: IS  A (-3, 2) -1/5 = -0.2,  B (-2,-3) -5/1 = -5,    C (-3, 1) -2/4 = -0.5  -> best A
    #             OOS A (-1,-2) -3/1 = -3,    B ( 1, 4)  5/3,         C ( 3, 4)  7/1        -> A ranks 1
    #             ω = 1/4, λ = ln((1/4)/(3/4)) = -ln 3
    # J = {0, 2}: IS  A (-3,-1) -4/2 = -2,    B (-2, 1) -1/3,         C (-3, 3)  0          -> best C
    #             OOS A ( 2,-2)  0,           B (-3, 4)  1/7,         C ( 1, 4)  5/3        -> C ranks 3
    #             ω = 3/4, λ = ln 3
    # J = {0, 3}: IS  A (-3,-2) -5,           B (-2, 4)  2/6,         C (-3, 4)  1/7        -> best B
    #             OOS A ( 2,-1)  1/3,         B (-3, 1) -2/4,         C ( 1, 3)  4/2        -> B ranks 1
    #             λ = -ln 3
    # J = {1, 2}: IS  A ( 2,-1)  1/3,         B (-3, 1) -1/2,         C ( 1, 3)  2          -> best C
    #             OOS A (-3,-2) -5,           B (-2, 4)  1/3,         C (-3, 4)  1/7        -> C ranks 2
    #             ω = 2/4, λ = 0
    # J = {1, 3}: IS  A ( 2,-2)  0,           B (-3, 4)  1/7,         C ( 1, 4)  5/3        -> best C
    #             OOS A (-3,-1) -2,           B (-2, 1) -1/3,         C (-3, 3)  0          -> C ranks 3
    #             λ = ln 3
    # J = {2, 3}: IS  A (-1,-2) -3,           B ( 1, 4)  5/3,         C ( 3, 4)  7          -> best C
    #             OOS A (-3, 2) -1/5,         B (-2,-3) -5,           C (-3, 1) -1/2        -> C ranks 2
    #             λ = 0
    # PBO = #{λ <= 0} / 6 = 4/6 (λ = 0, the median, counts as overfit).
    res = pbo_cscv(HAND, n_submatrices=4)
    assert [tuple(c) for c in itertools.combinations(range(4), 2)] == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert res.is_best.tolist() == [0, 2, 1, 2, 2, 2]
    assert res.logits == pytest.approx([-LN3, LN3, -LN3, 0.0, LN3, 0.0], abs=1e-12)
    assert res.pbo == pytest.approx(4 / 6)
    assert res.reason is None and res.n_submatrices == 4 and res.n_dropped == 0
    sq2 = math.sqrt(2)
    assert res.is_perf == pytest.approx([-0.2 / sq2, 0.0, (2 / 6) / sq2, 2 / sq2, (5 / 3) / sq2, 7 / sq2])
    assert res.oos_perf == pytest.approx([-3 / sq2, (5 / 3) / sq2, -0.5 / sq2, (1 / 7) / sq2, 0.0, -0.5 / sq2])
    assert res.prob_oos_loss == pytest.approx(3 / 6)


def test_pbo_dominant_combination_is_zero() -> None:
    rng = np.random.default_rng(11)
    r = rng.normal(0.0, 0.02, size=(64, 10))
    r[:, 4] = np.abs(r[:, 4]) + 0.05  # beats every other combination in every window
    res = pbo_cscv(r, n_submatrices=8)
    assert res.pbo == 0.0
    assert (res.is_best == 4).all()
    assert res.logits == pytest.approx(np.full(70, math.log(10.0)))  # rank M = 10 of 10: ω = 10/11


def test_pbo_noise_is_near_half() -> None:
    rng = np.random.default_rng(2024)
    pbos = [pbo_cscv(rng.normal(0.0, 0.02, size=(96, 20)), n_submatrices=8).pbo for _ in range(20)]
    # every combination is the same noise: the IS best is a random draw OOS; mean of 20 seeded matrices
    assert float(np.mean(pbos)) == pytest.approx(0.5, abs=0.1)


def test_pbo_drops_oldest_remainder() -> None:
    r = np.vstack([np.full((3, 3), np.nan), HAND])  # 7 rows, S = 4: the 3 oldest rows are dropped
    res = pbo_cscv(r, n_submatrices=4)
    assert res.n_dropped == 3 and res.pbo == pytest.approx(4 / 6)


def test_pbo_one_combination_is_none_with_reason() -> None:
    res = pbo_cscv(HAND[:, :1], n_submatrices=4)
    assert res.pbo is None and res.reason == ONE_COMBINATION and res.prob_oos_loss is None
    assert res.logits.shape == (6,)


def test_identical_combinations_are_one_trial() -> None:
    """A copy of a combination (equal in every window) is folded into it: HAND's columns A, C, C, B
    give HAND's own logits and PBO (4/6), not those of a four-way choice where C ties with itself."""
    assert first_identical(np.array([[1.0, 1.0, -0.0, np.nan], [2.0, 2.0, 0.0, np.nan]])).tolist() == [0, 0, 2, 3]
    assert first_identical(np.array([[np.nan, np.nan], [0.0, -0.0]])).tolist() == [0, 0]
    dup = HAND[:, [0, 2, 2, 1]]
    assert distinct_columns(dup).tolist() == [0, 1, 3]
    res = pbo_cscv(dup, n_submatrices=4)
    assert res.pbo == pytest.approx(4 / 6) and res.n_duplicates == 1
    assert res.logits == pytest.approx([-LN3, LN3, -LN3, 0.0, LN3, 0.0], abs=1e-12)
    assert res.is_best.tolist() == [0, 1, 3, 1, 1, 1]  # HAND's [0, 2, 1, 2, 2, 2] in dup's columns
    # two copies of one combination: nothing to choose, as with one
    twice = pbo_cscv(HAND[:, [0, 0]], n_submatrices=4)
    assert twice.pbo is None and twice.reason == IDENTICAL_COMBINATIONS.format(m=2) and twice.n_duplicates == 1
    assert pbo_cscv(HAND[:, [0]], n_submatrices=4).n_duplicates == 0
    cv = cpcv(4, 4, 2)
    assert cpcv_oos_sharpe(HAND[:, [0, 0]], cv).path_sharpe is None
    assert cpcv_oos_sharpe(HAND[:, [0, 0]], cv).reason == IDENTICAL_COMBINATIONS.format(m=2)


def test_pbo_undefined_combination_ranks_last_and_counts() -> None:
    # a never-trading combination (all zeros) added to the hand case: it ranks last everywhere, is
    # never chosen, and M = 4 changes every ω to rank / 5
    r = np.column_stack([HAND, np.zeros(4)])
    res = pbo_cscv(r, n_submatrices=4)
    assert res.is_best.tolist() == [0, 2, 1, 2, 2, 2]
    ranks = [2, 4, 2, 3, 4, 3]  # each hand rank + 1 (the zero column is below all)
    assert res.logits == pytest.approx([math.log(k / (5 - k)) for k in ranks])
    assert res.pbo == pytest.approx(2 / 6)
    # only undefined combinations: nothing raises, every split is a tie at the median
    res = pbo_cscv(np.column_stack([np.zeros(8), np.full(8, 0.01), np.full(8, np.nan)]), n_submatrices=4)
    assert res.pbo == 1.0 and np.allclose(res.logits, 0.0)
    # three identical never-trading combinations are one trial: undefined, not "certainly overfit"
    res = pbo_cscv(np.zeros((8, 3)), n_submatrices=4)
    assert res.pbo is None and res.reason == IDENTICAL_COMBINATIONS.format(m=3)


@pytest.mark.parametrize("s", [0, 3, 10])
def test_pbo_rejects_bad_submatrices(s: int) -> None:
    with pytest.raises(ValueError, match="submatrices"):
        pbo_cscv(np.zeros((8, 3)), n_submatrices=s)


# ---- deflated Sharpe ratio ---------------------------------------------------------------------


def test_deflated_sharpe_explicit_trials() -> None:
    sr0 = expected_max_sharpe(50, 0.001)
    out = deflated_sharpe(0.1, 50, 0.001, 500, -0.2, 4.0)
    assert out == pytest.approx(deflated_sharpe_ratio(np.array(0.1), sr0, np.array(500), np.array(-0.2), np.array(4.0)))
    # more trials raise the bar
    assert deflated_sharpe(0.1, 500, 0.001, 500, -0.2, 4.0) < out
    with pytest.raises(ValueError, match="n_trials"):
        deflated_sharpe(0.1, 0, 0.001, 500, 0.0, 3.0)


def test_sweep_uses_the_one_definition() -> None:
    import engine.run.validation as validation
    import engine.tasks.sweep as sweep

    assert sweep.deflated_sharpe_ratio is validation.deflated_sharpe_ratio
    assert sweep.expected_max_sharpe is validation.expected_max_sharpe
    # an explicit trial count (e.g. from the ledger) overrides the sweep's own count
    sr = np.array([0.05, 0.10, 0.15]) * math.sqrt(365)
    dsr3, _ = sweep.sweep_dsr(sr, np.full(3, 366), np.zeros(3), np.full(3, 3.0))
    dsr100, sr0 = sweep.sweep_dsr(sr, np.full(3, 366), np.zeros(3), np.full(3, 3.0), n_trials=100)
    assert sr0 == pytest.approx(expected_max_sharpe(100, 0.0025))
    assert (dsr100 < dsr3).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_deflated_sharpe_matches_skfolio(seed: int) -> None:
    measures = pytest.importorskip("skfolio.measures", reason="skfolio (test extra) is not installed")
    if not hasattr(measures, "deflated_sharpe_ratio"):
        pytest.skip("this skfolio has no measures.deflated_sharpe_ratio (skfolio >= 1.12 has)")
    rng = np.random.default_rng(seed)
    returns = rng.standard_t(5, size=750) * 0.01 + 0.0008  # fat-tailed daily returns
    trials = rng.normal(0.03, 0.02, size=40)  # per-period Sharpe ratios of the search
    expected = measures.deflated_sharpe_ratio(returns, trials)
    # skfolio: SR = mean / std(ddof=1), population skew/kurtosis, V[SR] with ddof=1
    sr = returns.mean() / returns.std(ddof=1)
    c = returns - returns.mean()
    skew = np.mean(c**3) / np.mean(c**2) ** 1.5
    kurt = np.mean(c**4) / np.mean(c**2) ** 2
    ours = deflated_sharpe(sr, len(trials), float(np.var(trials, ddof=1)), len(returns), skew, kurt)
    assert float(ours) == pytest.approx(expected, abs=1e-12)
    # a single trial: both fall back to the PSR against zero
    single = measures.deflated_sharpe_ratio(returns, trials[:1])
    assert float(deflated_sharpe(sr, 1, 0.0, len(returns), skew, kurt)) == pytest.approx(single, abs=1e-12)


def test_pbo_fast_sharpe_path_equals_generic_objective() -> None:
    """The default objective is computed for all splits at once from per-submatrix sums; any other
    callable goes split by split. Both must agree, undefined columns included."""
    rng = np.random.default_rng(5)
    r = rng.normal(0.001, 0.02, size=(50, 9))
    r[:, 2] = 0.0  # never trades
    r[:, 5] = 0.003  # constant: zero variance
    r[17, 7] = np.nan  # one missing window
    r[:, 8] += 0.5  # a large mean: the centred sums keep the variance exact
    fast = pbo_cscv(r, n_submatrices=8)
    slow = pbo_cscv(r, n_submatrices=8, objective=lambda x: sharpe_columns(x))
    assert fast.n_dropped == slow.n_dropped == 2
    assert np.array_equal(fast.is_best, slow.is_best)
    assert np.allclose(fast.logits, slow.logits, rtol=0, atol=1e-12)
    assert np.allclose(fast.is_perf, slow.is_perf, rtol=1e-9, equal_nan=True)
    assert np.allclose(fast.oos_perf, slow.oos_perf, rtol=1e-9, equal_nan=True)
    assert fast.pbo == slow.pbo


def test_cpcv_oos_sharpe_of_noise_is_centred_on_zero() -> None:
    """On pure noise the in-sample best Sharpe ratio is inflated by selection (~0.2 per window for the
    best of 27 over 104 windows), while the CPCV out-of-sample path Sharpe ratios average ~0."""
    cv = cpcv(104, 10, 2, purge=1, embargo=1)
    oos, best_is = [], []
    for seed in range(60):
        r = np.random.default_rng(seed).normal(0.0, 0.02, size=(104, 27))
        res = cpcv_oos_sharpe(r, cv)
        assert res.path_sharpe is not None
        oos.append(float(np.mean(res.path_sharpe)))
        best_is.append(float(np.max(sharpe_columns(r))))
    assert abs(np.mean(oos)) < 0.05
    assert np.mean(best_is) > 0.15


def test_oos_report_is_json_and_never_raises_on_small_grids() -> None:
    import json

    from engine.run.validation import oos_report

    rng = np.random.default_rng(9)
    r = rng.normal(0.0, 0.02, size=(30, 6))
    rep = oos_report(r, n_groups=5, n_test_groups=2, purge=1, embargo=1, n_submatrices=6)
    json.dumps(rep, allow_nan=False)
    assert rep["pbo"] == pbo_cscv(r, 6).pbo and rep["pbo_n_submatrices"] == 6
    direct = cpcv_oos_sharpe(r, cpcv(30, 5, 2, 1, 1))
    assert rep["cpcv_path_sharpe"] == pytest.approx(list(direct.path_sharpe))
    assert rep["cpcv"]["n_paths"] == 4 and rep["cpcv_reason"] is None
    # one combination: both null, each with the reason
    one = oos_report(r[:, :1])
    json.dumps(one, allow_nan=False)
    assert one["pbo"] is None and one["pbo_reason"] == ONE_COMBINATION
    assert one["cpcv_path_sharpe"] is None and one["cpcv_reason"] == ONE_COMBINATION
    # too few windows: settings lowered, or a reason instead of an exception
    few = oos_report(r[:5], purge=0)
    assert few["pbo_n_submatrices"] == 4 and few["cpcv"]["n_groups"] == 5
    purged = oos_report(r[:5], purge=1)  # 5 groups of 1 window: splits (1, 3) leaves no train window
    assert purged["cpcv"] is None and "no train window" in purged["cpcv_reason"]
    tiny = oos_report(r[:1])
    assert tiny["pbo"] is None and "at least 2" in tiny["pbo_reason"]
    assert tiny["cpcv"] is None and "n_groups" in tiny["cpcv_reason"]
    json.dumps(tiny, allow_nan=False)
