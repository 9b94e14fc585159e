"""The speed-up statistics (paired seeds, misses censored at the budget): calibration by
simulation, degenerate inputs, Holm, the reached-by curve (chapter 4's ``speedup.stats``)."""
import time

import numpy as np
import pytest

import speedup.stats as stats
from speedup.stats import (Scenario, calibration, holm_adjust, holm_levels, paired_speedup,
                           reached_band, reached_by, speedup_interval, speedup_pvalue, verdict)

# Realistic settings at 10 seeds: the log-scale seed effect shared by a pair, the run noise,
# and 10% misses at the baseline's own target (the arm misses more when slower).
SETTINGS = [Scenario(seed_sd=0.25, noise_sd=0.15, miss_rate=0.1),
            Scenario(seed_sd=0.3, noise_sd=0.2, miss_rate=0.1)]
STUDIES, REPS = 500, 1000


# ---- calibration -------------------------------------------------------------------------
@pytest.mark.parametrize("setting", SETTINGS)
def test_false_positives_at_no_speedup_are_at_most_5_percent(setting):
    result = calibration(1.0, 10, STUDIES, setting, reps=REPS, seed=11)
    assert result["faster"] <= 0.05, result
    assert result["slower"] <= 0.05, result


@pytest.mark.parametrize("setting", SETTINGS)
def test_power_at_a_true_1_5x_is_at_least_80_percent(setting):
    result = calibration(1.5, 10, STUDIES, setting, reps=REPS, seed=12)
    assert result["faster"] >= 0.80, result
    assert result["slower"] == 0, result


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("ratio", [0.8, 1.0, 1.5, 2.0])
def test_the_95_percent_interval_covers_the_true_ratio_at_least_90_percent(ratio, setting):
    result = calibration(ratio, 10, STUDIES, setting, reps=REPS, seed=13)
    assert result["coverage"] >= 0.90, result
    assert result["no_interval"] == 0, result


def test_simulated_studies_miss_at_the_requested_rate_and_have_the_true_ratio():
    rng = np.random.default_rng(0)
    draws = [stats.simulate_study(1.5, 10, Scenario(miss_rate=0.2), rng)
             for _ in range(2000)]
    base = np.concatenate([b for b, _, _ in draws])
    arm = np.concatenate([a for _, a, _ in draws])
    assert np.isinf(base).mean() == pytest.approx(0.2, abs=0.01)
    assert np.isinf(arm).mean() < np.isinf(base).mean()          # the faster arm misses less
    both = np.isfinite(base) & np.isfinite(arm)
    assert np.median(base[both] / arm[both]) == pytest.approx(1.5, rel=0.03)


# ---- the estimate and the interval -------------------------------------------------------
def test_without_misses_the_estimate_is_the_geometric_mean_of_the_per_seed_ratios():
    rng = np.random.default_rng(1)
    base, arm = rng.uniform(5, 10, 8), rng.uniform(3, 8, 8)
    est, low, high = speedup_interval(base, arm, horizon=np.inf)
    assert est == pytest.approx(np.exp(np.mean(np.log(base / arm))))
    assert low < est < high
    # far budgets clip nothing: the same as no budget at all
    assert speedup_interval(base, arm, horizon=1e6) == pytest.approx((est, low, high))


def test_without_misses_the_interval_is_close_to_the_paired_t_interval():
    from scipy.stats import t as student
    rng = np.random.default_rng(2)
    base = np.exp(rng.normal(0, 0.3, 12))
    arm = base / 1.4 * np.exp(rng.normal(0, 0.15, 12))
    d = np.log(base / arm)
    half = student.ppf(0.975, 11) * d.std(ddof=1) / np.sqrt(12)
    _, low, high = speedup_interval(base, arm, horizon=np.inf, reps=4000)
    assert np.log(low) == pytest.approx(d.mean() - half, abs=0.25 * half)
    assert np.log(high) == pytest.approx(d.mean() + half, abs=0.25 * half)


