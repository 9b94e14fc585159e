"""The batch runner: profile validation, plan expansion, and a real papermill run."""
import json
from pathlib import Path

import pytest
import yaml

import run_batch

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path, profile: dict) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def _demo() -> dict:
    return yaml.safe_load((ROOT / "params" / "cv-demo.yaml").read_text())


@pytest.mark.parametrize("edit,message", [
    (lambda p: p["method"]["params"].update(lr_typo=0.1), "unknown parameter 'lr_typo'"),
    (lambda p: p["method"]["params"].update(epochs="eight"), "'epochs' must be int"),
    (lambda p: p["data_prep"]["params"].update(sizes=[1, 2]), "'sizes' must be dict"),
    (lambda p: p["method"].update(archz=["vgg11"]), "unknown key(s) ['archz']"),
    (lambda p: p.update(stagez={}), "unknown key(s) ['stagez']"),
    (lambda p: p.pop("evaluation"), "missing section 'evaluation'"),
])
def test_bad_profiles_fail_before_anything_runs_naming_the_key(tmp_path, edit, message):
    profile = _demo()
    edit(profile)
    path = _write(tmp_path, profile)
    with pytest.raises(run_batch.ProfileError) as err:
        run_batch.expand_plan(run_batch.load_profile(path), str(tmp_path / "out"), "c")
    assert message in str(err.value) and str(path) in str(err.value)
    assert not (tmp_path / "out").exists()


def test_missing_profile_lists_the_known_ones(tmp_path):
    with pytest.raises(run_batch.ProfileError, match="cv-demo.yaml"):
        run_batch.load_profile(tmp_path / "nope.yaml")


@pytest.mark.parametrize("task,grid_params,datasets", [
    ("cv", {"start_scale", "ramp_fraction"}, ["caltech256", "voc2012"]),
    ("nlp", {"start_length", "ramp_fraction"}, ["yahoo_answers", "bookcorpus"]),
])
def test_demo_plan_covers_every_combination_and_the_grid(task, grid_params, datasets):
    plan = run_batch.expand_plan(run_batch.load_profile(ROOT / "params" / f"{task}-demo.yaml"),
                                 "_output", "_cache")
    assert plan["task"] == task
    method = plan["stages"]["method"]
    main = [j for j in method if j["main"]]
    assert len(main) == 2 * 2 * 3 * 3  # archs x datasets x sizes x curricula
    assert all(j["params"]["task"] == task for j in method)
    assert len({j["id"] for j in method}) == len(method)
    grid = [j for j in method if j["varied"]]
    assert {v for j in grid for v in j["varied"]} == grid_params
    # the grid point at the defaults is the main run itself, trained once for both lines
    assert len(grid) == 2 * (3 + 3 - 1)
    assert sum(len(j["varied"]) for j in grid) == 2 * (3 + 3)
    assert len(method) == len(main) + len(grid) - 2
    assert all(j["params"]["run_name"] == j["id"] for j in method)
    assert plan["stages"]["architectures"][0]["params"]["datasets"] == datasets


TINY = {
    "task": "cv", "profile": "tiny", "label": "test profile: sample data, tiny models",
    "workers": 2,
    "data_prep": {"datasets": ["caltech256", "voc2012"],
                  "params": {"source": "sample", "sizes": {"60KB": 60000, "120KB": 120000},
                             "short_sides": {"60KB": 24, "120KB": 24}}},
    "architectures": {"params": {"archs": ["resnet18"], "width": 8, "input_sizes": [12, 24]}},
    "method": {"archs": ["resnet18"], "curricula": ["none", "progressive"], "seeds": [0],
               "params": {"width": 8, "epochs": 2, "batch_size": 32},
               "tuning": {"dataset": "caltech256", "version": "no-such-version",
                          "curriculum": "progressive", "grid": {"start_scale": [0.75]}}},
    "evaluation": {"params": {"target_fraction": 0.9}},
}


