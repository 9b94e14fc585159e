"""Chapter 4: targets, time-to-target, speed-ups with intervals, and labels, from synthetic
result rows (and one small synthetic study on disk)."""
import json

import numpy as np
import pandas as pd
import pytest

from dataclasses import dataclass

from speedup.arms import ARMS, Arm, register_arm
from speedup.evaluation import (
    add_targets, arm_stats, arm_summary, bootstrap_speedup, evaluate_study, geometric_mean,
    median_time, percentile_interval, performance_profile, speedup_summary, speedups,
    study_label, time_to_target, version_bytes,
)

INF = float("inf")


def _hist(values, seconds_per_epoch, flops_per_epoch=1e9):
    return [{"step": i + 1, "epoch": float(i + 1), "val_primary": v,
             "train_time_s": (i + 1) * seconds_per_epoch,
             "train_flops": (i + 1) * flops_per_epoch} for i, v in enumerate(values)]


def _row(arm, values, spe, name, *, version="1MB", seed=0, budget=1.0, main=None,
         **kw):
    main = budget == 1.0 if main is None else main
    return {"arch": "resnet18", "dataset": "caltech256", "version": version, "seed": seed,
            "arm": arm, "budget": budget, "main": main,
            "frontier": not main and arm == "baseline" and budget < 1.0,
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
        _row("baseline", [.2, .5, .8, .8], 10.0, "b"),
        _row("baseline", [.5, .9, .9], 10.0, "b-half", budget=0.5),           # a frontier run
        _row("baseline", [.5, .95, .95], 10.0, "b-tuned", main=False),         # a tuning run
        _row("progressive", [.3, .6, .78, .8], 5.0, "p"),  # reaches .76 at epoch 3 = 15 s
        _row("difficulty", [.1, .2, .3, .4], 10.0, "d"),    # never reaches it
    ]), 0.95)
    assert df.target.tolist() == pytest.approx([0.76] * 5)
    table = speedups(df, reps=200).set_index("arm")
    assert table.loc["progressive", "baseline_s"] == 30.0
    assert table.loc["progressive", "method_s"] == 15.0
    assert table.loc["progressive", "speedup"] == pytest.approx(2.0)
    assert table.loc["progressive", "flops_speedup"] == pytest.approx(1.0)  # same FLOPs/epoch
    assert table.loc["difficulty", "method_s"] == INF
    assert table.loc["difficulty", "speedup"] == 0.0   # shown as "not reached"


