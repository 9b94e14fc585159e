"""Faults that cost hours, injected one by one: a diverging run, damaged files, two batches
on one folder, a full disk, and a batch killed with SIGKILL then run again. Each test says
what is kept, what is redone and what the user is told."""
import contextlib
import errno
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import run_batch
from speedup.protocol import add_targets, load_examples, select_settings
from speedup.report import evaluate_study
from speedup.results import load_plan, load_results, with_roles
from speedup.study import (BatchLocked, batch_lock, diverged_runs, finished_runs, is_complete,
                           outputs_intact, plan_jobs)
from speedup.train import Checkpoint, RunConfig, run_training
from speedup.files import DiskFullError, write_json
from speedup.data import UnknownVersionError, read_manifest
from test_evaluation import _result, _study   # the synthetic study of chapter 4's tests
from test_study import _params   # a tiny run's settings

ROOT = Path(__file__).resolve().parents[1]

# The smallest batch with a diverging run: one dataset, one version, two arms, and a tuning
# grid whose learning rate of 10^4 sends the baseline's loss to NaN in its first epoch.
TINY = {
    "task": "cv", "profile": "faults", "label": "fault tests: sample data, tiny models",
    "workers": 2,
    "data_prep": {"datasets": ["caltech256"],
                  "params": {"source": "sample", "sizes": {"60KB": 60000},
                             "short_sides": {"60KB": 24}}},
    "architectures": {"params": {"archs": ["resnet18"], "width": 8,
                                 "input_sizes": [12, 24]}},
    "method": {"archs": ["resnet18"], "arms": ["baseline", "progressive"], "seeds": [0],
               "params": {"width": 8, "epochs": 3, "batch_size": 32, "eval_points": 6,
                          "checkpoint_every_s": 0.0},
               "tuning": {"datasets": ["caltech256"], "version": "60KB",
                          "grids": {"baseline": {"lr": [10000.0, 0.05]},
                                    "progressive": {"start_scale": [0.75, 0.5]}}}},
    "evaluation": {"params": {"target_fraction": 0.9}},
}


def _results(out):
    """{run: result} of every finished result file under ``out``."""
    return {p.stem: json.loads(p.read_text()) for p in (out / "results").glob("*-*.json")}


# ------------------------------------------------------- kill -9, re-run, divergence, damage