def test_batch_runs_every_chapter_records_failures_and_resumes(tmp_path, capsys):
    path = _write(tmp_path, TINY)
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [str(path), "--output-dir", str(out), "--cache-dir", str(cache)]
    # The grid's version does not exist: that job fails, the rest of the batch goes on.
    assert run_batch.main(args) == 1
    plan = json.loads((out / "plan.json").read_text())
    status = {p.stem: json.loads(p.read_text()) for p in (out / "batch").glob("*.json")}
    failed = {k for k, s in status.items() if s["status"] == "failed"}
    assert failed == {"tuning-resnet18-caltech256-no-such-version-s0"}
    assert "no-such-version" in status[failed.pop()]["error"]
    main_ids = [j["id"] for j in plan["stages"]["method"] if j["main"]]
    assert len(main_ids) == 2 * 2 * 2
    for run in main_ids:
        result = json.loads((out / "results" / f"{run}.json").read_text())
        assert result["status"] == "complete" and len(result["history"]) == 2
    # one executed notebook per model x dataset x size case, holding its runs side by side
    cases = sorted((out / "notebooks" / "method").glob("resnet18-*.ipynb"))
    assert len(cases) == 2 * 2
    runs = [v["run_name"] for nb in cases for v in
            json.loads(nb.read_text())["metadata"]["papermill"]["parameters"]["variants"]]
    assert sorted(runs) == sorted(main_ids)
    for name in ["final_performance.png", "time_to_target.png", "schedule.png"]:
        assert (out / "figures" / name).stat().st_size > 10_000
    assert "sample data" in (out / "tables" / "speedup.md").read_text()
    assert (out / "tables" / "architectures.md").exists()
    before = {p: p.stat().st_mtime for p in (out / "results").glob("*-s0-*.json")}
    capsys.readouterr()

    # Re-running skips everything that completed; only the failed job and evaluation rerun.
    assert run_batch.main(args) == 1
    printed = capsys.readouterr().out
    assert "2 jobs run, 1 failed" in printed
    assert before == {p: p.stat().st_mtime for p in (out / "results").glob("*-s0-*.json")}


TINY_NLP = {
    "task": "nlp", "profile": "tiny", "label": "test profile: sample text, micro models",
    "workers": 2,
    "data_prep": {"datasets": ["yahoo_answers", "bookcorpus"],
                  "params": {"source": "sample", "sizes": {"40KB": 40000}}},
    "architectures": {"params": {"archs": ["bert", "gpt1"], "preset": "micro",
                                 "vocab_size": 300, "input_sizes": [16, 32]}},
    "method": {"archs": ["bert", "gpt1"], "curricula": ["none", "progressive", "difficulty"],
               "seeds": [0],
               "params": {"preset": "micro", "seq_length": 32, "start_length": 8,
                          "vocab_size": 300, "optimizer": "adamw", "epochs": 2,
                          "batch_size": 16, "lr": 0.003, "weight_decay": 0.01},
               "tuning": {"dataset": "bookcorpus", "version": "40KB",
                          "curriculum": "progressive", "grid": {"start_length": [16]}}},
    "evaluation": {"params": {"target_fraction": 0.95}},
}


def test_the_text_chapters_run_as_a_batch(tmp_path):
    """A papermill run of every chapter for the text pair: data, models, training, figures."""
    path = _write(tmp_path, TINY_NLP)
    out = tmp_path / "out"
    assert run_batch.main([str(path), "--output-dir", str(out),
                           "--cache-dir", str(tmp_path / "cache")]) == 0
    plan = json.loads((out / "plan.json").read_text())
    main_ids = [j["id"] for j in plan["stages"]["method"] if j["main"]]
    assert len(main_ids) == 2 * 2 * 3  # archs x datasets x curricula
    for run in main_ids:
        result = json.loads((out / "results" / f"{run}.json").read_text())
        lm = result["params"]["dataset"] == "bookcorpus"
        assert result["primary_metric"] == ("perplexity" if lm else "accuracy")
        assert result["history"][-1]["throughput"] > 0
    table = (out / "tables" / "architectures.md").read_text()
    assert "GFLOPs @ 32 tokens" in table and "micro" in table
    assert "sequence-length warmup" in (out / "tables" / "speedup.md").read_text()
    for name in ["samples_yahoo_answers.png", "samples_bookcorpus.png", "schedule.png",
                 "tuning.png", "final_performance.png", "time_to_target.png"]:
        assert (out / "figures" / name).stat().st_size > 10_000
    assert (out / "tables" / "data_bookcorpus.md").exists()
