"""Chapter 4: targets from target-setting seeds, crossings between passes, paired speed-ups
with censoring, Holm for the exploratory comparisons, the frontier's saving, phase A's
picks, and labels, from synthetic result rows (and small synthetic studies on disk)."""
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from speedup.arms import ARMS, Arm, register_arm
from speedup.protocol import (FrontierSaving, Protocol, add_targets, comparisons, crossing,
                              frontier_calibration, frontier_cost, monotone_fit,
                              frontier_savings, reach_rates, smoothed, target_reach,
                              tuning_picks)
from speedup.report import evaluate_study
from speedup.results import version_bytes
from speedup.figures import study_label

INF = float("inf")


def _hist(values, spe, flops_per_epoch=1e9):
    return [{"step": i + 1, "epoch": float(i + 1), "val_primary": v,
             "val": {"n": 200, "se": 0.03}, "train_time_s": (i + 1) * spe,
             "train_flops": (i + 1) * flops_per_epoch} for i, v in enumerate(values)]


def _row(arm, values, spe, name, *, version="1MB", seed=0, budget=1.0, role="main",
         flops_per_epoch=1e9, **kw):
    h = _hist(values, spe, flops_per_epoch)
    params = {"task": "cv", "arch": "resnet18", "dataset": "caltech256", "version": version,
              "seed": seed, "arm": arm, "budget": budget,
              **{k: v for k, v in kw.items() if k != "varied"}}
    return {**params, "params": params,
            "main": role == "main", "target": role == "target",
            "frontier": role == "frontier", "tuning": role == "tuning", "varied": [],
            "history": h, "run_name": name, "best_val": max(values), "final_val": values[-1],
            "test": values[-1], "train_time_s": h[-1]["train_time_s"],
            "train_flops": h[-1]["train_flops"], "horizon_s": h[-1]["train_time_s"],
            "horizon_flops": h[-1]["train_flops"], "val_n": 200, "val_se": 0.03,
            "width": 16, "data_source": "sample", "metric": "accuracy",
            "higher_is_better": True, "diverged": False, "diverged_epoch": np.nan, **kw}


def test_a_curve_is_smoothed_over_three_passes_and_a_crossing_interpolated():
    h = _hist([.2, .5, .8, .8], 3.0)
    assert smoothed(h).tolist() == pytest.approx([.2, .35, .5, .7])
    # the smoothed curve reaches .6 halfway between its 3rd (.5) and 4th (.7) pass
    assert crossing(h, .6) == pytest.approx((3.5, 10.5, 3.5e9))
    assert crossing(h, .71) == (INF, INF, INF)
    assert crossing(h, .1) == pytest.approx((1.0, 3.0, 1e9))   # reached at the first pass
    lower = _hist([300.0, 100.0, 60.0], 1.0)
    # smoothed 300, 200, 153.3: perplexity 160 is reached 40 / 46.7 of the way to pass 3
    assert crossing(lower, 160.0, higher_is_better=False)[0] == pytest.approx(2 + 40 / (140 / 3))


def test_the_target_comes_from_the_target_seeds_lowest_best_smoothed_score():
    df = add_targets(pd.DataFrame([
        _row("baseline", [.6, .8, .8, .8], 10.0, "t0", seed=100, role="target"),
        _row("baseline", [.5, .7, .7, .7], 10.0, "t1", seed=101, role="target"),  # lowest: .7
        _row("baseline", [.2, .5, .9, .9], 10.0, "b"),            # a comparison seed
        _row("baseline", [.5, .95], 10.0, "b-half", budget=0.5, role="frontier"),
        _row("progressive", [.3, .6, .78, .8], 5.0, "p"),
    ]), 0.9)
    assert df.target.tolist() == pytest.approx([0.63] * 5)    # 0.9 x 0.7, never the best .95
    assert set(df.target_source) == {"target seeds"}
    # without target seeds the comparison's own full-budget baselines set it, and say so
    alone = add_targets(pd.DataFrame([_row("baseline", [.2, .5, .8, .8], 10.0, "b"),
                                      _row("progressive", [.3, .6, .8], 5.0, "p")]), 0.9)
    assert alone.target.tolist() == pytest.approx([0.9 * 0.7] * 2)
    assert set(alone.target_source) == {"comparison seeds"}


