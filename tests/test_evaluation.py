"""Chapter 4: targets, time-to-target, speed-ups with intervals, and labels, from synthetic
result rows (and one small synthetic study on disk)."""
import json

import numpy as np
import pandas as pd
import pytest

from speedup.evaluation import (ARMS, Arm, add_targets, arm_stats, arm_summary,
                                bootstrap_speedup, evaluate_study, geometric_mean,
                                median_time, percentile_interval, performance_profile,
                                register_arm, speedup_summary, speedups, study_label,
                                time_to_target, version_bytes)

INF = float("inf")


def _hist(values, seconds_per_epoch, flops_per_epoch=1e9):
    return [{"step": i + 1, "epoch": float(i + 1), "val_primary": v,
             "train_time_s": (i + 1) * seconds_per_epoch,
             "train_flops": (i + 1) * flops_per_epoch} for i, v in enumerate(values)]


def _row(curriculum, values, spe, name, *, version="1MB", seed=0, budget=1.0, main=None,
         **kw):
    main = budget == 1.0 if main is None else main
    return {"arch": "resnet18", "dataset": "caltech256", "version": version, "seed": seed,
            "curriculum": curriculum, "budget": budget, "main": main,
            "frontier": not main and curriculum == "none" and budget < 1.0,
            "varied": [], "history": _hist(values, spe), "run_name": name,
            "best_val": max(values), "final_val": values[-1], "test": values[-1],
            "train_time_s": len(values) * spe, "train_flops": len(values) * 1e9,
            "width": 16, "data_source": "sample", "task": "cv", "metric": "accuracy",
            "higher_is_better": True, **kw}


def test_time_to_target_is_the_first_pass_at_or_above_target_and_a_miss_is_infinite():
    h = _hist([.2, .5, .45, .7], 3.0)
    assert time_to_target(h, .5) == (2.0, 6.0, 2e9)
    assert time_to_target(h, .71) == (INF, INF, INF)


def test_the_target_comes_from_the_full_budget_baseline_only():
    df = add_targets(pd.DataFrame([
        _row("none", [.2, .5, .8, .8], 10.0, "b"),
        _row("none", [.5, .9, .9], 10.0, "b-half", budget=0.5),           # a frontier run
        _row("none", [.5, .95, .95], 10.0, "b-tuned", main=False),         # a tuning run
        _row("progressive", [.3, .6, .78, .8], 5.0, "p"),  # reaches .76 at epoch 3 = 15 s
        _row("difficulty", [.1, .2, .3, .4], 10.0, "d"),    # never reaches it
    ]), 0.95)
    assert df.target.tolist() == pytest.approx([0.76] * 5)
    table = speedups(df, reps=200).set_index("curriculum")
    assert table.loc["progressive", "baseline_s"] == 30.0
    assert table.loc["progressive", "method_s"] == 15.0
    assert table.loc["progressive", "speedup"] == pytest.approx(2.0)
    assert table.loc["progressive", "flops_speedup"] == pytest.approx(1.0)  # same FLOPs/epoch
    assert table.loc["difficulty", "method_s"] == INF
    assert table.loc["difficulty", "speedup"] == 0.0   # shown as "not reached"


def test_the_cheapest_baseline_budget_that_reaches_the_target_is_picked():
    df = add_targets(pd.DataFrame([
        _row("none", [.5, .8, .8, .8], 10.0, "b"),              # target .76, reached at 20 s
        _row("none", [.5, .7], 10.0, "b50", budget=0.5),        # misses
        _row("none", [.5, .6, .77], 4.0, "b75", budget=0.75),   # reaches at 12 s
        _row("progressive", [.6, .78, .8, .8], 3.0, "p"),       # reaches at 6 s
    ]), 0.95)
    r = speedups(df, reps=200).iloc[0]
    assert r.cheapest_budget == 0.75 and r.cheapest_s == 12.0
    assert r.speedup_vs_cheapest == pytest.approx(2.0)
    assert r.speedup == pytest.approx(20.0 / 6.0)


def _case(version, arm_values, seeds=3):
    """One case: the baseline reaches .76 at 30 s every seed; the arm at 15 s where its
    seed's curve does."""
    rows = []
    for s in range(seeds):
        rows.append(_row("none", [.2, .5, .8, .8], 10.0, f"b{version}{s}", version=version,
                         seed=s))
        rows.append(_row("progressive", arm_values[s], 5.0, f"p{version}{s}",
                         version=version, seed=s))
    return rows


HIT, MISS = [.3, .6, .78, .8], [.3, .6, .7, .7]


