"""Run the study: every chapter, for every combination a profile asks for.

    python run_batch.py params/cv-demo.yaml [--output-dir _output] [--workers 2]
    python run_batch.py params/cv-full.yaml --estimate --tflops 6   # work and time only
    python run_batch.py params/cv-full.yaml --status                 # runs done, time left

A profile (``params/*.yaml``) names the combinations; chapter 3's ``expand_plan``
turns it into a plan of jobs in four stages (data prep -> architectures -> method
-> evaluation), checking every parameter against the chapter's own ``parameters``
cell (unknown keys and wrong types fail before anything runs). This script
executes each job as a papermill notebook, in parallel within a stage, keeping
each executed notebook under ``<output>/notebooks/`` and each job's status under
``<output>/batch/``. A failed job is recorded and the batch goes on; the jobs that
depend on it are skipped (not started), naming it; the batch then exits 1 with
a summary. Re-running skips the jobs that completed with the same parameters
(and whose outputs, read back, are intact), and a training run interrupted mid-way
resumes from its last checkpoint. One batch at a time holds an output folder
(``<output>/batch.lock``); a disk that fills up stops the batch with a message.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import errno
import hashlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

import nbformat
import papermill
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
import nbmodule  # noqa: E402  makes `speedup.<topic>` importable
from speedup.method import (  # noqa: E402  the plan's one home: chapter 3
    STAGES, BatchLocked, DiskFullError, NoGPUError, ProfileError, batch_lock, blocked_by,
    check_device, diverged_runs, estimate_study, failure_summary, lacks, parameter_defaults,
    parse_profile, read_json_checked, read_result, read_version_manifest, study_status,
    version_dir, write_json,
)
from speedup.method import expand_plan as expand_chapter_plan  # noqa: E402

CHAPTERS = {stage: nbmodule.chapter_path(stage) for stage in STAGES}
KERNEL = "python3"


def parameters_source(stage: str) -> str:
    """The source of a chapter's ``parameters`` cell."""
    nb = nbformat.read(CHAPTERS[stage], as_version=4)
    return next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))


def chapter_defaults() -> dict:
    """Every stage's parameters, as {stage: {name: default}}."""
    return {stage: parameter_defaults(parameters_source(stage)) for stage in STAGES}