def _paired_study(ratios, arm="progressive", seeds=10, miss=(), **kw):
    """A case whose arm is ``ratios[k]`` x faster than the baseline on seed k."""
    rng = np.random.default_rng(0)
    rows = [_row("baseline", [.9, .9], 10.0, f"t{s}", seed=100 + s, role="target")
            for s in range(2)]
    for s in range(seeds):
        spe = 10.0 * np.exp(rng.normal(0, .2))
        rows.append(_row("baseline", [.2, .5, .9, .9, .9, .9], spe, f"b{s}", seed=s, **kw))
        values = [.1] * 6 if s in miss else [.2, .5, .9, .9, .9, .9]
        r = ratios if np.ndim(ratios) == 0 else ratios[s]
        rows.append(_row(arm, values, spe / r, f"{arm}{s}", seed=s,
                         flops_per_epoch=1e9 / r, **kw))
    return pd.DataFrame(rows)


def test_the_target_reach_simulation_matches_its_closed_form_and_the_margin_helps():
    # no margin: a seed is the worst of n + 1 with chance 1/(n + 1); all m reach: n/(n + m)
    per_seed, every = target_reach(0.1, 5, 1.0, seeds=10, studies=40_000)
    assert per_seed == pytest.approx(5 / 6, abs=0.01)
    assert every == pytest.approx(5 / 15, abs=0.01)
    # a margin and more target seeds raise both; the evidence profiles' 20 seeds clear 95%
    assert target_reach(0.1, 5, 0.9)[1] > every
    assert target_reach(0.1, 20, 0.9)[1] > target_reach(0.1, 5, 0.9)[1]
    assert target_reach(0.1, 20, 0.9)[0] > 0.99
    with pytest.raises(ValueError, match="target_fraction"):
        target_reach(0.1, 5, 1.5)


def test_a_paired_speedup_is_found_faster_and_a_miss_only_widens_it():
    df = add_targets(_paired_study(1.5), 0.95)
    table = comparisons(df, Protocol(), reps=500).set_index("arm")
    r = table.loc["progressive"]
    assert r.flops == pytest.approx(1.5, rel=1e-6) and r.verdict == "faster"
    assert r.flops_lo > 1 and r.primary and r.reached == 10 and r.baseline_reached == 10
    assert r.val_n == 200 and r.val_se == 0.03 and r.target_source == "target seeds"
    missed = add_targets(_paired_study(1.5, miss=(3,)), 0.95)
    m = comparisons(missed, Protocol(), reps=500).set_index("arm").loc["progressive"]
    assert m.reached == 9 and np.isfinite(m.flops_hi) and m.flops_lo > 0   # never [0, inf]


def test_exploratory_comparisons_are_holm_adjusted_and_the_primary_is_not():
    df = pd.concat([_paired_study(1.5), _paired_study(1.5, arm="difficulty").query(
        "arm == 'difficulty'")])
    table = comparisons(add_targets(df, 0.95), Protocol(primary_arm="progressive"),
                        reps=500).set_index("arm")
    assert table.loc["progressive", "primary"] and not table.loc["difficulty", "primary"]
    assert table.loc["progressive", "flops_level"] == 0.95
    assert table.loc["difficulty", "flops_level"] >= 0.95       # its Holm step


def test_the_baselines_reach_their_own_target():
    rates = reach_rates(add_targets(_paired_study(1.0), 0.95)).iloc[0]
    assert (rates.seeds, rates.reached, rates.rate) == (10, 10, 1.0)