def test_a_miss_lowers_the_summary_instead_of_being_dropped():
    all_hit = add_targets(pd.DataFrame(_case("1MB", [HIT] * 3) + _case("2MB", [HIT] * 3)),
                          0.95)
    one_miss = add_targets(pd.DataFrame(_case("1MB", [HIT] * 3)
                                        + _case("2MB", [HIT, MISS, MISS])), 0.95)
    stats = arm_stats(one_miss).set_index(["version", "curriculum"])
    assert stats.loc[("2MB", "progressive"), "reached"] == 1
    assert stats.loc[("2MB", "progressive"), "time_to_target_s"] == INF  # 2 of 3 missed
    assert median_time([15.0, INF, 20.0]) == 20.0                       # 1 of 3 missed
    good, bad = arm_summary(speedups(all_hit, reps=200)), arm_summary(speedups(one_miss,
                                                                               reps=200))
    assert good.geomean.iloc[0] == pytest.approx(2.0)
    assert bad.reached.iloc[0] == 1 and bad.cases.iloc[0] == 2 and np.isnan(bad.geomean.iloc[0])
    sentence = speedup_summary(bad, 0.95, "accuracy")
    assert "1 of 2 cases reached" in sentence and "Geometric-mean speed-up" in sentence
    assert "progressive resizing 2.00x" in speedup_summary(good, 0.95, "accuracy")
    # the geometric mean itself drops nothing
    assert geometric_mean([4.0, 1.0]) == pytest.approx(2.0)
    assert geometric_mean([4.0, 0.0]) == 0.0 and geometric_mean([4.0, INF]) == INF


def test_the_bootstrap_interval_covers_the_true_ratio():
    """Lognormal times with medians 20 s and 10 s: the true speed-up is 2."""
    rng = np.random.default_rng(0)
    draw = lambda median, n: median * rng.lognormal(0.0, 0.3, n)  # noqa: E731
    point, replicates = bootstrap_speedup(draw(20, 60), draw(10, 60), reps=2000, seed=1)
    lo, hi = percentile_interval(replicates)
    assert lo < 2.0 < hi and lo < point < hi
    covered = [lo < 2.0 < hi for lo, hi in
               (percentile_interval(bootstrap_speedup(draw(20, 25), draw(10, 25), reps=400,
                                                      seed=k)[1]) for k in range(100))]
    assert np.mean(covered) >= 0.85
    # one seed: a degenerate interval, no width
    assert percentile_interval(bootstrap_speedup([20.0], [10.0], reps=50)[1]) == (2.0, 2.0)


def test_the_performance_profile_counts_cases_within_tau_of_the_fastest():
    stats = pd.DataFrame([
        {"arch": "a", "dataset": "d", "version": "1MB", "curriculum": c, "time_to_target_s": t}
        for c, t in [("none", 10.0), ("progressive", 5.0), ("difficulty", INF)]] + [
        {"arch": "a", "dataset": "d", "version": "2MB", "curriculum": c, "time_to_target_s": t}
        for c, t in [("none", 10.0), ("progressive", 20.0), ("difficulty", 10.0)]])
    profile = performance_profile(stats, [1.0, 1.5, 2.0, 4.0])
    assert list(profile.columns) == ["none", "progressive", "difficulty"]  # registry order
    assert profile.loc[1.0].tolist() == [0.5, 0.5, 0.5]
    assert profile.loc[1.5].tolist() == [0.5, 0.5, 0.5]
    assert profile.loc[2.0].tolist() == [1.0, 1.0, 0.5]
    assert profile.loc[4.0, "difficulty"] == 0.5  # its miss never counts


def test_perplexity_targets_and_times_count_down():
    """Lower is better: the target is the baseline's best / 0.95, reached at or below it."""
    h = _hist([300.0, 90.0, 60.0, 55.0], 2.0)
    assert time_to_target(h, 62.0, higher_is_better=False)[:2] == (3.0, 6.0)
    assert time_to_target(h, 50.0, higher_is_better=False)[1] == INF
    ppl = dict(task="nlp", metric="perplexity", higher_is_better=False, arch="gpt1",
               dataset="bookcorpus", version="100KB", preset="micro")
    df = pd.DataFrame([
        _row("none", [300.0, 90.0, 60.0, 57.0], 10.0, "b", **ppl),
        _row("progressive", [280.0, 70.0, 59.0, 58.0], 8.0, "p", **ppl),
    ]).assign(best_val=[57.0, 58.0])
    df = add_targets(df, 0.95)
    assert df.target.iloc[0] == pytest.approx(57.0 / 0.95)  # 60.0
    table = speedups(df, reps=100).set_index("curriculum")
    assert table.loc["progressive", "baseline_s"] == 30.0   # 60.0 <= 60.0 at epoch 3
    assert table.loc["progressive", "method_s"] == 24.0     # 59.0 at epoch 3
    assert table.loc["progressive", "speedup"] == pytest.approx(1.25)
    assert "micro preset" in study_label(df) and "width" not in study_label(df)
    assert "perplexity / 0.95" in speedup_summary(arm_summary(speedups(df, reps=100)), 0.95,
                                                "perplexity")


