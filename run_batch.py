"""Run the study: every chapter, for every combination a profile asks for.

    python run_batch.py params/cv-demo.yaml [--output-dir _output] [--workers 2]
    python run_batch.py params/cv-full.yaml --estimate --tflops 6   # work and time only
    python run_batch.py params/cv-full.yaml --status                 # runs done, time left
    python run_batch.py params/cv-full.yaml --executor submitit --workers 14   # on SLURM

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

Where jobs run: ``--executor local`` (default) runs them in a process pool on this
machine, each pinned to one of its GPUs (if any); ``dask`` and ``submitit`` hand the
same jobs to a Dask cluster or to SLURM (README: "Running at scale").
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import errno
import hashlib
import heapq
import importlib
import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path

import nbformat
import papermill
import torch
import yaml
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
import nbexport  # noqa: E402
from speedup.data import read_version_manifest, version_dir  # noqa: E402
from speedup.files import DiskFullError, lacks, read_json_checked, write_json  # noqa: E402
from speedup.method import (  # noqa: E402  the plan's one home: chapter 3
    STAGES, BatchLocked, NoGPUError, ProfileError, batch_lock, blocked_by, check_device,
    diverged_runs, estimate_study, failure_summary, parameter_defaults, parse_profile,
    read_result, study_status,
)
from speedup.method import expand_plan as expand_chapter_plan  # noqa: E402

CHAPTERS = {stage: nbexport.chapter_path(stage) for stage in STAGES}
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


def usable_cores() -> int:
    """The cores this process may run on (a SLURM job's allocation, not the whole node)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _new_status(job: dict, output_dir: str) -> dict:
    return {"id": job["id"], "stage": job["stage"], "params": job["params"],
            "code": code_fingerprint(job["stage"]),
            "notebook": str(Path(output_dir, "notebooks", job["stage"], f"{job['id']}.ipynb"))}


def execute(job: dict, output_dir: str, threads: int | None, device: str | None = None) -> dict:
    """Run one job's chapter with papermill, in a worker process that runs one job at a time
    (of the local pool, a Dask worker or a SLURM job). ``device``: the GPU its kernel may
    use (None: the worker's own, e.g. the one SLURM gave the job); ``threads`` (None: the
    worker's cores). The status records the device and host the kernel saw."""
    # both inherited by the kernel
    os.environ["OMP_NUM_THREADS"] = str(threads or usable_cores())
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    status = {**_new_status(job, output_dir), "host": socket.gethostname(),
              "device": os.environ.get("CUDA_VISIBLE_DEVICES")}
    Path(status["notebook"]).parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    try:
        # "immediate": once the last cell is done (every output written and closed), the
        # kernel's process group is killed rather than left to tear down torch and
        # torchvision, which takes 3 s of each job on a CPU (measured; the work is done)
        papermill.execute_notebook(str(CHAPTERS[job["stage"]]), status["notebook"],
                                   parameters=job["params"], kernel_name=KERNEL,
                                   cwd=str(ROOT), progress_bar=False, log_output=False,
                                   shutdown_kernel="immediate")
        status["status"] = "complete"
    except Exception as exc:  # recorded; the batch goes on
        status["status"] = "failed"
        status["error"] = "".join(traceback.format_exception_only(type(exc), exc))[-3000:]
    status["wall_s"] = round(time.time() - start, 2)
    return _write_status(Path(output_dir), status)


# ---- Devices: one job per GPU at a time --------------------------------------------------
def visible_gpus(cuda_visible_devices: str | None, count: int) -> list[str]:
    """The GPUs this process may use, as names for a kernel's ``CUDA_VISIBLE_DEVICES``: the
    entries of ours (indices or UUIDs, as given), else ``0 .. count-1``."""
    if cuda_visible_devices is None:
        return [str(i) for i in range(count)]
    return [d.strip() for d in cuda_visible_devices.split(",") if d.strip()][:count]


def device_slots(workers: int, gpus: list[str], cores: int) -> list[str | None]:
    """The jobs that may run at once on this machine, as the device each one holds: one per
    GPU (timing runs never share a device), else one per core (nor a core), at most
    ``workers``."""
    n = max(1, min(workers, cores, len(gpus) or cores))
    return gpus[:n] if gpus else [None] * n


def run_jobs(start, jobs: list, slots: list):
    """Start each job on a free slot, the next as soon as one frees: ``start(job, slot)``
    returns a future of the job's status. Yields the statuses as the jobs end."""
    free, pending, running = list(slots), list(jobs), {}
    while pending or running:
        while free and pending:
            slot = free.pop(0)
            running[start(pending.pop(0), slot)] = slot
        done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
        for future in done:
            free.append(running.pop(future))
            yield future.result()


# ---- Engines: where the jobs run ---------------------------------------------------------
# An engine runs `execute` unchanged, in a worker that reads and writes the same output
# folder (shared storage on a cluster); the stage order and the skips stay here.
EXECUTORS = {"local": None, "dask": "distributed", "submitit": "submitit"}


def runs_here(executor: str, cluster: str | None) -> bool:
    """Whether the jobs run on this machine (and so on its GPUs and cores)."""
    return (executor == "local" or (executor == "dask" and cluster in (None, "local"))
            or (executor == "submitit" and cluster in ("local", "debug")))


class EngineMissing(RuntimeError):
    """The chosen executor's package is not installed (it is optional)."""


def engine_module(executor: str):
    """The engine's package, imported only when it is chosen."""
    try:
        return importlib.import_module(EXECUTORS[executor])
    except ImportError:
        pin = next((line for line in (ROOT / "requirements.txt").read_text().splitlines()
                    if line.startswith(executor)), executor)
        raise EngineMissing(f"--executor {executor} needs a package that is not installed: "
                            f"pip install '{pin}' (pinned in requirements.txt)") from None


def _by_name():
    """``execute`` as the engines pickle it: by reference to this module (when run as a
    script it is ``__main__``, which a worker cannot import)."""
    return importlib.import_module("run_batch").execute


@contextlib.contextmanager
def _dask(cluster: str | None, workers: int, options: dict):
    distributed = engine_module("dask")
    with contextlib.ExitStack() as stack:
        if cluster in (None, "local"):  # processes, one job each: os.environ is per job
            cluster = stack.enter_context(distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True,
                dashboard_address=None, **options))
        client = stack.enter_context(distributed.Client(cluster))
        yield lambda *args: client.submit(_by_name(), *args, pure=False).result()