def test_the_old_protocols_troublesome_example_gets_finite_bounds():
    base, arm = [30.0, 32.0, 29.0, 35.0, 31.0], [15.0, 18.0, 16.0, np.inf, 17.0]
    for b, a in [(base, arm), (arm, base)]:                    # the miss on either side
        for seed in range(20):
            est, low, high = speedup_interval(b, a, horizon=40.0, seed=seed)
            assert 0 < low < est < high < np.inf
    assert verdict(*speedup_interval(base, arm, horizon=40.0)) == "faster"
    assert verdict(*speedup_interval(arm, base, horizon=40.0)) == "slower"


def test_a_miss_is_censored_at_the_horizon_not_infinitely_slow():
    base = [10.0, 11.0, 9.5, 12.0, 10.5, 9.0, 11.5, 10.0]
    arm = [8.0, 9.0, 7.5, np.inf, 8.5, 7.0, 9.5, 8.0]
    est, low, high = speedup_interval(base, arm, horizon=20.0)
    assert np.isfinite(high) and 0 < low < est < high
    # the miss pulls the estimate down, but only as far as its budget lets it know
    hit = [0, 1, 2, 4, 5, 6, 7]
    all_hit = speedup_interval(np.take(base, hit), np.take(arm, hit), horizon=20.0)[0]
    assert est < all_hit
    at_budget = speedup_interval(base, np.where(np.isinf(arm), 20.0, arm), horizon=np.inf)[0]
    assert est > at_budget                      # the miss taken as reached at its budget


def test_a_pair_where_both_miss_changes_nothing():
    base, arm = [10.0, 12.0, 9.0, 11.0, np.inf], [7.0, 8.0, 7.5, np.inf, 6.0]
    alone = speedup_interval(base, arm, horizon=15.0, seed=3)
    padded = speedup_interval(base + [np.inf, np.inf], arm + [np.inf, np.inf],
                              horizon=15.0, seed=3)
    assert padded == alone
    assert speedup_pvalue(base + [np.inf], arm + [np.inf], horizon=15.0) == \
        speedup_pvalue(base, arm, horizon=15.0)


def test_degenerate_inputs():
    nan3 = (np.nan, np.nan, np.nan)
    assert np.allclose(speedup_interval([], [], horizon=10.0), nan3, equal_nan=True)
    assert np.allclose(speedup_interval([np.inf] * 3, [np.inf] * 3, horizon=10.0), nan3,
                       equal_nan=True)
    est, low, high = speedup_interval([np.inf, 8.0, np.inf], [np.inf, 4.0, np.inf], horizon=10.0)
    assert est == pytest.approx(2.0) and np.isnan(low) and np.isnan(high)   # one pair
    assert np.isnan(speedup_pvalue([8.0], [4.0], horizon=10.0))
    assert verdict(est, low, high) == "inconclusive"


def test_every_pair_a_miss_of_one_side_gives_a_one_sided_sign_test_bound():
    est, low, high = speedup_interval([20.0] * 10, [np.inf] * 10, horizon=30.0)
    assert (est, low) == (0.0, 0.0) and high == pytest.approx(20 / 30)
    assert verdict(est, low, high) == "slower"
    assert speedup_pvalue([20.0] * 10, [np.inf] * 10, horizon=30.0) == pytest.approx(2 / 1024)
    est, low, high = speedup_interval([np.inf] * 10, [20.0] * 10, horizon=30.0)
    assert (est, high) == (np.inf, np.inf) and low == pytest.approx(1.5)
    # five such pairs are too few at 95%: P(all five on one side) = 1/32 > 2.5%
    assert speedup_interval([20.0] * 5, [np.inf] * 5, horizon=30.0) == (0.0, 0.0, np.inf)


def test_more_misses_widen_the_interval_instead_of_collapsing_it():
    rows = [calibration(1.5, 10, 200, Scenario(miss_rate=rate), reps=400, seed=14)
            for rate in (0.0, 0.2, 0.4)]
    widths = [r["median_width"] for r in rows]
    assert widths[0] < widths[1] < widths[2] < np.inf            # wider, and still finite
    assert all(r["coverage"] >= 0.9 and r["faster"] >= 0.8 for r in rows), rows