def test_the_frontier_saving_is_the_baselines_cost_at_the_arms_quality():
    assert frontier_cost([(1.0, .5), (2.0, .7), (4.0, .8)], .75, True) == pytest.approx(3.0)
    assert frontier_cost([(1.0, .5), (2.0, .7)], .9, True) == INF
    # made monotone by isotonic regression: .6 and .5 pool to .55, so .6 lies past 2.0
    assert frontier_cost([(1.0, .6), (2.0, .5), (4.0, .8)], .6, True) == pytest.approx(2.4)
    assert frontier_cost([(1.0, 90.0), (2.0, 60.0)], 75.0, False) == pytest.approx(1.5)
    assert monotone_fit([[1, 3, 2, 4], [4, 3, 2, 1]]) == pytest.approx(
        np.array([[1, 2.5, 2.5, 4], [2.5] * 4]))
    rows = []
    for s in range(6):
        for b, q in ((0.25, .6), (0.5, .7), (1.0, .8)):
            rows.append(_row("baseline", [.3, q], 10.0 * b, f"b{s}-{b}", seed=s, budget=b,
                             role="main" if b == 1 else "frontier", flops_per_epoch=b * 1e9))
        # the arm reaches the baseline's 50% quality (.7) with 25% of the full budget's FLOPs
        rows.append(_row("progressive", [.3, .7], 2.5, f"p{s}", seed=s,
                         flops_per_epoch=0.25e9))
    savings = frontier_savings(add_targets(pd.DataFrame(rows), 0.9), Protocol(), reps=300)
    r = savings.iloc[0]
    assert r.budgets == [0.25, 0.5, 1.0] and r.pairs == 6
    assert r.saving_flops == pytest.approx(2.0)   # the baseline needs 1e9 FLOPs, the arm 0.5e9
    assert r.primary and r.saving_flops_level == 0.95


def test_frontier_rows_other_than_the_primary_are_at_their_holm_level():
    rows = []
    for s in range(6):
        for b, q in ((0.25, .6), (0.5, .7), (1.0, .8)):
            rows.append(_row("baseline", [.3, q + .01 * s], 10.0 * b, f"b{s}-{b}", seed=s,
                             budget=b, role="main" if b == 1 else "frontier",
                             flops_per_epoch=b * 1e9))
        rows.append(_row("progressive", [.3, .7 + .01 * s], 2.5, f"p{s}", seed=s,
                         flops_per_epoch=0.25e9))
        for arm in ("difficulty", "anti"):
            rows.append(_row(arm, [.3, .8 + .01 * s], 10.0, f"{arm}{s}", seed=s,
                             flops_per_epoch=1e9))
    savings = frontier_savings(add_targets(pd.DataFrame(rows), 0.9), Protocol(),
                               reps=300).set_index("arm")
    assert savings.primary.to_dict() == {"progressive": True, "difficulty": False,
                                         "anti": False}
    assert savings.loc["progressive", "saving_flops_level"] == 0.95
    assert (savings.loc[["difficulty", "anti"], "saving_flops_level"] >= 0.975).all()


def test_the_frontier_savings_p_value_is_the_dual_of_its_interval():
    fit = FrontierSaving(10, 1.3, np.random.default_rng(0).lognormal(np.log(1.3), 0.15, 2000))
    p = fit.pvalue()
    assert 0 < p < 0.2
    assert fit.interval(1 - 1.1 * p)[1] > 1 >= fit.interval(1 - 0.9 * p)[1]
    beyond = FrontierSaving(10, np.inf, np.full(2000, np.inf))    # past the baseline's best
    assert beyond.pvalue() == 0 and beyond.interval(0.99)[1:] == (np.inf, np.inf)


def test_the_frontier_saving_rarely_reads_the_baseline_against_itself_as_a_speedup():
    """The A/A arm on a nearly flat frontier: "faster" or "slower" in at most 10% of
    simulated studies (5% nominal; measured 4.3-6.2% over four RNG seeds), and a true
    1.5x seen as "faster" in at least 70% (measured 80-85%)."""
    aa = frontier_calibration(1.0, 10, 400, seed=10)
    assert aa["faster"] + aa["slower"] <= 0.10
    assert frontier_calibration(1.5, 10, 200, seed=11)["faster"] >= 0.70