@contextlib.contextmanager
def _submitit(cluster: str | None, options: dict, output_dir: str):
    submitit = engine_module("submitit")
    executor = submitit.AutoExecutor(Path(output_dir, "submitit"),  # the jobs' logs
                                     cluster=cluster or "slurm")
    gpu = {"gpus_per_node": 1} if executor.cluster == "slurm" else {}
    executor.update_parameters(**{"name": "speedup", "timeout_min": 12 * 60, **gpu, **options})
    yield lambda *args: executor.submit(_by_name(), *args).result()


def _on_engine(run, job: dict, output_dir: str, threads, device) -> dict:
    """``run`` the job on its engine; an engine's own failure (a lost worker, a time limit)
    is recorded as the job's failure, as a notebook's is."""
    start = time.time()
    try:
        return run(job, output_dir, threads, device)
    except Exception as exc:
        return _write_status(Path(output_dir), {
            **_new_status(job, output_dir), "status": "failed",
            "error": f"the {type(exc).__name__} of the engine: {exc}"[-3000:],
            "wall_s": round(time.time() - start, 2)})


@contextlib.contextmanager
def open_engine(executor: str, workers: int, output_dir: str, cluster: str | None = None,
                options: dict | None = None):
    """Yield ``(start, slots)`` for ``run_jobs``: ``start(job, device)`` runs the job on the
    engine. On this machine the slots are its GPUs (or cores); a cluster places the jobs
    itself (a GPU per SLURM job, a GPU per Dask worker) and runs ``workers`` at once."""
    out = os.path.abspath(output_dir)  # a worker may start in another folder
    if runs_here(executor, cluster):
        gpus = visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"), torch.cuda.device_count())
        slots = device_slots(workers, gpus, usable_cores())
        if len(slots) < workers:
            tqdm.write(f"--workers {workers}: using {len(slots)}, one per "
                       f"{'GPU' if gpus else 'core'}, so that no two timed runs share one")
        threads = max(1, usable_cores() // len(slots))
    else:
        slots, threads = [None] * workers, None
    options = options or {}
    if executor == "local":
        with cf.ProcessPoolExecutor(len(slots)) as pool:
            yield (lambda job, device: pool.submit(execute, job, out, threads, device)), slots
        return
    # workers import run_batch from this checkout (a local cluster's, and SLURM jobs
    # through sbatch's default --export=ALL, inherit the variable; remote Dask workers are
    # started with it: README)
    path = os.environ.get("PYTHONPATH", "")
    if str(ROOT) not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), path]))
    engine = (_dask(cluster, len(slots), options) if executor == "dask"
              else _submitit(cluster, options, out))
    with engine as run, cf.ThreadPoolExecutor(len(slots)) as waiting:
        yield (lambda job, device: waiting.submit(_on_engine, run, job, out, threads, device),
               slots)


