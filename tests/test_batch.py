"""The batch runner: profile validation, plan expansion, and a real papermill run."""
import json
from pathlib import Path

import pytest
import yaml

import run_batch
from speedup.study import (ProfileError, apply_picks, estimate_study, in_this_kernel,
                           is_complete, run_plan, study_status)

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path, profile: dict) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def _demo() -> dict:
    return yaml.safe_load((ROOT / "params" / "cv-demo.yaml").read_text())


@pytest.mark.parametrize("edit,message", [
    (lambda p: p["method"]["params"].update(lr_typo=0.1), "unknown key(s) ['lr_typo']"),
    (lambda p: p["method"]["params"].update(lr="fast"), "'lr' = 'fast': must be float"),
    # a bad value fails even where a more specific layer overrides it for every run
    (lambda p: p["method"]["params"].update(epochs="six"),
     "method.params.epochs: setting 'epochs' = 'six': must be int"),
    (lambda p: p["method"]["per_version"]["300KB"].update(start_scale=2),
     "method.per_version.300KB.start_scale: setting 'start_scale' = 2"),
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


def test_the_study_profiles_draw_the_frontier_at_four_budgets_or_more():
    """The evidence and full profiles give the baseline's frontier four points (with 100%)."""
    for name in ["cv-evidence", "nlp-evidence", "cv-full", "nlp-full"]:
        budgets = run_batch.load_profile(ROOT / "params" / f"{name}.yaml")["method"]["budgets"]
        assert len({*budgets, 1.0}) >= 4, name


@pytest.mark.parametrize("task,small,datasets", [
    ("cv", "100KB", ["caltech256", "voc2012"]),
    ("nlp", "60KB", ["yahoo_answers", "bookcorpus"]),
])
def test_demo_plan_covers_every_combination_budget_and_grid(task, small, datasets):
    """Phase B: every arm on every case (two seeds on the smallest version, one on the
    others), the baseline at each reduced budget beside each main seed, and one
    target-setting baseline per case; phase A: each arm's grid, on seeds of its own."""
    profile = run_batch.load_profile(ROOT / "params" / f"{task}-demo.yaml")
    m = profile["method"]
    plan = run_batch.expand_plan(profile, "_output", "_cache")
    assert plan["task"] == task
    method = plan["stages"]["method"]
    main = [j for j in method if j["main"]]
    # archs x datasets x (the smallest version's 2 seeds + 1 on each of the two others)
    case_seeds = 2 * 2 * (2 + 1 + 1)
    assert len(main) == len(m["arms"]) * case_seeds
    assert all(j["params"]["task"] == task for j in method)
    assert len({j["id"] for j in method}) == len(method)
    frontier = [j for j in method if j["frontier"]]
    assert len(frontier) == len(m["budgets"]) * case_seeds >= case_seeds
    assert {(j["params"]["arm"], j["params"]["budget"]) for j in frontier} == {
        ("baseline", b) for b in m["budgets"]}
    target = [j for j in method if j["target"]]
    assert len(target) == 2 * 2 * 3 and {j["params"]["seed"] for j in target} == {100}
    assert len(method) == len(main) + len(frontier) + len(target)
    # every version is scored on the largest version's validation split
    largest = max(plan["stages"]["data_prep"][0]["params"]["sizes"].items(),
                  key=lambda kv: kv[1])[0]
    assert {j["params"]["eval_version"] for j in method} == {largest}
    # every arm is tuned with the same number of trials, the default point included, on
    # seeds no comparison uses
    trials = {arm: len(next(iter(g.values()))) for arm, g in m["tuning"]["grids"].items()}
    assert plan["tuning_trials"] == trials and len(set(trials.values())) == 1
    assert set(trials) == set(m["arms"]) - {"aa"}
    grid = plan["stages"]["tuning"]
    # archs x datasets (both tuned) x each arm's trials
    assert len(grid) == 2 * 2 * sum(trials.values()) and all(j["varied"] for j in grid)
    assert {j["params"]["seed"] for j in grid} == {500}
    assert not {j["id"] for j in grid} & {j["id"] for j in method}
    assert all(j["params"]["run_name"] == j["id"] for j in method + grid)
    assert plan["stages"]["architectures"][0]["params"]["datasets"] == datasets
    # the arms' order in a case is rotated by seed: no arm always trains first
    first = {j["params"]["seed"]: j["params"]["arm"] for j in reversed(main)
             if j["params"]["version"] == small and j["params"]["arch"] == main[0]["params"]["arch"]
             and j["params"]["dataset"] == datasets[0]}
    assert len(first) == 2 and len(set(first.values())) == 2


def test_main_runs_take_the_picks_and_the_aa_arm_the_baselines(tmp_path):
    """After the selection, phase B's runs train each arm's picks (the A/A arm the
    baseline's), under new ids; applying the picks twice changes nothing."""
    profile = yaml.safe_load((ROOT / "params" / "cv-demo.yaml").read_text())
    profile["method"]["arms"].append("aa")
    plan = run_batch.expand_plan(run_batch.load_profile(_write(tmp_path, profile)), "o", "c")
    picks = {"vgg11_bn": {d: {"baseline": {"lr": 0.1}, "progressive": {"start_scale": 0.25}}
                          for d in ["caltech256", "voc2012"]},
             "resnet18": {"caltech256": {"baseline": {"lr": 0.025},
                                         "difficulty": {"start_competence": .1}},
                          "voc2012": {"baseline": {"lr": 0.3}}}}
    before = {j["id"] for j in plan["stages"]["method"]}
    apply_picks(plan, picks)
    after = plan["stages"]["method"]
    for j in after:
        p = j["params"]
        chosen = picks[p["arch"]][p["dataset"]].get(
            "baseline" if p["arm"] == "aa" else p["arm"], {})
        assert all(p[k] == v for k, v in chosen.items()), (j["id"], chosen)
        assert j["picked"] == chosen
    assert any(j["params"]["arm"] == "aa" and j["params"]["lr"] == 0.1 for j in after)
    assert len(after) == len(before) and {j["id"] for j in after} != before
    again = [dict(j) for j in after]
    apply_picks(plan, picks)
    assert [j["id"] for j in plan["stages"]["method"]] == [j["id"] for j in again]


def test_the_evaluation_alone_reads_the_picked_runs(tmp_path):
    """`--stages evaluation` on a tuned study: the plan it writes holds phase B's runs as
    the selection picked them (it held the profile's settings, so the evaluation found
    none of the picked runs' results)."""
    plan = run_batch.expand_plan(run_batch.load_profile(ROOT / "params" / "cv-demo.yaml"),
                                 str(tmp_path), "c")
    picks = {"resnet18": {"caltech256": {"baseline": {"lr": 0.025}}}}
    (tmp_path / "tuning").mkdir()
    (tmp_path / "tuning" / "picks.json").write_text(json.dumps({"picks": picks, "grid": []}))
    start = in_this_kernel({"evaluation": lambda **params: None}, tmp_path)
    run_plan(plan, tmp_path, start, stages=["evaluation"])   # skipped here: no results
    written = json.loads((tmp_path / "plan.json").read_text())
    tuned = [j for j in written["stages"]["method"] if j["params"]["arch"] == "resnet18"
             and j["params"]["dataset"] == "caltech256" and j["params"]["arm"] == "baseline"]
    assert tuned and all(j["params"]["lr"] == 0.025 for j in tuned)
    assert written["picks"] == picks


@pytest.mark.parametrize("edit,message", [
    (lambda m: m["tuning"]["grids"]["baseline"].update(lr=[0.1]), "unequal tuning effort"),
    (lambda m: m["tuning"]["grids"]["progressive"].update(start_scale=[0.3]),
     "unequal tuning effort"),
    (lambda m: m["tuning"]["grids"].update(baseline={}), "no grid for arm 'baseline'"),
    (lambda m: m["tuning"]["grids"]["baseline"].update(start_scale=[0.3]),
     "'start_scale' is not a setting arm 'baseline' reads"),
    (lambda m: m["tuning"]["grids"]["progressive"].update(start_scale=[0.3, 2.0, 0.5]),
     "grids.progressive.start_scale: setting 'start_scale' = 2.0"),
    (lambda m: m.update(budgets=[0.5, 2]), "method.budgets: 2 is not a fraction"),
    (lambda m: m.update(arms=["baseline", "shuffled"]), "'arm' = 'shuffled'"),
    (lambda m: m["tuning"].update(seeds=0), "method.tuning.seeds: 0 is not a non-empty list"),
])
def test_unfair_or_unknown_designs_fail_naming_the_key(tmp_path, edit, message):
    profile = yaml.safe_load((ROOT / "params" / "cv-demo.yaml").read_text())
    edit(profile["method"])
    with pytest.raises(ProfileError, match=message):
        run_batch.expand_plan(run_batch.load_profile(_write(tmp_path, profile)), "o", "c")


TINY = {
    "task": "cv", "profile": "tiny", "label": "test profile: sample data, tiny models",
    "workers": 2,
    "data_prep": {"datasets": ["caltech256", "voc2012"],
                  "params": {"source": "sample", "sizes": {"60KB": 60000, "120KB": 120000},
                             "short_sides": {"60KB": 24, "120KB": 24}},
                  # VOC's source is missing: its data job fails, its runs must not start
                  "per_dataset": {"voc2012": {"source": "/no/such/VOCtrainval.tar"}}},
    "architectures": {"params": {"archs": ["resnet18"], "width": 8, "input_sizes": [12, 24]}},
    "method": {"archs": ["resnet18"], "arms": ["baseline", "progressive"], "seeds": [0],
               "budgets": [0.5],
               "params": {"width": 8, "epochs": 2, "batch_size": 32, "eval_points": 2},
               "tuning": {"datasets": ["caltech256"], "version": "no-such-version",
                          "grids": {"baseline": {"lr": [0.1]},
                                    "progressive": {"start_scale": [0.75]}}}},
    "evaluation": {"params": {"target_fraction": 0.9}},
}


def test_batch_runs_every_chapter_skips_what_failed_inputs_block_and_resumes(tmp_path,
                                                                           capsys):
    path = _write(tmp_path, TINY)
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [str(path), "--output-dir", str(out), "--cache-dir", str(cache)]
    # VOC's data job fails: the jobs that read its versions (the architecture table, VOC's
    # runs) are skipped, not started; the grid's version does not exist: that run fails.
    # Caltech's runs and the evaluation go on, and the batch ends red with a summary.
    assert run_batch.main(args) == 1
    printed = capsys.readouterr()
    plan = json.loads((out / "plan.json").read_text())
    status = {p.stem: json.loads(p.read_text()) for p in (out / "batch").glob("*.json")}
    by = {k: {j for j, s in status.items() if s["status"] == k}
          for k in ("complete", "failed", "skipped")}
    assert by["failed"] == {"data-voc2012", "tuning-resnet18-caltech256-no-such-version"}
    assert by["skipped"] == {"architectures", "resnet18-voc2012-60KB",
                             "resnet18-voc2012-120KB"}
    assert all(status[j]["reason"] == "upstream job data-voc2012 failed"
               for j in by["skipped"])
    assert "no-such-version" in status["tuning-resnet18-caltech256-no-such-version"]["error"]
    # without a tuning result the selection names the arms phase B trains untuned
    picks = json.loads((out / "tuning" / "picks.json").read_text())
    assert picks["picks"] == {} and picks["untuned"] == ["resnet18/caltech256/baseline",
                                                         "resnet18/caltech256/progressive"]
    assert "/no/such/VOCtrainval.tar" in status["data-voc2012"]["error"]
    assert not (out / "notebooks" / "method" / "resnet18-voc2012-60KB.ipynb").exists()
    assert "2 failed, 3 skipped" in printed.out
    assert "skipped architectures: upstream job data-voc2012 failed" in printed.err
    caltech = [j["id"] for j in plan["stages"]["method"]
               if (j["main"] or j["frontier"]) and j["params"]["dataset"] == "caltech256"]
    assert len(caltech) == 2 * (2 + 1)  # sizes x (arms + the half-budget baseline)
    for run in caltech:
        result = json.loads((out / "results" / f"{run}.json").read_text())
        assert result["status"] == "complete"
        assert len(result["history"]) >= (1 if result["params"]["budget"] < 1 else 2)
        assert result["environment"]["precision"] == "fp32"  # auto on a CPU
        assert not (out / "checkpoints" / f"{run}.pt").exists()  # done: no checkpoint left
    # one executed notebook per model x dataset x size case, holding its runs side by side
    cases = sorted((out / "notebooks" / "method").glob("resnet18-*.ipynb"))
    assert len(cases) == 2
    runs = [v["run_name"] for nb in cases for v in
            json.loads(nb.read_text())["metadata"]["papermill"]["parameters"]["runs"]]
    assert sorted(runs) == sorted(caltech)
    for name in ["final_performance.png", "speedup.png", "reached.png", "schedule.png"]:
        assert (out / "figures" / name).stat().st_size > 10_000
    assert "sample data" in (out / "tables" / "speedup.md").read_text()
    before = {p: p.stat().st_mtime for p in (out / "results").glob("*-*.json")}

    # The status and time estimate: speeds measured here, on the CPU.
    table = estimate_study(plan, out)
    assert len(table) == len(plan["stages"]["tuning"]) + len(plan["stages"]["method"])
    assert (table.hours.dropna() > 0).all() and table.hours.isna().sum() == 2  # bad grid runs
    progressive = table[table.arm == "progressive"].train_pflops.sum()
    assert progressive < table[table.arm == "baseline"].train_pflops.sum()
    assert study_status(plan, out).startswith(f"6 of {len(table)} training runs done")

    # Re-running skips everything that completed; the failed jobs, the ones they block,
    # the selection and the evaluation are tried again (REDONE).
    assert run_batch.main(args) == 1
    assert "4 jobs run, 2 failed, 3 skipped" in capsys.readouterr().out
    assert before == {p: p.stat().st_mtime for p in (out / "results").glob("*-*.json")}


def test_a_gpu_profile_stops_at_once_without_cuda(tmp_path, capsys):
    for name in ("cv-full", "nlp-full", "cv-colab", "nlp-colab"):
        plan = run_batch.expand_plan(run_batch.load_profile(ROOT / "params" / f"{name}.yaml"),
                                     "_output", "_cache")
        assert plan["requires_gpu"], name
    out = tmp_path / "out"
    assert run_batch.main([str(ROOT / "params" / "cv-full.yaml"), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "--allow-cpu" in err and "'full'" in err
    assert not out.exists()  # nothing started, nothing written


def test_seeds_replace_the_profiles(tmp_path):
    profile = run_batch.load_profile(ROOT / "params" / "cv-demo.yaml")
    plan = run_batch.expand_plan(profile, "_output", "_cache", seeds=[3, 4])
    method = plan["stages"]["method"]
    assert {j["params"]["seed"] for j in method if not j["target"]} == {3, 4}
    # the target-setting seeds are the profile's own, apart from the comparison's
    assert {j["params"]["seed"] for j in method if j["target"]} == set(
        profile["method"]["target_seeds"])
    main = [j for j in plan["stages"]["method"] if j["main"]]
    assert len(main) == 2 * 2 * 3 * 3 * 2


def test_phase_a_runs_on_seeds_of_its_own(tmp_path):
    """The tuning grid runs on ``tuning.seeds`` (default: seed 500), never on a seed the
    comparison or the target uses, and a clash fails naming the key."""
    profile = yaml.safe_load((ROOT / "params" / "cv-demo.yaml").read_text())
    m = profile["method"]
    del m["tuning"]["seeds"]
    plan = run_batch.expand_plan(run_batch.load_profile(_write(tmp_path, profile)), "o", "c")
    assert {j["params"]["seed"] for j in plan["stages"]["tuning"]} == {500}
    m["tuning"]["seeds"] = [1]
    with pytest.raises(ProfileError, match="method.tuning.seeds: seed 1 is also a seed "
                                           "of the comparison"):
        run_batch.expand_plan(run_batch.load_profile(_write(tmp_path, profile)), "o", "c")


def test_a_job_done_by_other_code_is_not_taken_as_done(tmp_path, monkeypatch):
    """Resume-by-skip holds only for the same parameters and the same chapters: after an
    edit the job runs again, and the chapter's own reuse checks decide what it redoes."""
    job = {"id": "data-caltech256", "stage": "data_prep", "params": {"dataset": "x"}}
    code = run_batch.code_fingerprint("data_prep")
    status = {**job, "status": "complete", "code": code}
    (tmp_path / "batch").mkdir()
    (tmp_path / "batch" / "data-caltech256.json").write_text(json.dumps(status))
    assert is_complete(tmp_path, job, code)
    assert not is_complete(tmp_path, {**job, "params": {"dataset": "y"}}, code)
    assert run_batch.code_fingerprint("method") != code
    monkeypatch.setitem(run_batch.CHAPTERS, "data_prep", tmp_path / "edited.ipynb")
    (tmp_path / "edited.ipynb").write_text("{}")
    assert not is_complete(tmp_path, job, run_batch.code_fingerprint("data_prep"))