def test_swapping_the_sides_inverts_the_ratio_and_scaling_the_clock_changes_nothing():
    base, arm = [10.0, 12.0, 9.0, 11.0, np.inf, 13.0], [7.0, 8.0, 7.5, np.inf, 6.0, 12.0]
    hb, ha = [15.0, 15.0, 15.0, 15.0, 15.0, 20.0], 14.0
    est, low, high = speedup_interval(base, arm, horizon=hb, arm_horizon=ha)
    swapped = speedup_interval(arm, base, horizon=ha, arm_horizon=hb)
    assert swapped == pytest.approx((1 / est, 1 / high, 1 / low))
    scaled = speedup_interval(np.multiply(base, 1e12), np.multiply(arm, 1e12),
                              horizon=np.multiply(hb, 1e12), arm_horizon=ha * 1e12)
    assert scaled == pytest.approx((est, low, high))


def test_unequal_budgets_use_each_runs_own_horizon():
    # the arm ran longer: its hit at 18 is past the baseline's budget of 15
    base, arm = [10.0, 12.0, np.inf, 11.0], [7.0, 8.0, 18.0, 7.0]
    est, _, _ = speedup_interval(base, arm, horizon=15.0, arm_horizon=30.0)
    # the miss says only base > 15, i.e. a ratio above 15 / 18 < 1: no pull on 1.4x
    assert est == pytest.approx(np.exp(np.mean(np.log([10 / 7, 12 / 8, 11 / 7]))))


def test_bad_inputs_name_their_side():
    with pytest.raises(ValueError, match="base"):
        speedup_interval([1.0, np.nan], [1.0, 2.0], horizon=5.0)
    with pytest.raises(ValueError, match="arm"):
        speedup_interval([1.0, 2.0], [1.0, 6.0], horizon=5.0)        # past its horizon
    with pytest.raises(ValueError, match="arm"):
        speedup_interval([1.0, 2.0], [1.0, np.inf], horizon=np.inf)  # a miss needs a budget
    with pytest.raises(ValueError, match="paired"):
        speedup_interval([1.0, 2.0], [1.0], horizon=5.0)


def test_the_pvalue_is_the_dual_of_the_interval():
    rng = np.random.default_rng(5)
    for ratio in (1.0, 1.2, 0.9):
        base, arm, horizon = stats.simulate_study(ratio, 8, Scenario(), rng)
        fit = paired_speedup(base, arm, horizon=horizon, seed=1)
        p = fit.pvalue()
        assert 0 < p < 1 and np.isfinite(fit.log_estimate)
        _, low, high = fit.interval(1 - p)
        assert min(abs(np.log(low)), abs(np.log(high))) < 1e-9        # a bound at exactly 1
        assert p == speedup_pvalue(base, arm, horizon=horizon, seed=1)


def test_verdicts():
    assert verdict(1.5, 1.1, 2.0) == "faster"
    assert verdict(0.7, 0.5, 0.9) == "slower"
    assert verdict(1.2, 0.9, 1.6) == "inconclusive"
    assert verdict(1.2, 1.0, 1.6) == "inconclusive"             # touching 1 is not above it
    assert verdict(np.nan, np.nan, np.nan) == "inconclusive"


def test_speedup_interval_is_fast():
    base, arm, horizon = stats.simulate_study(1.5, 10, Scenario(), np.random.default_rng(6))
    times = []
    for _ in range(10):
        start = time.perf_counter()
        speedup_interval(base, arm, horizon=horizon, reps=2000)
        times.append(time.perf_counter() - start)
    assert min(times) < 0.05