def test_labels_name_sample_data_and_scaled_down_models():
    df = pd.DataFrame([_row("none", [.5], 1.0, "a")])
    assert "sample data" in study_label(df) and "width 16 of 64" in study_label(df)
    real = df.assign(data_source="https://example.org/x.tar", width=64)
    assert "sample" not in study_label(real) and "scaled" not in study_label(real)


def test_version_names_sort_by_size():
    assert sorted(["1MB", "100KB", "100MB", "10MB"], key=version_bytes) == \
        ["100KB", "1MB", "10MB", "100MB"]


DEFAULTS = {"task": "cv", "start_scale": 0.5, "delay_fraction": 0.2, "ramp_fraction": 0.5,
            "size_step": 4, "start_competence": 0.25, "competence_fraction": 0.5}


def _result(name, curriculum, values, spe, budget=1.0, **params):
    params = {**DEFAULTS, "arch": "resnet18", "dataset": "caltech256", "version": "1MB",
              "curriculum": curriculum, "seed": 0, "budget": budget, "width": 16,
              "preset": "micro", "epochs": len(values), **params}
    return {"status": "complete", "run_name": name, "params": params, "model": "ResNet-18",
            "primary_metric": "accuracy", "higher_is_better": True, "best_val": max(values),
            "test": {"accuracy": values[-1]}, "data_source": "sample", "input_size": 32,
            "input_unit": "px", "train_flops": len(values) * 1e9,
            "history": _hist(values, spe)}


def _study(tmp_path, runs, jobs):
    (tmp_path / "results").mkdir()
    for r in runs:
        (tmp_path / "results" / f"{r['run_name']}.json").write_text(json.dumps(r))
    plan = {"label": "test", "method_defaults": DEFAULTS, "stages": {"method": jobs}}
    (tmp_path / "plan.json").write_text(json.dumps(plan))


def test_evaluation_reads_only_the_plans_runs(tmp_path):
    """A stale result of another plan in the same folder must not move the targets."""
    _study(tmp_path, [_result("base", "none", [.2, .5, .6], 2.0),
                      _result("prog", "progressive", [.3, .55, .6], 1.0),
                      _result("stale", "none", [.5, .9, .95], 2.0)],  # e.g. more epochs
           [{"id": "base", "main": True, "varied": []},
            {"id": "prog", "main": True, "varied": []}])
    study = evaluate_study(task="cv", output_dir=str(tmp_path), target_fraction=0.9)
    assert study["runs"] == 2
    row = study["speedups"].iloc[0]
    assert row.target == pytest.approx(0.54) and row.speedup == pytest.approx(3.0)
    with pytest.raises(FileNotFoundError, match="main runs for task 'nlp'"):
        evaluate_study(task="nlp", output_dir=str(tmp_path), target_fraction=0.9)


def test_a_newly_registered_arm_appears_everywhere(tmp_path):
    """Nothing in chapter 4 lists the arms: a toy arm shows up in every table and figure,
    after the registered ones, and its miss reads "not reached"."""
    @register_arm
    class Toy(Arm):
        name, label, color = "toy", "toy arm", "#2ca02c"
    try:
        runs = [_result("base", "none", [.2, .5, .6], 2.0),
                _result("base50", "none", [.2, .5], 2.0, budget=0.5),
                _result("prog", "progressive", [.3, .55, .6], 1.0),
                _result("toy", "toy", [.1, .2, .3], 1.0),
                _result("prog-s25", "progressive", [.2, .5, .58], 1.0, start_scale=0.25)]
        _study(tmp_path, runs, [
            {"id": "base", "main": True, "varied": []},
            {"id": "base50", "main": False, "frontier": True, "varied": []},
            {"id": "prog", "main": True, "varied": ["start_scale"]},
            {"id": "prog-s25", "main": False, "varied": ["start_scale"]},
            {"id": "toy", "main": True, "varied": []}])
        study = evaluate_study(task="cv", output_dir=str(tmp_path), target_fraction=0.9)
        assert list(study["speedups"].curriculum) == ["progressive", "toy"]
        table = (tmp_path / "tables" / "speedup.md").read_text()
        assert "| toy arm | 0/1 |" in table and "not reached" in table
        assert "toy arm: 0 of 1 cases reached" in table
        assert "Geometric-mean speed-up" in table and "sample data" in table
        assert (tmp_path / "tables" / "speedup_detail.md").exists()
        for name in ("schedule", "tuning", "convergence", "epochs_to_target",
                     "final_performance", "time_to_target", "speedup", "frontier",
                     "frontier_case", "performance_profile"):
            assert study["figures"][name].stat().st_size > 10_000, name
        assert "replicates" not in pd.read_csv(tmp_path / "results" / "speedups.csv")
    finally:
        ARMS.pop("toy", None)
