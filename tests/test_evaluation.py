"""Chapter 4: time-to-target, speed-ups and labels from synthetic result rows."""
import numpy as np
import pandas as pd
import pytest

from speedup.evaluation import (add_targets, geometric_mean, speedups, study_label,
                                time_to_target, version_bytes)


def _hist(values, seconds_per_epoch):
    return [{"epoch": i + 1, "val_primary": v, "train_time_s": (i + 1) * seconds_per_epoch}
            for i, v in enumerate(values)]


def _row(curriculum, values, spe, name, **kw):
    return {"arch": "resnet18", "dataset": "caltech256", "version": "1MB", "seed": 0,
            "curriculum": curriculum, "history": _hist(values, spe), "run_name": name,
            "best_val": max(values), "test": values[-1], "train_time_s": len(values) * spe,
            "width": 16, "data_source": "sample", "task": "cv", "metric": "accuracy",
            "higher_is_better": True, **kw}


def test_time_to_target_is_the_first_epoch_at_or_above_target():
    h = _hist([.2, .5, .45, .7], 3.0)
    assert time_to_target(h, .5) == (2, 6.0)
    assert time_to_target(h, .71) == (None, None)


def test_speedup_uses_the_baselines_best_score_as_target():
    df = pd.DataFrame([
        _row("none", [.2, .5, .8, .8], 10.0, "b"),
        _row("progressive", [.3, .6, .78, .8], 5.0, "p"),   # target .76 at epoch 3 = 15 s
        _row("difficulty", [.1, .2, .3, .4], 10.0, "d"),    # never reaches it
    ])
    df = add_targets(df, 0.95)
    assert df.target.iloc[0] == pytest.approx(0.76)
    table = speedups(df, {"b", "p", "d"}).set_index("curriculum")
    assert table.loc["progressive", "baseline_s"] == 30.0
    assert table.loc["progressive", "method_s"] == 15.0
    assert table.loc["progressive", "speedup"] == pytest.approx(2.0)
    assert np.isnan(table.loc["difficulty", "speedup"])


def test_perplexity_targets_and_times_count_down():
    """Lower is better: the target is the baseline's best / 0.95, reached at or below it."""
    h = _hist([300.0, 90.0, 60.0, 55.0], 2.0)
    assert time_to_target(h, 62.0, higher_is_better=False) == (3, 6.0)
    assert time_to_target(h, 50.0, higher_is_better=False) == (None, None)
    ppl = dict(task="nlp", metric="perplexity", higher_is_better=False, arch="gpt1",
               dataset="bookcorpus", version="100KB", preset="micro")
    df = pd.DataFrame([
        _row("none", [300.0, 90.0, 60.0, 57.0], 10.0, "b", **ppl),
        _row("progressive", [280.0, 70.0, 59.0, 58.0], 8.0, "p", **ppl),
    ]).assign(best_val=[57.0, 58.0])
    df = add_targets(df, 0.95)
    assert df.target.iloc[0] == pytest.approx(57.0 / 0.95)  # 60.0
    table = speedups(df, {"b", "p"}).set_index("curriculum")
    assert table.loc["progressive", "baseline_s"] == 30.0   # 60.0 <= 60.0 at epoch 3
    assert table.loc["progressive", "method_s"] == 24.0     # 59.0 at epoch 3
    assert table.loc["progressive", "speedup"] == pytest.approx(1.25)
    assert "micro preset" in study_label(df) and "width" not in study_label(df)


def test_geometric_mean_skips_unreached_cases():
    assert geometric_mean([4.0, 1.0, float("nan")]) == pytest.approx(2.0)
    assert np.isnan(geometric_mean([float("nan")]))


def test_labels_name_sample_data_and_scaled_down_models():
    df = pd.DataFrame([_row("none", [.5], 1.0, "a")])
    assert "sample data" in study_label(df) and "width 16 of 64" in study_label(df)
    real = df.assign(data_source="https://example.org/x.tar", width=64)
    assert "sample" not in study_label(real) and "scaled" not in study_label(real)


def test_version_names_sort_by_size():
    assert sorted(["1MB", "100KB", "100MB", "10MB"], key=version_bytes) == \
        ["100KB", "1MB", "10MB", "100MB"]


def _result(name, curriculum, values, spe):
    params = {"task": "cv", "arch": "resnet18", "dataset": "caltech256", "version": "1MB",
              "curriculum": curriculum, "seed": 0, "width": 16, "preset": "micro"}
    return {"status": "complete", "run_name": name, "params": params, "model": "ResNet-18",
            "primary_metric": "accuracy", "higher_is_better": True, "best_val": max(values),
            "test": {"accuracy": values[-1]}, "data_source": "sample", "input_size": 32,
            "input_unit": "px", "history": _hist(values, spe)}


def test_evaluation_reads_only_the_plans_runs(tmp_path):
    """A stale result of another plan in the same folder must not move the targets."""
    import json
    from speedup.evaluation import evaluate_study
    (tmp_path / "results").mkdir()
    runs = {"base": _result("base", "none", [.2, .5, .6], 2.0),
            "prog": _result("prog", "progressive", [.3, .55, .6], 1.0),
            "stale": _result("stale", "none", [.5, .9, .95], 2.0)}  # e.g. more epochs
    for name, r in runs.items():
        (tmp_path / "results" / f"{name}.json").write_text(json.dumps(r))
    plan = {"label": "test", "method_defaults": {},
            "stages": {"method": [{"id": "base", "main": True, "varied": []},
                                  {"id": "prog", "main": True, "varied": []}]}}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    study = evaluate_study(task="cv", output_dir=str(tmp_path), target_fraction=0.9)
    assert study["runs"] == 2
    row = study["speedups"].iloc[0]
    assert row.target == pytest.approx(0.54) and row.speedup == pytest.approx(3.0)
    with pytest.raises(FileNotFoundError, match="main runs for task 'nlp'"):
        evaluate_study(task="nlp", output_dir=str(tmp_path), target_fraction=0.9)