# ---- Holm --------------------------------------------------------------------------------
def test_holm_against_a_hand_checked_example():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 -> max(0.06, 0.04)
    p = [0.01, 0.04, 0.03, 0.005]
    assert holm_adjust(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # alpha / (4, 3, 2, 1) = 0.0125, 0.0167, 0.025, 0.05: 0.005 and 0.01 pass, 0.03 stops it
    assert holm_levels(p) == pytest.approx([1 - 0.05 / 3, 0.975, 0.975, 1 - 0.05 / 4])
    assert holm_adjust([0.3, 0.9]) == pytest.approx([0.6, 0.9])
    assert holm_adjust([0.6, 0.5]) == pytest.approx([1.0, 1.0])      # capped at 1
    assert holm_levels([0.001, 0.002]) == pytest.approx([0.975, 0.95])  # every step rejects


def test_holm_leaves_nan_out_of_the_family():
    adjusted = holm_adjust([0.01, np.nan, 0.02])
    assert adjusted[[0, 2]] == pytest.approx([0.02, 0.02]) and np.isnan(adjusted[1])
    assert np.isnan(holm_levels([np.nan, 0.01])[0])
    assert holm_levels([np.nan, 0.01])[1] == pytest.approx(0.95)
    assert len(holm_adjust([])) == 0 and len(holm_levels([])) == 0


def test_adjusted_intervals_call_a_verdict_exactly_where_holm_rejects():
    rng = np.random.default_rng(7)
    comparisons = []
    for ratio in (1.0, 1.0, 1.15, 1.3, 1.5, 2.0, 0.8):
        base, arm, horizon = stats.simulate_study(ratio, 6, Scenario(), rng)
        comparisons.append(dict(base=base, arm=arm, horizon=horizon))
    comparisons.append(dict(base=[np.inf, 5.0], arm=[np.inf, 4.0], horizon=9.0))  # no test
    rows = stats.adjusted_intervals(comparisons, reps=1000, seed=2)
    for c, row in zip(comparisons, rows):
        alone = speedup_interval(**c, reps=1000, seed=2)
        if np.isnan(row["p"]):
            assert np.isnan(row["level"]) and row["verdict"] == "inconclusive"
            continue
        assert (row["verdict"] != "inconclusive") == (row["p_holm"] <= 0.05)
        assert row["level"] >= 0.95 and row["estimate"] == alone[0]
        assert row["low"] <= alone[1] and row["high"] >= alone[2]   # at least as wide
    assert any(r["verdict"] == "faster" for r in rows)


# ---- reached by time t -------------------------------------------------------------------
def test_with_one_horizon_reached_by_is_the_empirical_cdf():
    times = np.array([3.0, 5.0, np.inf, 4.0, 5.0, np.inf])
    grid = np.array([0, 3, 3.5, 4, 5, 9.9, 10, 10.1])
    expected = [(times <= g).mean() for g in grid[:-1]]
    assert reached_by(times, 10.0, grid)[:-1] == pytest.approx(expected)
    assert np.isnan(reached_by(times, 10.0, grid)[-1])          # past the budget: unknown
    assert reached_by([1.0, 2.0], 10.0, [50.0]) == pytest.approx([1.0])   # every seed reached


def test_reached_by_with_unequal_horizons_is_kaplan_meier():
    # watched until: 3 (hit), 5 (hit), 6 (miss), 4 (hit), 10 (miss)
    times, horizon = [3.0, 5.0, np.inf, 4.0, np.inf], [8, 8, 6, 8, 10]
    # at 3: 5 at risk, 1 reaches; at 4: 4 at risk, 1; at 5: 3 at risk, 1; the 6 is censored
    not_yet = np.cumprod([4 / 5, 3 / 4, 2 / 3])
    assert reached_by(times, horizon, [2, 3, 4, 5, 7, 10]) == pytest.approx(
        [0, *(1 - not_yet), 1 - not_yet[-1], 1 - not_yet[-1]])


def test_the_reached_by_band_is_wilsons_interval_and_contains_the_curve():
    from scipy.stats import norm
    times = np.array([3.0, 5.0, np.inf, 4.0, 5.0, np.inf, 2.0, 7.0, 6.0, 8.0])
    grid = np.linspace(0, 10, 21)
    f, low, high = reached_band(times, 10.0, grid)
    assert np.all((0 <= low) & (low <= f) & (f <= high) & (high <= 1))
    z, n = norm.ppf(0.975), 10                                  # one budget: n_eff = 10
    k = (times <= 5).sum()
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    at5 = np.flatnonzero(grid == 5)[0]
    assert (low[at5], high[at5]) == pytest.approx((mid - half, mid + half))
    assert high[0] > 0.2                            # no seed has reached: still a band
    f, low, high = reached_band([1.0, 2.0, 3.0], 10.0, [5.0])
    assert f == 1 and low == pytest.approx(3 / (3 + z * z))    # every seed: Wilson's 3 of 3