def test_phase_a_picks_the_value_with_the_least_work_to_the_target():
    rows = []
    for seed in (500, 501):
        for value, values, cost in ((0.05, [.3, .6, .8, .85], 1e9), (0.1, [.5, .8, .85, .85],
                                    1e9), (0.2, [.1, .1, .1, .1], 1e9)):
            rows.append(_row("baseline", values, 1.0, f"b{value}-{seed}", seed=seed,
                             role="tuning", flops_per_epoch=cost, lr=value,
                             varied=["lr"]))
        for value, spe in ((0.25, 0.5), (0.5, 0.3), (0.75, 0.8)):
            rows.append(_row("progressive", [.5, .8, .85, .85], spe, f"p{value}-{seed}",
                             seed=seed, role="tuning", flops_per_epoch=spe * 1e9,
                             start_scale=value, varied=["start_scale"]))
    picks, grid = tuning_picks(pd.DataFrame(rows), Protocol())
    assert picks == {"resnet18": {"caltech256": {"baseline": {"lr": 0.1},
                                                 "progressive": {"start_scale": 0.5}}}}
    assert grid[grid.picked].value.tolist() == [0.1, 0.5]
    assert grid[(grid.arm == "baseline") & (grid.value == 0.2)].measure.iloc[0] == INF


def test_a_pick_keeps_its_settings_type():
    """An integer setting (a start length) is picked as an integer, though it shares the
    grid's value column with a float one (a learning rate): phase B's run checks types."""
    rows = [_row("baseline", [.5, .8, .85, .85], 1.0, f"b{v}", seed=500, role="tuning",
                 lr=v, varied=["lr"]) for v in (0.002, 0.004)]
    rows += [_row("progressive", [.5, .8, .85, .85], 1.0, f"p{v}", seed=500, role="tuning",
                  start_length=v, varied=["start_length"]) for v in (8, 16)]
    picks, _ = tuning_picks(pd.DataFrame(rows), Protocol())
    chosen = picks["resnet18"]["caltech256"]["progressive"]["start_length"]
    assert chosen in (8, 16) and type(chosen) is int


def test_the_label_names_sample_data_and_scaled_down_models():
    df = pd.DataFrame([_row("baseline", [.5], 1.0, "a")])
    assert study_label(df) == ("Computed on embedded sample data with scaled-down models "
                               "(width 16 of 64)")
    assert sorted(["1MB", "100KB", "100MB", "10MB"], key=version_bytes) == \
        ["100KB", "1MB", "10MB", "100MB"]


def _result(name, arm, values, spe, *, seed=0, budget=1.0, flops=1e9, **params):
    params = {"task": "cv", "arch": "resnet18", "dataset": "caltech256", "version": "1MB",
              "arm": arm, "seed": seed, "budget": budget, "width": 16,
              "epochs": len(values), **params}
    return {"status": "complete", "run_name": name, "params": params, "model": "ResNet-18",
            "primary_metric": "accuracy", "higher_is_better": True, "best_val": max(values),
            "test": {"accuracy": values[-1]}, "data_source": "sample", "input_size": 32,
            "input_unit": "px", "train_flops": len(values) * flops, "steps": len(values),
            "history": _hist(values, spe, flops)}


def _study(tmp_path, runs, roles, picks=None):
    """Result files and a plan (each run's roles) in ``tmp_path``, as a batch leaves them."""
    (tmp_path / "results").mkdir()
    for r in runs:
        (tmp_path / "results" / f"{r['run_name']}.json").write_text(json.dumps(r))
    params = {r["run_name"]: r["params"] for r in runs}
    jobs = [{"id": ident, "params": params.get(ident, {}), "varied": [], "main": False,
             "target": False, "frontier": False, **role} for ident, role in roles.items()]
    plan = {"label": "test", "task": "cv", "method_defaults": {"task": "cv"},
            "picks": picks or {}, "source": "test.yaml",
            "stages": {"method": [j for j in jobs if not j["varied"]],
                       "tuning": [j for j in jobs if j["varied"]]}}
    (tmp_path / "plan.json").write_text(json.dumps(plan))