@pytest.fixture(scope="module")
def killed_then_rerun(tmp_path_factory):
    """The tiny batch killed with SIGKILL (the batch and its workers) after its first
    result, then run again to the end (its data, tuning, selection and training stages: the
    evaluation is chapter 4's, checked on this output in-process below). One tuning run
    (the baseline at lr 10000) diverges."""
    tmp = tmp_path_factory.mktemp("faults")
    profile, out = tmp / "faults.yaml", tmp / "out"
    profile.write_text(yaml.safe_dump(TINY))
    args = [str(profile), "--output-dir", str(out), "--cache-dir", str(tmp / "cache"),
            "--stages", "data_prep", "tuning", "selection", "method"]
    batch = subprocess.Popen([sys.executable, str(ROOT / "run_batch.py"), *args],
                             cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list((out / "results").glob("*-*.json")) and time.time() < deadline:
        assert batch.poll() is None, "the batch ended before its first result"
        time.sleep(0.1)
    print(f"killed after {time.time() - deadline + 240:.1f}s", file=sys.stderr)
    os.killpg(batch.pid, signal.SIGKILL)
    batch.wait()
    first = {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*-*.json")}
    first.update({str(p): p.stat().st_mtime_ns
                  for p in (out / "data").rglob("manifest.json")})
    lock = json.loads((out / "batch.lock").read_text())
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = run_batch.main(args)
    return {"out": out, "args": args, "first": first, "lock": lock, "killed_pid": batch.pid,
            "code": code, "printed": printed.getvalue()}


def test_a_killed_batch_reruns_to_the_end_keeping_what_was_done(killed_then_rerun):
    k, out = killed_then_rerun, killed_then_rerun["out"]
    assert k["first"] and k["lock"]["pid"] == k["killed_pid"]
    # the re-run took the dead batch's lock over, said so, and released it at the end
    assert "taking over the stale lock" in k["printed"]
    assert f"pid {k['killed_pid']} on" in k["printed"]
    assert not (out / "batch.lock").exists()
    assert k["code"] == 0, k["printed"][-2000:]
    plan = json.loads((out / "plan.json").read_text())
    results = _results(out)
    assert sorted(results) == sorted(j["id"] for stage in ("tuning", "method")
                                     for j in plan["stages"][stage])
    # the result written before the kill was kept, not trained again
    for name, mtime in k["first"].items():   # relative: a result; absolute: a manifest
        assert (out / "results" / name).stat().st_mtime_ns == mtime, name
    assert not list(out.rglob("*.partial")) and not list((out / "checkpoints").glob("*.pt"))


def test_a_diverging_run_stops_is_saved_as_diverged_and_the_batch_goes_on(killed_then_rerun):
    out, printed = killed_then_rerun["out"], killed_then_rerun["printed"]
    results = _results(out)
    gone = {n: r for n, r in results.items() if r["status"] == "diverged"}
    assert len(gone) == 1
    (name, r), = gone.items()
    assert r["params"]["lr"] == 10000.0 and "test" not in r and r["best_val"] is None
    # stopped at the first validation pass that saw it: before the end of training
    assert r["diverged"]["step"] < 3 * -(-r["train_examples"] // 32)
    assert "training loss" in r["diverged"]["reason"]
    assert all(np.isfinite(h["val_primary"]) for h in r["history"])  # the passes before
    assert f"1 training run(s) diverged (saved as such, not as scores): {name}" in printed
    assert all(x["status"] == "complete" for n, x in results.items() if n != name)
    # chapter 4 reads it as diverged, never as a score: a miss in time-to-target terms
    plan = json.loads((out / "plan.json").read_text())
    df = add_targets(with_roles(load_results(str(out)), plan), 0.9).set_index("run_name")
    assert df.loc[name, "diverged"] and df.loc[name, "status"] == "diverged"
    assert df.loc[name, ["best_val", "final_val", "test"]].isna().all()
    assert np.isinf(df.loc[name, "time_to_target_s"])
    assert np.isfinite(df.target).all()   # the target comes from the main baseline only
    assert diverged_runs(plan, out) == [name]
    assert name not in finished_runs(plan, out, main_only=False)


def test_a_damaged_result_is_set_aside_and_only_its_run_is_trained_again(killed_then_rerun,
                                                                          capsys):
    out = killed_then_rerun["out"]
    plan = json.loads((out / "plan.json").read_text())
    job = next(j for j in plan_jobs(plan, "method") if len(j["runs"]) > 1)
    code = run_batch.code_fingerprint("method")
    assert is_complete(out, job, code)
    damaged, kept = job["runs"][0], job["runs"][1:]
    path = out / "results" / f"{damaged}.json"
    path.write_text(path.read_text()[:17] + "\x01")   # cut short by a full disk or a sync
    before = {n: (out / "results" / f"{n}.json").stat().st_mtime_ns for n in kept}
    # the next batch does not take the job as done: the file is named and set aside ...
    assert not is_complete(out, job, code)
    printed = capsys.readouterr().out
    assert printed.count("warning: damaged file") == 1 and str(path) in printed
    assert (out / "results" / f"{damaged}.json.damaged").exists() and not path.exists()
    # ... and the job's notebook retrains that run alone (its kernel calls run_training)
    params = next(r["params"] for r in plan["stages"]["method"] if r["id"] == damaged)
    assert run_training(RunConfig.from_flat({**params, "num_threads": 1}))["status"] == \
        "complete"
    assert is_complete(out, job, code)
    assert before == {n: (out / "results" / f"{n}.json").stat().st_mtime_ns for n in kept}


# ------------------------------------------------------------- divergence inside one run

def test_run_training_saves_a_diverged_run_once_and_reuses_it(killed_then_rerun, tmp_path,
                                                               capsys):
    shutil.copytree(killed_then_rerun["out"] / "data", tmp_path / "data")
    versions = tmp_path
    params = RunConfig.from_flat(_params(versions, arm="baseline", lr=10000.0, epochs=2,
                                         eval_points=4, version="60KB"))
    result = run_training(params)
    assert result["status"] == "diverged" and result["best_val"] is None
    d = result["diverged"]
    first = result["history"][0]["train_loss"] if result["history"] else np.inf
    assert d["train_loss"] == "nan" or d["train_loss"] > 10 * first
    # stopped before the end (2 epochs), keeping every pass before (here one per step)
    assert d["epoch"] < 2 and len(result["history"]) == d["step"] - 1
    assert all(h["step"] < d["step"] for h in result["history"])
    assert not Path(versions, "checkpoints", f"{result['run_name']}.pt").exists()
    assert json.loads(Path(versions, "results", f"{result['run_name']}.json").read_text(),
                      parse_constant=pytest.fail)   # strict JSON: no NaN literal
    capsys.readouterr()
    again = run_training(params)   # a finding: not trained again
    assert (again["status"], again["diverged"]) == ("diverged", d)
    assert "already diverged, reusing" in capsys.readouterr().out


# ---------------------------------------------------- damaged files, in every reader

def test_the_evaluation_shows_diverged_runs_and_survives_a_damaged_file(tmp_path, capsys):
    runs = [_result("base", "baseline", [.2, .5, .6], 2.0, lr=0.05),
            _result("prog", "progressive", [.3, .55, .6], 1.0),
            _result("prog-s1", "progressive", [.3, .1], 1.0, seed=1),
            _result("base-lr", "baseline", [.1, .2, .3], 2.0, seed=500, lr=10.0),
            _result("base-s1", "baseline", [.2, .5, .6], 2.0, seed=1, lr=0.05),
            _result("base-lr1", "baseline", [.2, .5, .6], 2.0, seed=500, lr=0.05)]
    for r in runs[2:4]:   # one seed of the arm and one grid point diverged
        r.update(status="diverged", best_val=None, diverged={
            "step": 3, "epoch": 3.0, "train_loss": "nan", "reason": "training loss is nan",
            "train_time_s": 5.0, "train_flops": 3e9})
        del r["test"]
    main, grid = {"main": True}, {"varied": ["lr"]}   # phase B's runs; phase A's grid
    _study(tmp_path, runs, {"base": main, "base-s1": main, "prog": main, "prog-s1": main,
                            "base-lr": grid, "base-lr1": grid, "lost": main})
    lost = tmp_path / "results" / "lost.json"
    lost.write_text('{"status": "complete", "run_name": "lo')   # damaged
    select_settings(task="cv", output_dir=str(tmp_path), target_fraction=0.9)  # phase A
    study = evaluate_study(task="cv", output_dir=str(tmp_path), target_fraction=0.9)
    assert f"warning: damaged file {lost}" in capsys.readouterr().out
    assert not lost.exists() and Path(str(lost) + ".damaged").exists()
    row = study["speedups"].iloc[0]
    assert (row.seeds, row.reached, row.diverged) == (2, 1, 1)
    assert row.test == pytest.approx(0.6)   # the diverged seed's is no score
    table = (tmp_path / "tables" / "speedup.md").read_text()
    assert " / 1/2 (1 diverged) |" in table   # seeds at target: the baseline / the arm
    summary = pd.read_csv(tmp_path / "results" / "summary.csv").set_index("run_name")
    assert summary.loc["base-lr", "status"] == "diverged"
    assert summary.loc[["base-lr", "prog-s1"], ["best_val", "test"]].isna().all().all()
    for name in ("tuning", "convergence", "reached"):
        assert study["figures"][name].stat().st_size > 10_000
    # a damaged plan is set aside and named; the batch writes a new one first
    (tmp_path / "plan.json").write_text("{")
    with pytest.raises(FileNotFoundError, match="missing or was damaged: run the batch"):
        load_plan(str(tmp_path))
    assert (tmp_path / "plan.json.damaged").exists()


def test_every_reader_sets_a_damaged_file_aside(tmp_path, capsys):
    # a version's manifest: the version reads as not built, so the data job builds it again
    folder = tmp_path / "data" / "caltech256" / "40KB"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text('{"version": "40KB"}')   # valid JSON, no files
    with pytest.raises(UnknownVersionError):
        read_manifest(tmp_path, "caltech256", "40KB")
    job = {"id": "data-caltech256", "stage": "data_prep",
           "params": {"dataset": "caltech256", "sizes": {"40KB": 40000}}}
    assert not outputs_intact(tmp_path, job)
    # a checkpoint: training starts from scratch
    cp = Checkpoint(tmp_path / "checkpoints" / "run.pt", {"lr": 0.1})
    cp.save({"step": 1, "steps": 3, "clock": 1.0})
    cp.path.write_bytes(cp.path.read_bytes()[:100])
    assert cp.load() is None and cp.progress() is None
    # a batch status file: the job is not taken as done
    (tmp_path / "batch").mkdir()
    (tmp_path / "batch" / "data-caltech256.json").write_bytes(b"\x00\x00")
    assert not is_complete(tmp_path, job, "code")
    # a run's per-example records: the difficulty check goes on without them
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "run.examples.npz").write_bytes(b"PK\x03\x04 cut short")
    assert load_examples(str(tmp_path), "run") is None
    out = capsys.readouterr().out
    for damaged in ("manifest.json", "run.pt", "data-caltech256.json", "run.examples.npz"):
        assert f"{damaged}.damaged, it will be redone" in out, damaged
    assert out.count("warning: damaged file") == 5   # the checkpoint's progress file too


# ------------------------------------------------------------------ one batch per folder

def _sleeper():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_second_batch_refuses_while_the_first_runs(tmp_path, capsys):
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "out"
    out.mkdir()
    first = _sleeper()   # the first batch, alive
    try:
        write_json(out / "batch.lock", {"pid": first.pid, "host": socket.gethostname()})
        assert run_batch.main([str(profile), "--output-dir", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"another batch (pid {first.pid}" in err and str(out) in err
        assert json.loads((out / "batch.lock").read_text())["pid"] == first.pid  # untouched
        assert not (out / "plan.json").exists()                              # nothing ran
    finally:
        first.kill()
        first.wait()
    # a lock from another host cannot be checked: refused, naming the file to delete
    write_json(out / "batch.lock", {"pid": first.pid, "host": "colab-vm-elsewhere"})
    with pytest.raises(BatchLocked, match="delete .*batch.lock"):
        with batch_lock(out):
            pass
    # a lock whose process is gone is stale: taken over with a message, released after
    write_json(out / "batch.lock", {"pid": first.pid, "host": socket.gethostname()})
    with batch_lock(out) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert f"pid {first.pid} on {socket.gethostname()}) is no longer running" in \
        capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == []     # nothing left behind


_TAKE_OVER = """
import sys, time
sys.path.insert(0, {root!r})
from speedup.study import BatchLocked, batch_lock
while time.time() < {at}:
    pass
try:
    with batch_lock({out!r}):
        print("HELD", flush=True)
        time.sleep(1.5)
except BatchLocked:
    print("REFUSED", flush=True)
"""


def test_two_batches_finding_one_stale_lock_at_once_never_both_take_it(tmp_path):
    """A stale lock is taken over under a guard: of batches that find it at the same
    instant, one holds the folder and the others are refused while it runs."""
    out = tmp_path / "out"
    out.mkdir()
    dead = _sleeper()
    dead.kill()
    dead.wait()
    write_json(out / "batch.lock", {"pid": dead.pid, "host": socket.gethostname()})
    at = time.time() + 8.0    # all start at once, well after their imports (torch)
    racers = [subprocess.Popen([sys.executable, "-c", _TAKE_OVER.format(
        root=str(ROOT), at=at, out=str(out)).replace("time.sleep(1.5)", "time.sleep(6)")],
        stdout=subprocess.PIPE, text=True) for _ in range(3)]
    said = sorted(r.communicate(timeout=90)[0].strip().splitlines()[-1] for r in racers)
    assert said == ["HELD", "REFUSED", "REFUSED"], said
    assert not list(out.iterdir())        # the lock and its guard are gone


def test_a_batch_killed_with_sigkill_leaves_its_lock_and_nothing_else(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", _TAKE_OVER.format(
        root=str(ROOT), at=0, out=str(out)).replace("time.sleep(1.5)", "time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "HELD"
    holder.kill()
    holder.wait()
    assert sorted(p.name for p in out.iterdir()) == ["batch.lock"]


# ------------------------------------------------------------------------- a full disk

@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    """A folder on a 256 KB tmpfs filled to its last few KB where the machine lets us mount
    one (root); elsewhere a folder whose writes fail with ENOSPC once armed."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
        capture_output=True).returncode == 0
    state = {"how": "tmpfs" if mounted else "injected"}

    def fill():
        if mounted:   # leave 8 KB
            free = shutil.disk_usage(folder).free
            (folder / "filler").write_bytes(b"\0" * (free - 8 * 1024))
            return
        write_bytes, save = Path.write_bytes, torch.save

        def no_space(*_, **__):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(Path, "write_bytes", lambda self, data: (
            no_space() if str(self).startswith(str(folder)) else write_bytes(self, data)))
        monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: (
            no_space() if str(f).startswith(str(folder)) else save(obj, f, *a, **k)))
    state["fill"] = fill
    yield folder, state
    if mounted:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_full_disk_is_a_clear_error_that_leaves_no_partial_file(full_disk):
    folder, state = full_disk
    result = folder / "results" / "run.json"
    write_json(result, {"status": "complete", "old": True})
    cp = Checkpoint(folder / "checkpoints" / "run.pt", {"lr": 0.1})
    cp.save({"step": 1, "steps": 3, "clock": 1.0})
    state["fill"]()
    big = {"status": "complete", "history": [{"step": i} for i in range(3000)]}
    with pytest.raises(DiskFullError) as err:
        write_json(result, big)
    message = str(err.value)
    needed = len((json.dumps(big, indent=1) + "\n").encode())
    assert str(result.parent) in message and f"needs {needed:,} bytes" in message, state
    assert err.value.errno == errno.ENOSPC
    assert json.loads(result.read_text()) == {"status": "complete", "old": True}  # intact
    with pytest.raises(DiskFullError, match=f"no space left in {cp.path.parent}"):
        cp.save({"step": 2, "steps": 3, "clock": 2.0, "model": torch.zeros(64 * 1024)})
    assert cp.load()["step"] == 1   # the previous checkpoint stands
    assert not list(folder.rglob("*.partial")), state["how"]


def _job(ident):
    return {"id": ident, "stage": "data_prep", "params": {"dataset": ident, "sizes": {}}}


def out_of_space(job, output_dir, threads, device=None):
    """A stand-in for ``run_batch.execute`` whose job runs out of disk (as a kernel's
    error reads), leaving a mark that it was started."""
    Path(output_dir, f"started-{job['id']}").touch()
    return {"id": job["id"], "stage": job["stage"], "status": "failed", "wall_s": 0.1,
            "notebook": "nb.ipynb", "error": "PapermillExecutionError: DiskFullError: "
            "[Errno 28] no space left in /out/results (0 bytes free): r.json needs 812 bytes"}


def test_a_full_disk_stops_the_batch_and_says_where(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run_batch, "execute", out_of_space)
    plan = {"task": "cv", "stages": {"data_prep": [_job("a"), _job("b"), _job("c")]}}
    with pytest.raises(DiskFullError, match=r"job a: .*no space left in /out/results .* "
                       "needs 812 bytes"):
        run_batch.run_batch(plan, str(tmp_path), workers=1, stages=("data_prep",))
    assert sorted(p.name for p in tmp_path.glob("started-*")) == ["started-a"]  # none after
    # the command line: exit 2, the message on stderr, the lock released
    real = run_batch.run_batch
    monkeypatch.setattr(run_batch, "run_batch",
                        lambda *a: real(plan, str(tmp_path), 1, ("data_prep",)))
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump(TINY))
    assert run_batch.main([str(profile), "--output-dir", str(tmp_path)]) == 2
    assert "the batch stopped, the disk is full: job a:" in capsys.readouterr().err
    assert not (tmp_path / "batch.lock").exists()