def load_profile(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ProfileError(f"profile {path} does not exist; profiles: "
                           f"{sorted(p.name for p in (ROOT / 'params').glob('*.yaml'))}")
    return parse_profile(path.read_text(), str(path))


def expand_plan(profile: dict, output_dir: str, cache_dir: str, seeds=None) -> dict:
    return expand_chapter_plan(profile, chapter_defaults(), output_dir, cache_dir, seeds)


def papermill_jobs(plan: dict, stage: str) -> list[dict]:
    """The notebooks to execute for a stage.

    The plan lists training *runs*; papermill runs one notebook per model x
    dataset x size case (and one per case of the tuning grid), whose
    ``variants`` parameter lists the case's runs. That keeps the baseline and
    its curricula side by side in one executed notebook, and pays the
    kernel's start-up (importing torch) once per case instead of once per run.
    """
    if stage != "method":
        return plan["stages"][stage]
    groups: dict[str, list] = {}
    for run in plan["stages"][stage]:
        p = run["params"]
        case = f"{p['arch']}-{p['dataset']}-{p['version']}"  # its seeds too: one start-up
        # a case's arms and the baseline's budgets run side by side; grid runs apart
        in_case = run["main"] or run.get("frontier")
        groups.setdefault(case if in_case else f"tuning-{case}", []).append(run)
    jobs = []
    for ident, runs in groups.items():
        base = runs[0]["params"]
        variants = [{k: v for k, v in r["params"].items() if base[k] != v or k == "run_name"}
                    for r in runs]
        jobs.append({"id": ident, "stage": stage, "params": {**base, "variants": variants},
                     "runs": [r["id"] for r in runs]})
    return jobs


def _status_path(output_dir: Path, job: dict) -> Path:
    return output_dir / "batch" / f"{job['id']}.json"


def _write_status(output_dir: Path, status: dict) -> dict:
    write_json(_status_path(output_dir, status), status)
    return status


def code_fingerprint(stage: str) -> str:
    """sha256 of the chapters a job of ``stage`` runs: its own and the earlier ones it
    imports. A job done by other code is run again; the chapter's own reuse checks (data
    versions by their settings, training runs by their key and data) decide what that
    costs, so a rerun after an edit redoes only what the edit changed."""
    digest = hashlib.sha256()
    for earlier in STAGES[:STAGES.index(stage) + 1]:
        digest.update(Path(CHAPTERS[earlier]).read_bytes())
    return digest.hexdigest()


def outputs_intact(output_dir: Path, job: dict) -> bool:
    """Whether what ``job`` wrote reads back whole: a data job's version manifests, a
    method job's results (complete or diverged). Reading sets a damaged file aside."""
    p = job["params"]
    if job["stage"] == "data_prep":
        return all(read_version_manifest(version_dir(output_dir, p["dataset"], v))
                   is not None for v in p.get("sizes", {}))
    if job["stage"] == "method":
        return all(read_result(Path(output_dir, "results", f"{run}.json")) is not None
                   for run in job.get("runs", []))
    return True


def is_complete(output_dir: Path, job: dict) -> bool:
    """Done before with the same parameters and code, its outputs intact: skip it."""
    status = read_json_checked(_status_path(output_dir, job),
                               lambda s: lacks(s, ["status"]))
    return (status is not None and status.get("status") == "complete"
            and status.get("params") == job["params"]
            and status.get("code") == code_fingerprint(job["stage"])
            and outputs_intact(output_dir, job))


def disk_was_full(status: dict) -> bool:
    """Whether a failed job ran out of disk space (ENOSPC, in the kernel or here)."""
    return "[Errno 28]" in status.get("error", "")


def execute(job: dict, output_dir: str, threads: int) -> dict:
    """Run one job's chapter with papermill (in a worker process)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by the kernel
    out = Path(output_dir, "notebooks", job["stage"], f"{job['id']}.ipynb")
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    status = {"id": job["id"], "stage": job["stage"], "params": job["params"],
              "code": code_fingerprint(job["stage"]), "notebook": str(out)}
    try:
        papermill.execute_notebook(str(CHAPTERS[job["stage"]]), str(out),
                                   parameters=job["params"], kernel_name=KERNEL,
                                   cwd=str(ROOT), progress_bar=False, log_output=False)
        status["status"] = "complete"
    except Exception as exc:  # recorded; the batch goes on
        status["status"] = "failed"
        status["error"] = "".join(traceback.format_exception_only(type(exc), exc))[-3000:]
    status["wall_s"] = round(time.time() - start, 2)
    return _write_status(Path(output_dir), status)


def run_plan(plan: dict, output_dir: str, workers: int, stages=STAGES) -> dict:
    """Execute the plan stage by stage; returns {job id: status} of every job, including
    those completed before (``"before": True``) and those skipped for a failed input."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "plan.json", plan)
    # timing runs never share a core: workers x threads <= cores
    cores = os.cpu_count() or 1
    if workers > cores:
        tqdm.write(f"--workers {workers} > {cores} cores: using {cores}, so that no two "
                   "timed runs share a core")
        workers = cores
    threads = max(1, cores // workers)
    statuses: dict[str, dict] = {}
    for stage in stages:
        todo, done_before = [], 0
        for job in papermill_jobs(plan, stage):
            # Evaluation is cheap and reads everything: always redo it.
            if stage != "evaluation" and is_complete(out, job):
                statuses[job["id"]] = {"status": "complete", "before": True}
                done_before += 1
                continue
            reason = blocked_by(job, plan, statuses, out)
            if reason:
                statuses[job["id"]] = _write_status(out, {
                    "id": job["id"], "stage": stage, "params": job["params"],
                    "status": "skipped", "reason": reason})
                tqdm.write(f"  SKIP {job['id']}: {reason}")
                continue
            todo.append(job)
        desc = f"{stage} ({done_before} done before)" if done_before else stage
        slots = max(1, min(workers, len(todo) or 1))
        with cf.ProcessPoolExecutor(max_workers=slots) as pool, \
                tqdm(total=len(todo), desc=desc, unit="job") as bar:
            # a job is submitted only when a worker is free, so a stop starts nothing new
            waiting, running = list(todo), set()
            while waiting or running:
                while waiting and len(running) < slots:
                    running.add(pool.submit(execute, waiting.pop(0), output_dir, threads))
                done, running = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    status = fut.result()   # a status that cannot be written: DiskFullError
                    statuses[status["id"]] = status
                    if disk_was_full(status):   # every later write would fail too: stop
                        raise DiskFullError(errno.ENOSPC, f"job {status['id']}: "
                                            + status["error"].strip().splitlines()[-1])
                    mark = "ok  " if status["status"] == "complete" else "FAIL"
                    bar.write(f"  {mark} {status['id']}  {status['wall_s']:.1f}s"
                              + ("" if status["status"] == "complete"
                                 else f"\n       {status['error'].strip().splitlines()[-1]}"
                                      f"\n       see {status['notebook']}"))
                    bar.update()
    return statuses


def print_estimate(plan: dict, output_dir: str, tflops: float | None) -> None:
    table = estimate_study(plan, output_dir, tflops * 1e12 if tflops else None)
    by = table.groupby(["dataset", "version"], sort=False).hours.sum()
    print(by.round(2).to_string())
    speed = f"{tflops:g} TFLOP/s (assumed)" if tflops else "speeds measured on this machine"
    print(f"{len(table)} training runs, {table.train_pflops.sum():.1f} PFLOP of training, "
          f"{table.hours.sum():.1f} h at {speed}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("profile", help="a params/*.yaml file")
    ap.add_argument("--output-dir", default="_output")
    ap.add_argument("--cache-dir", default="_cache")
    ap.add_argument("--workers", type=int, default=None,
                    help="parallel jobs (default: the profile's 'workers', else 1)")
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    ap.add_argument("--seeds", nargs="+", type=int, help="replace the profile's seeds")
    ap.add_argument("--allow-cpu", action="store_true",
                    help="run a profile that requires a GPU on a machine without one")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    ap.add_argument("--estimate", action="store_true",
                    help="print the work and time of every run and exit")
    ap.add_argument("--tflops", type=float, help="with --estimate: assume this speed")
    ap.add_argument("--status", action="store_true", help="print runs done and time left")
    args = ap.parse_args(argv)
    try:
        profile = load_profile(args.profile)
        plan = expand_plan(profile, args.output_dir, args.cache_dir, args.seeds)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = {s: len(plan["stages"][s]) for s in STAGES}
    print(f"{plan['source']}: {counts}")
    if args.dry_run:
        print(json.dumps(plan, indent=1))
        return 0
    if args.estimate:
        print_estimate(plan, args.output_dir, args.tflops)
        return 0
    if args.status:
        print(study_status(plan, args.output_dir))
        return 0
    try:
        check_device(plan, args.allow_cpu)
    except NoGPUError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    workers = args.workers or profile.get("workers", 1)
    start = time.time()
    try:
        with batch_lock(args.output_dir):
            statuses = run_plan(plan, args.output_dir, workers, args.stages)
    except BatchLocked as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DiskFullError as exc:
        print(f"error: the batch stopped, the disk is full: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    ran = [s for s in statuses.values() if s["status"] in ("complete", "failed")
           and not s.get("before")]
    bad = {k: s for k, s in statuses.items() if s["status"] != "complete"}
    failed = sum(s["status"] == "failed" for s in bad.values())
    print(f"batch: {len(ran)} jobs run, {failed} failed, {len(bad) - failed} skipped, "
          f"{time.time() - start:.0f}s; outputs in {args.output_dir}/")
    diverged = diverged_runs(plan, args.output_dir)
    if diverged:   # a finding, not a failure: shown as diverged by the evaluation
        print(f"{len(diverged)} training run(s) diverged (saved as such, not as scores): "
              + ", ".join(diverged))
    if bad:
        print(f"{len(bad)} of {len(statuses)} jobs did not complete (the others' outputs "
              f"are saved; a rerun retries these):\n{failure_summary(statuses)}",
              file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