MAIN = {"main": True}


def test_evaluation_reads_only_the_plans_runs(tmp_path):
    """A stale result of another plan in the same folder must not move the targets."""
    _study(tmp_path, [_result("base", "baseline", [.2, .5, .6], 2.0),
                      _result("prog", "progressive", [.3, .55, .6], 1.0, flops=5e8),
                      _result("stale", "baseline", [.5, .9, .95], 2.0)],  # e.g. more epochs
           {"base": MAIN, "prog": MAIN})
    study = evaluate_study(task="cv", output_dir=str(tmp_path), target_fraction=0.9)
    assert study["runs"] == 2
    row = study["speedups"].iloc[0]
    assert row.target == pytest.approx(0.9 * np.mean([.2, .5, .6]))   # smoothed, not .95
    assert row.primary and np.isnan(row.speedup_lo)     # one seed pair: no interval
    with pytest.raises(FileNotFoundError, match="main runs for task 'nlp'"):
        evaluate_study(task="nlp", output_dir=str(tmp_path), target_fraction=0.9)


def test_a_newly_registered_arm_appears_everywhere(tmp_path):
    """Nothing in chapter 4 lists the arms: a toy arm shows up in every table and figure,
    after the registered ones, in both media."""
    @register_arm
    @dataclass(frozen=True)
    class Toy(Arm):
        name, label, color, tasks = "toy", "toy arm", "#2ca02c", ("cv",)
    try:
        runs, roles = [], {}
        for s in range(3):
            runs += [_result(f"base{s}", "baseline", [.2, .5, .6, .6], 2.0, seed=s),
                     _result(f"base50-{s}", "baseline", [.2, .5], 2.0, seed=s, budget=0.5),
                     _result(f"prog{s}", "progressive", [.3, .55, .6, .6], 1.0, seed=s,
                             flops=5e8),
                     _result(f"toy{s}", "toy", [.1, .2, .3, .3], 1.0, seed=s)]
            roles.update({f"base{s}": MAIN, f"base50-{s}": {"frontier": True},
                          f"prog{s}": MAIN, f"toy{s}": MAIN})
        runs += [_result("tune-lr", "baseline", [.2, .5, .6], 2.0, seed=500, lr=0.1),
                 _result("tune-s", "progressive", [.3, .55, .6], 1.0, seed=500,
                         start_scale=0.25)]
        roles.update({"tune-lr": {"varied": ["lr"]}, "tune-s": {"varied": ["start_scale"]}})
        _study(tmp_path, runs, roles)
        from speedup.protocol import select_settings
        picks = select_settings(task="cv", output_dir=str(tmp_path), target_fraction=0.9)
        assert picks["picks"]["resnet18"]["caltech256"] == {
            "baseline": {"lr": 0.1}, "progressive": {"start_scale": 0.25}}
        study = evaluate_study(task="cv", output_dir=str(tmp_path), target_fraction=0.9)
        assert list(study["speedups"].arm) == ["progressive", "toy"]
        table = (tmp_path / "tables" / "speedup.md").read_text()
        assert "| toy arm | exploratory" in table and "**primary**" in table
        assert "Primary comparison, fixed before the runs" in table and "sample data" in table
        for name in ("schedule", "tuning", "convergence", "final_performance", "curves",
                     "reached", "speedup", "frontier"):
            assert study["figures"][name].stat().st_size > 10_000, name
        for name in ("schedule", "tuning", "speedup", "case", "final_performance",
                     "cases_resnet18", "frontier"):
            assert study["slides"][name].stat().st_size > 10_000, name
        for name in ("speedup_detail", "frontier", "tuning", "informative", "evidence"):
            assert (tmp_path / "tables" / f"{name}.md").exists(), name
        assert "**0.25** (picked)" in (tmp_path / "tables" / "tuning.md").read_text()
    finally:
        ARMS.pop("toy", None)


# --------------------------------------------------------------- the difficulty check

from scipy.stats import spearmanr  # noqa: E402