def run_plan(plan: dict, output_dir: str, workers: int, stages=STAGES,
             executor: str = "local", cluster: str | None = None,
             options: dict | None = None) -> dict:
    """Execute the plan stage by stage on ``executor`` (see ``open_engine``); returns {job
    id: status} of every job, including those completed before (``"before": True``) and
    those skipped for a failed input."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "plan.json", plan)
    with open_engine(executor, workers, output_dir, cluster, options) as (start, slots):
        return _run_stages(plan, out, stages, start, slots)


def _run_stages(plan: dict, out: Path, stages, start, slots) -> dict:
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
        with tqdm(total=len(todo), desc=desc, unit="job") as bar:
            # a job starts only when a slot is free, so a stop starts nothing new
            for status in run_jobs(start, todo, slots):  # a status that cannot be written:
                statuses[status["id"]] = status          # DiskFullError
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


def wall_time(hours: list[float], devices: int) -> float:
    """The wall time of a stage's jobs on ``devices`` as ``run_jobs`` runs them: in plan
    order, each on the device that frees first (a job's runs train one after another)."""
    free = [0.0] * devices
    for h in hours:
        heapq.heapreplace(free, free[0] + h)
    return max(free)


def print_estimate(plan: dict, output_dir: str, tflops: float | None,
                   gpus: list[int] = ()) -> None:
    table = estimate_study(plan, output_dir, tflops * 1e12 if tflops else None)
    by = table.groupby(["dataset", "version"], sort=False).hours.sum()
    print(by.round(2).to_string())
    speed = f"{tflops:g} TFLOP/s (assumed)" if tflops else "speeds measured on this machine"
    print(f"{len(table)} training runs, {table.train_pflops.sum():.1f} PFLOP of training, "
          f"{table.hours.sum():.1f} h at {speed}")
    hours = table.set_index("run").hours.fillna(0)
    jobs = [hours[job["runs"]].sum() for job in papermill_jobs(plan, "method")]
    for n in gpus:
        print(f"on {n} GPU(s): {wall_time(jobs, n):.1f} h of training wall time ({len(jobs)} "
              f"jobs; the longest {max(jobs):.1f} h, the total / {n} {sum(jobs) / n:.1f} h)")


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
    ap.add_argument("--gpus", nargs="+", type=int, default=[],
                    help="with --estimate: the training wall time on this many GPUs")
    ap.add_argument("--status", action="store_true", help="print runs done and time left")
    ap.add_argument("--executor", choices=EXECUTORS, default="local",
                    help="where jobs run: a process pool here (default), a Dask cluster, "
                         "SLURM through submitit")
    ap.add_argument("--cluster", help="dask: the scheduler's address (default: a local "
                    "cluster of --workers processes); submitit: slurm (default), local, debug")
    ap.add_argument("--executor-param", nargs="+", default=[], metavar="KEY=VALUE",
                    help="settings of the engine: submitit's update_parameters (e.g. "
                         "slurm_partition=gpu timeout_min=720 cpus_per_task=8), or "
                         "Dask's LocalCluster")
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
        print_estimate(plan, args.output_dir, args.tflops, args.gpus)
        return 0
    if args.status:
        print(study_status(plan, args.output_dir))
        return 0
    try:
        if runs_here(args.executor, args.cluster):  # a cluster's jobs run on its GPUs
            check_device(plan, args.allow_cpu)
        if EXECUTORS[args.executor]:
            engine_module(args.executor)
    except (NoGPUError, EngineMissing) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    workers = args.workers or profile.get("workers", 1)
    options = {k: yaml.safe_load(v) for k, _, v in (p.partition("=") for p in
                                                      args.executor_param)}
    start = time.time()
    try:
        with batch_lock(args.output_dir):
            statuses = run_plan(plan, args.output_dir, workers, args.stages, args.executor,
                                args.cluster, options)
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
