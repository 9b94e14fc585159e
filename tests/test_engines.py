"""Past one GPU: jobs pinned to the GPUs of a machine, and the batch on a Dask cluster or
on SLURM through submitit (their local clusters here), giving the local pool's results."""
import copy
import json
import threading
import time

import numpy as np
import pytest

import run_batch
from speedup.study import REDONE, is_complete, plan_jobs, run_jobs
from test_batch import TINY, _write

# TINY on one dataset and size, without budgets: one data job, then one case whose baseline
# and progressive runs train, and a tuning job on a version that was never built, which
# fails, so that the batch ends red with the case's results saved
SMALL = copy.deepcopy(TINY)
SMALL["data_prep"].update(datasets=["caltech256"], per_dataset={})
SMALL["data_prep"]["params"].update(sizes={"60KB": 60000}, short_sides={"60KB": 24})
del SMALL["method"]["budgets"]
# the architecture table and the evaluation read the same; the selection runs: a tuning
# job that fails leaves phase B at the profile's settings, on every engine alike
STAGES = ["data_prep", "tuning", "selection", "method"]


@pytest.mark.parametrize("env,count,gpus", [
    (None, 0, []),                     # a CPU-only machine
    (None, 4, ["0", "1", "2", "3"]),
    ("2,5", 2, ["2", "5"]),            # our own pinning is kept: the kernels get 2 and 5
    ("GPU-8a1f,GPU-77c0", 2, ["GPU-8a1f", "GPU-77c0"]),
    ("", 0, []),
    ("1,7", 1, ["1"]),                 # torch stops at a device it cannot open
])
def test_visible_gpus_names_them_as_a_kernel_will(env, count, gpus):
    assert run_batch.visible_gpus(env, count) == gpus


@pytest.mark.parametrize("workers,gpus,cores,slots", [
    (2, [], 2, [None, None]),          # CPU only: as before, one job per core
    (4, [], 2, [None, None]),
    (8, ["0", "1", "2", "3"], 16, ["0", "1", "2", "3"]),  # timing runs never share a GPU
    (2, ["0", "1", "2", "3"], 16, ["0", "1"]),
    (4, ["0", "1", "2", "3"], 2, ["0", "1"]),             # nor a core
    (1, ["3"], 8, ["3"]),
])
def test_device_slots_one_job_per_gpu_or_core(workers, gpus, cores, slots):
    assert run_batch.device_slots(workers, gpus, cores) == slots


def test_run_jobs_spreads_jobs_over_the_slots_one_at_a_time_each():
    spans, lock = [], threading.Lock()

    def work(job, slot):
        begin = time.monotonic()
        time.sleep(0.02 * (1 + job % 3))
        with lock:
            spans.append((slot, begin, time.monotonic()))
        return {"id": job, "device": slot}

    with run_batch.cf.ThreadPoolExecutor(4) as pool:
        done = list(run_jobs(lambda job, slot: pool.submit(work, job, slot),
                                       range(9), ["0", "1", "2"]))
    assert sorted(s["id"] for s in done) == list(range(9))
    assert {slot for slot, _, _ in spans} == {"0", "1", "2"}
    for slot in "012":
        mine = sorted((b, e) for s, b, e in spans if s == slot)
        assert all(end <= begin for (_, end), (begin, _) in zip(mine, mine[1:]))


def test_wall_time_is_the_runners_schedule_not_the_total_over_n():
    assert run_batch.wall_time([3, 1, 1, 1], 2) == 3
    assert run_batch.wall_time([1, 1, 1, 3], 2) == 4  # plan order: the long job last
    assert run_batch.wall_time([5, 1], 64) == 5       # the longest job bounds it


def test_an_engines_own_failure_is_recorded_as_the_jobs(tmp_path):
    job = {"id": "data-caltech256", "stage": "data_prep", "params": {"dataset": "caltech256"}}

    def lost_worker(*args):
        raise RuntimeError("worker tcp://10.0.0.7:4711 died")

    status = run_batch._on_engine(lost_worker, job, str(tmp_path), None, None)
    assert status["status"] == "failed" and "died" in status["error"]
    assert json.loads((tmp_path / "batch" / "data-caltech256.json").read_text()) == status