from speedup.protocol import difficulty_check  # noqa: E402
from speedup.tables import difficulty_markdown  # noqa: E402
from speedup.train import EXAMPLES_SUFFIX, save_examples  # noqa: E402


def _records(tmp_path, name, **arrays):
    save_examples(tmp_path / "results" / (name + EXAMPLES_SUFFIX),
                  {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})


def _rho(a, b):
    return spearmanr(a, b).statistic


def test_the_difficulty_check_pairs_each_score_with_its_seeds_baseline(tmp_path):
    """Scipy's rho on hand-made arrays: each seed's score against that seed's baseline,
    seed 0's where a seed has none; a frontier run's losses are never used; a case
    without a baseline and a run without records are reported, not errors."""
    rng = np.random.default_rng(0)
    known = rng.random(50)
    loss = {0: known + rng.normal(0, .3, 50), 1: known + rng.normal(0, .3, 50)}
    score = {s: known + rng.normal(0, .6, 50) for s in (0, 1, 2)}
    for s in (0, 1):
        _records(tmp_path, f"base-s{s}", loss=loss[s], known=known)
        _records(tmp_path, f"diff-s{s}", score=score[s], known=known)
    _records(tmp_path, "diff-s2", score=score[2], known=known)
    _records(tmp_path, "anti-s0", score=score[0], known=known)
    _records(tmp_path, "base-half", loss=-known, known=known)   # a 50% budget: not the reference
    _records(tmp_path, "vgg-diff", score=score[0])               # real data: no known difficulty
    rows = [_row("baseline", [.5], 1, f"base-s{s}", seed=s) for s in (0, 1)]
    rows += [_row("difficulty", [.5], 1, f"diff-s{s}", seed=s) for s in (0, 1, 2)]
    rows += [_row("anti", [.5], 1, "anti-s0"), _row("anti", [.5], 1, "anti-old", seed=1),
             _row("baseline", [.5], 1, "base-half", budget=0.5),
             _row("progressive", [.5], 1, "prog"),
             _row("difficulty", [.5], 1, "vgg-diff", arch="vgg11_bn")]
    check, notes = difficulty_check(pd.DataFrame(rows), str(tmp_path))
    assert list(zip(check.arch, check.arm, check.seed)) == [
        ("resnet18", "difficulty", 0), ("resnet18", "difficulty", 1),
        ("resnet18", "difficulty", 2), ("resnet18", "anti", 0), ("vgg11_bn", "difficulty", 0)]
    c = check.set_index("run_name")
    for run, s, base in (("diff-s0", 0, 0), ("diff-s1", 1, 1), ("diff-s2", 2, 0),
                         ("anti-s0", 0, 0)):
        assert c.loc[run, "baseline_seed"] == base and c.loc[run, "n"] == 50
        assert c.loc[run, "rho_loss"] == pytest.approx(_rho(score[s], loss[base]), rel=1e-5)
        assert c.loc[run, "rho_known"] == pytest.approx(_rho(score[s], known), rel=1e-5)
        assert c.loc[run, "rho_loss_known"] == pytest.approx(_rho(loss[base], known), rel=1e-5)
    assert c.loc["anti-s0", "rho_loss"] == c.loc["diff-s0", "rho_loss"]  # the same ranking
    assert np.isnan(c.loc["vgg-diff", ["rho_loss", "baseline_seed", "rho_known"]].astype(
        float)).all()
    assert len(notes) == 1 and "anti-old" in notes[0] and "prog" not in notes[0]
    table = difficulty_markdown(check, notes, "a label")
    assert "(seed 0's baseline)" in table.splitlines()[4]     # diff-s2's row
    assert "(seed" not in table.splitlines()[3]                # diff-s1: its own baseline
    assert "no full-budget baseline" in table and "anti-old" in table and "a label" in table
    assert f"| {c.loc['diff-s1', 'rho_loss']:+.2f} |" in table