def test_the_cheapest_baseline_budget_that_reaches_the_target_is_picked():
    df = add_targets(pd.DataFrame([
        _row("baseline", [.5, .8, .8, .8], 10.0, "b"),              # target .76, reached at 20 s
        _row("baseline", [.5, .7], 10.0, "b50", budget=0.5),        # misses
        _row("baseline", [.5, .6, .77], 4.0, "b75", budget=0.75),   # reaches at 12 s
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
        rows.append(_row("baseline", [.2, .5, .8, .8], 10.0, f"b{version}{s}", version=version,
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
    stats = arm_stats(one_miss).set_index(["version", "arm"])
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
        {"arch": "a", "dataset": "d", "version": "1MB", "arm": c, "time_to_target_s": t}
        for c, t in [("baseline", 10.0), ("progressive", 5.0), ("difficulty", INF)]] + [
        {"arch": "a", "dataset": "d", "version": "2MB", "arm": c, "time_to_target_s": t}
        for c, t in [("baseline", 10.0), ("progressive", 20.0), ("difficulty", 10.0)]])
    profile = performance_profile(stats, [1.0, 1.5, 2.0, 4.0])
    assert list(profile.columns) == ["baseline", "progressive", "difficulty"]  # registry order
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
        _row("baseline", [300.0, 90.0, 60.0, 57.0], 10.0, "b", **ppl),
        _row("progressive", [280.0, 70.0, 59.0, 58.0], 8.0, "p", **ppl),
    ]).assign(best_val=[57.0, 58.0])
    df = add_targets(df, 0.95)
    assert df.target.iloc[0] == pytest.approx(57.0 / 0.95)  # 60.0
    table = speedups(df, reps=100).set_index("arm")
    assert table.loc["progressive", "baseline_s"] == 30.0   # 60.0 <= 60.0 at epoch 3
    assert table.loc["progressive", "method_s"] == 24.0     # 59.0 at epoch 3
    assert table.loc["progressive", "speedup"] == pytest.approx(1.25)
    assert "micro preset" in study_label(df) and "width" not in study_label(df)
    assert "perplexity / 0.95" in speedup_summary(arm_summary(speedups(df, reps=100)), 0.95,
                                                "perplexity")


def test_labels_name_sample_data_and_scaled_down_models():
    df = pd.DataFrame([_row("baseline", [.5], 1.0, "a")])
    assert "sample data" in study_label(df) and "width 16 of 64" in study_label(df)
    real = df.assign(data_source="https://example.org/x.tar", width=64)
    assert "sample" not in study_label(real) and "scaled" not in study_label(real)


def test_version_names_sort_by_size():
    assert sorted(["1MB", "100KB", "100MB", "10MB"], key=version_bytes) == \
        ["100KB", "1MB", "10MB", "100MB"]


DEFAULTS = {"task": "cv", "start_scale": 0.5, "delay_fraction": 0.2, "ramp_fraction": 0.5,
            "size_step": 4, "start_competence": 0.25, "competence_fraction": 0.5}


def _own(arm, settings):
    """The knobs of ``arm`` among ``settings`` (a result records only its arm's own)."""
    known = ARMS[arm]["cv"].defaults() if arm in ARMS else {}
    return {k: v for k, v in settings.items() if k in known or k == "task"}


def _result(name, arm, values, spe, budget=1.0, **params):
    params = {**_own(arm, DEFAULTS), "arch": "resnet18", "dataset": "caltech256",
              "version": "1MB", "arm": arm, "seed": 0, "budget": budget, "width": 16,
              "epochs": len(values), **params}
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
    _study(tmp_path, [_result("base", "baseline", [.2, .5, .6], 2.0),
                      _result("prog", "progressive", [.3, .55, .6], 1.0),
                      _result("stale", "baseline", [.5, .9, .95], 2.0)],  # e.g. more epochs
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
    @dataclass(frozen=True)
    class Toy(Arm):
        name, label, color, tasks = "toy", "toy arm", "#2ca02c", ("cv",)
    try:
        runs = [_result("base", "baseline", [.2, .5, .6], 2.0),
                _result("base50", "baseline", [.2, .5], 2.0, budget=0.5),
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
        assert list(study["speedups"].arm) == ["progressive", "toy"]
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


# --------------------------------------------------------------- the difficulty check

from scipy.stats import spearmanr  # noqa: E402

from speedup.train import EXAMPLES_SUFFIX, save_examples
from speedup.evaluation import difficulty_check, difficulty_markdown


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
    _study(tmp_path, runs, [{"id": r["run_name"], "main": True, "varied": []} for r in runs])
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


def test_the_evidence_headline_counts_each_verdict_and_the_deck_quotes_it(tmp_path):
    """EVIDENCE.md's claim markers hold a headline short enough for the conclusion slide:
    the flagship's cases counted by verdict and its clearest case; every arm's claim in
    full follows as a list, and publishing keeps the other pair's section."""
    from render_slides import evidence_claim
    from speedup.evaluation import evidence_markdown, headline_sentence, publish_evidence
    cases = [("resnet18", "caltech256", 1.5, 1.2, 1.9, 5), ("vgg11_bn", "caltech256", 1.1, 0.8,
             1.6, 5), ("resnet18", "voc2012", 0.5, 0.4, 0.7, 5), ("vgg11_bn", "voc2012", 0, 0, 0,
             1)]
    ev = pd.DataFrame([{"arch": a, "dataset": d, "version": "100KB", "metric": "accuracy",
                        "arm": arm, "seeds": 5, "reached": reached,
                        "baseline_seeds": 5, "baseline_reached": 5, "baseline_s": 10.0,
                        "method_s": 10 / s if s else INF, "speedup": s, "speedup_lo": lo,
                        "speedup_hi": hi, "flops_speedup": s, "flops_lo": lo,
                        "flops_hi": hi, "gap": 0.0, "gap_lo": -0.01, "gap_hi": 0.01}
                       for arm in ("progressive", "difficulty")
                       for a, d, s, lo, hi, reached in cases])
    head = headline_sentence(ev, "progressive", True, "cv")
    assert head.startswith("Progressive resizing (sample data, scaled-down models, 5+ seeds)")
    for part in ("faster in 1", "not distinguishable from 1x in 1", "slower in 1",
                 "missed the target in 1 of 4 cases",
                 "best: ResNet-18, Caltech-256 100 KB, 1.50x [1.20, 1.90]"):
        assert part in head
    assert len(head.split()) < 45  # a slide's sentence; the full claims run to 80+ words
    (tmp_path / "out" / "tables").mkdir(parents=True)
    (tmp_path / "out" / "tables" / "evidence.md").write_text(
        evidence_markdown(ev, "Sample data", "cv", 0.95, True))
    evidence = tmp_path / "EVIDENCE.md"
    evidence.write_text("## Text pair (nlp)\n\n<!-- claim:nlp -->kept<!-- /claim -->\n")
    text = publish_evidence(str(tmp_path / "out"), str(evidence))
    assert evidence_claim("cv", evidence) == head
    assert evidence_claim("nlp", evidence) == "kept"
    assert text.count("- On the embedded sample data") == 2  # both arms' full claims
    assert "difficulty curriculum" in text and "missed the target in 4 of 5 seeds for VGG" in text