def test_a_missing_engine_names_the_pinned_package(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(run_batch.sys.modules, "distributed", None)  # as if not installed
    out = tmp_path / "out"
    assert run_batch.main([str(_write(tmp_path, SMALL)), "--output-dir", str(out),
                           "--executor", "dask"]) == 2
    assert "pip install 'dask[distributed]==" in capsys.readouterr().err
    assert not out.exists()


def _outcome(out):
    """What a batch leaves that must not depend on where it ran: each job's status and each
    run's parameters, data, metrics and per-example records (not its clock, host or GPU)."""
    clock = {"interval_time_s", "train_time_s", "throughput"}
    statuses = {p.stem: (s["status"], s["params"]["dataset"] if "dataset" in s["params"]
                         else None, s.get("reason"),
                         (s.get("error") or "").replace(str(out), "<out>")[-200:])
                for p in (out / "batch").glob("*.json") for s in [json.loads(p.read_text())]}
    runs = {}
    for path in (out / "results").glob("*-*.json"):
        r = json.loads(path.read_text())
        runs[path.stem] = {
            "params": {k: v for k, v in r["params"].items() if k != "output_dir"},
            **{k: r[k] for k in ("key", "data_fingerprint", "test", "best_val", "train_flops")},
            "history": [{k: v for k, v in h.items() if k not in clock} for h in r["history"]]}
    examples = {p.name: {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in np.load(p).items()}
                for p in (out / "results").glob("*.npz")}
    return statuses, runs, examples


def test_dask_and_submitit_run_the_batch_as_the_local_pool_does(tmp_path, monkeypatch):
    profile, cache = str(_write(tmp_path, SMALL)), str(tmp_path / "cache")

    def batch(name, *args):
        out = tmp_path / name
        code = run_batch.main([profile, "--output-dir", str(out), "--cache-dir", cache,
                               "--workers", "2", "--stages", *STAGES, "--job-size", "case",
                               *args])
        assert code == 1, name  # the tuning job fails, as planned
        return out

    # The local pool on a machine with two GPUs, "3" and "5" (torch sees none here: the
    # kernels train on the CPU): each job is pinned to one, and the kernel sees it.
    with monkeypatch.context() as gpus:
        gpus.setenv("CUDA_VISIBLE_DEVICES", "3,5")
        gpus.setattr(run_batch.torch.cuda, "device_count", lambda: 2)
        local = batch("local")
    status = {p.stem: json.loads(p.read_text()) for p in (local / "batch").glob("*.json")}
    case = status["resnet18-caltech256-60KB"]
    assert {s["device"] for s in status.values()} <= {"3", "5"}  # spread: run_jobs' test
    for path in (local / "results").glob("*-*.json"):
        assert json.loads(path.read_text())["environment"]["visible_devices"] == case["device"]

    expected = _outcome(local)
    statuses, runs, examples = expected
    assert {j: s[0] for j, s in statuses.items()} == {
        "data-caltech256": "complete", "resnet18-caltech256-60KB": "complete",
        "selection": "complete", "tuning-resnet18-caltech256-no-such-version": "failed"}
    assert "no-such-version" in statuses["tuning-resnet18-caltech256-no-such-version"][3]
    assert sorted(r["params"]["arm"] for r in runs.values()) == ["baseline", "progressive"]
    assert examples  # the baseline's per-example losses

    # both engines at once (each job on one core, as the local pool's): a Dask LocalCluster
    # of two processes, and submitit's local executor (one process per job, as on SLURM)
    with run_batch.cf.ThreadPoolExecutor(2) as both:
        dask = both.submit(batch, "dask", "--executor", "dask")
        submitit = both.submit(batch, "submitit", "--executor", "submitit", "--cluster", "local")
        dask, submitit = dask.result(), submitit.result()
    assert _outcome(dask) == expected
    assert _outcome(submitit) == expected
    assert list((submitit / "submitit").glob("*_log.out"))  # the jobs' logs, beside the rest
    for out in (dask, submitit):
        for path in (out / "results").glob("*-*.json"):  # the engine's GPU, if any: none
            assert not json.loads(path.read_text())["environment"]["visible_devices"]
        # resume-by-skip: a rerun reads the statuses the engine's workers wrote, skips the
        # completed job and retries the failed one (whose trained runs it then reuses)
        plan = json.loads((out / "plan.json").read_text())
        # (the selection and the evaluation are redone every time: REDONE)
        assert [j["id"] for stage in STAGES for j in plan_jobs(plan, stage)
                if stage not in REDONE
                and is_complete(out, j, run_batch.code_fingerprint(stage))] == [
            "data-caltech256", "resnet18-caltech256-60KB"]


def test_a_job_may_be_one_run_and_the_longest_jobs_start_first():
    """A cluster's job is one training run, so that a case's runs spread over its GPUs;
    either way, the jobs with the most counted FLOPs start first."""
    from speedup.study import run_costs
    root = run_batch.ROOT
    plan = run_batch.expand_plan(run_batch.load_profile(root / "params" / "cv-demo.yaml"),
                                 "_nowhere", "_cache")
    cases, runs = plan_jobs(plan, "method", "case"), plan_jobs(plan, "method", "run")
    assert len(runs) == len(plan["stages"]["method"]) and all(len(j["runs"]) == 1
                                                             for j in runs)
    assert sorted(r for j in cases for r in j["runs"]) == sorted(r for j in runs
                                                                 for r in j["runs"])
    assert all(j["params"]["runs"][0]["run_name"] == j["runs"][0] for j in runs)
    costs = run_costs(plan, "_nowhere")      # from the byte budgets: nothing is built
    assert all(c > 0 for c in costs.values())
    for size in ("case", "run"):
        work = [sum(costs[r] for r in j["runs"]) for j in plan_jobs(plan, "method", size, costs)]
        assert work == sorted(work, reverse=True) and work[0] > 2 * work[-1]