def test_evaluation_writes_the_difficulty_check_and_skips_old_results(tmp_path, capsys):
    known = np.linspace(0, 1, 40)
    runs = [_result("base", "baseline", [.2, .5, .6], 2.0),
            _result("diff", "difficulty", [.3, .55, .6], 1.0),
            _result("anti", "anti", [.1, .4, .6], 1.0)]
    _study(tmp_path, runs, {r["run_name"]: MAIN for r in runs})
    _records(tmp_path, "base", loss=known ** 2, known=known)
    _records(tmp_path, "diff", score=known[::-1], known=known)   # "anti" has none: old
    study = evaluate_study(task="cv", output_dir=str(tmp_path), target_fraction=0.9)
    assert "skipped 1 run(s) without per-example records" in capsys.readouterr().out
    row = study["difficulty_check"].iloc[0]
    assert len(study["difficulty_check"]) == 1 and row.rho_loss == pytest.approx(-1)
    assert row.rho_known == pytest.approx(-1) and row.rho_loss_known == pytest.approx(1)
    table = (tmp_path / "tables" / "difficulty_check.md").read_text()
    assert "| -1.00 | -1.00 | +1.00 |" in table and "anti" in table
    assert study["figures"]["difficulty_check"].stat().st_size > 10_000


def test_the_evidence_states_its_provenance_the_primary_result_and_the_aa_check(tmp_path):
    """EVIDENCE.md's section of a pair names its profile and commit, quotes the primary
    comparison between the markers the deck reads, says whether the A/A interval holds 1,
    and publishing keeps the other pair's section."""
    from speedup.deck import evidence_claim
    from speedup.evidence import evidence_quote, publish_evidence
    runs, roles = [], {}
    rng = np.random.default_rng(3)
    for s in range(8):
        spe = 2.0 * np.exp(rng.normal(0, .2))
        runs += [_result(f"base{s}", "baseline", [.2, .5, .6, .6, .6], spe, seed=s),
                 _result(f"prog{s}", "progressive", [.2, .5, .6, .6, .6], spe / 1.6, seed=s,
                         flops=1e9 / 1.6),
                 _result(f"aa{s}", "aa", [.2, .5, .6, .6, .6],
                         spe * np.exp(rng.normal(0, .1)), seed=s)]
        roles.update({f"base{s}": MAIN, f"prog{s}": MAIN, f"aa{s}": MAIN})
    runs += [_result(f"t{s}", "baseline", [.2, .5, .6, .6, .6], 2.0, seed=100 + s)
             for s in range(3)]
    roles.update({f"t{s}": {"target": True} for s in range(3)})
    (tmp_path / "out").mkdir()
    _study(tmp_path / "out", runs, roles)
    evaluate_study(task="cv", output_dir=str(tmp_path / "out"), target_fraction=0.9)
    section = (tmp_path / "out" / "tables" / "evidence.md").read_text()
    assert "Profile `test.yaml`, code `" in section
    assert "A/A check" in section and "holds 1 in 1 of 1 cases" in section
    evidence = tmp_path / "EVIDENCE.md"
    evidence.write_text("## Text pair (nlp)\n\n<!-- claim:nlp -->kept<!-- /claim -->\n")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- evidence -->\nold\n<!-- /evidence -->\nrest\n")
    publish_evidence(str(tmp_path / "out"), str(evidence), str(readme))
    head = evidence_claim("cv", evidence.read_text())
    # the README quotes the primary result and the A/A check, with the profile
    quoted = readme.read_text().split("<!-- evidence -->\n")[1].split("<!-- /evidence -->")[0]
    assert quoted == evidence_quote(evidence.read_text()) + "\n"
    assert head in quoted and "holds 1 in 1 of 1 cases" in quoted and "Profile `test.yaml`" \
        in quoted and readme.read_text().endswith("<!-- /evidence -->\nrest\n")
    assert head.startswith("Progressive resizing (sample data, scaled-down models, 8 seed "
                           "pairs, primary comparison) reached the target with 1.60x fewer "
                           "FLOPs [")
    assert evidence_claim("nlp", evidence.read_text()) == "kept"
    assert len(head.split()) < 45
