"""Run the study: every chapter, for every combination a profile asks for.

    python run_batch.py params/cv-demo.yaml [--output-dir _output] [--workers 2]
    python run_batch.py params/cv-full.yaml --estimate --tflops 6   # work and time only
    python run_batch.py params/cv-full.yaml --status                 # runs done, time left
    python run_batch.py params/cv-full.yaml --executor submitit --workers 14   # on SLURM

A profile (``params/*.yaml``) names the combinations; chapter 3's ``expand_plan``
(``speedup.study``) turns it into a plan of jobs in four stages (data prep ->
architectures -> method -> evaluation), checking every value before anything runs
(unknown keys and wrong types fail, naming the key and the file). Chapter 3's runner
(``run_plan``, the one the merged notebook uses too) runs it; this script gives it
papermill: each job executes its chapter notebook, in parallel within a stage, keeping
each executed notebook under ``<output>/notebooks/`` and each job's status under
``<output>/batch/``. A failed job is recorded and the batch goes on; the jobs that
depend on it are skipped (not started), naming it; the batch then exits 1 with
a summary. Re-running skips the jobs that completed with the same parameters and code
(and whose outputs, read back, are intact), and a training run interrupted mid-way
resumes from its last checkpoint. One batch at a time holds an output folder
(``<output>/batch.lock``); a disk that fills up stops the batch with a message. The
package ``speedup/`` must match the chapters (``make sync``), else the batch refuses.

Where jobs run: ``--executor local`` (default) runs them in a process pool on this
machine, each pinned to one of its GPUs (if any); ``dask`` and ``submitit`` hand the
same jobs to a Dask cluster or to SLURM (docs/scale-out.md).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import hashlib
import heapq
import importlib
import json
import multiprocessing
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

import nbformat
import papermill
import torch
import yaml
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.utils import run_sync
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
import nbexport  # noqa: E402
from speedup.files import write_json  # noqa: E402
from speedup.study import (  # noqa: E402  the plan and its runner: chapter 3
    JOB_SIZES, STAGE_CHAPTERS, STAGES, BatchLocked, DiskFullError, NoGPUError, ProfileError,
    check_device,
    diverged_runs, estimate_study, failure_summary, job_status, parameter_defaults,
    parse_profile, plan_jobs, run_costs, run_plan, status_path, study_status,
    ASSUMED_T4_TFLOPS, SESSION_HOURS, times_markdown, times_row,
)
from speedup.study import expand_plan as expand_chapter_plan  # noqa: E402

CHAPTERS = {stage: nbexport.chapter_path(STAGE_CHAPTERS[stage]) for stage in STAGES}
PARAMETER_STAGES = ("data_prep", "architectures", "evaluation")   # a chapter's parameters
KERNEL = "python3"


def parameters_source(stage: str) -> str:
    """The source of a chapter's ``parameters`` cell."""
    nb = nbformat.read(CHAPTERS[stage], as_version=4)
    return next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))


def chapter_defaults() -> dict:
    """The parameters of the stages whose settings a profile gives by chapter parameter
    (data, architectures, evaluation), as {stage: {name: default}}; the training runs'
    settings are checked by the classes that own them (chapter 3's ``setting_owners``)."""
    return {stage: parameter_defaults(parameters_source(stage)) for stage in PARAMETER_STAGES}


def load_profile(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ProfileError(f"profile {path} does not exist; profiles: "
                           f"{sorted(p.name for p in (ROOT / 'params').glob('*.yaml'))}")
    return parse_profile(path.read_text(), str(path))


def expand_plan(profile: dict, output_dir: str, cache_dir: str, seeds=None) -> dict:
    return expand_chapter_plan(profile, chapter_defaults(), output_dir, cache_dir, seeds)


def code_fingerprint(stage: str) -> str:
    """sha256 of what a job of ``stage`` runs: its chapter and the package (generated
    from the chapters). A job done by other code is run again; the chapter's own reuse
    checks (data versions by their settings, training runs by their key and data) decide
    what that costs, so a rerun after an edit redoes only what the edit changed."""
    digest = hashlib.sha256(Path(CHAPTERS[stage]).read_bytes())
    for path in sorted((ROOT / "speedup").glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def usable_cores() -> int:
    """The cores this process may run on (a SLURM job's allocation, not the whole node)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _notebook(job: dict, output_dir: str) -> str:
    return str(Path(output_dir, "notebooks", job["stage"], f"{job['id']}.ipynb"))


def execute(job: dict, output_dir: str, threads: int | None, device: str | None = None) -> dict:
    """Run one job's chapter with papermill, in a worker process that runs one job at a time
    (of the local pool, a Dask worker or a SLURM job). ``device``: the GPU its kernel may
    use (None: the worker's own, e.g. the one SLURM gave the job); ``threads`` (None: the
    worker's cores). The status records the device and host the kernel saw."""
    # both inherited by the kernel
    os.environ["OMP_NUM_THREADS"] = str(threads or usable_cores())
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    status = job_status(job, code_fingerprint(job["stage"]), host=socket.gethostname(),
                        device=os.environ.get("CUDA_VISIBLE_DEVICES"),
                        notebook=_notebook(job, output_dir))
    Path(status["notebook"]).parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    try:
        # "immediate": once the last cell is done (every output written and closed), the
        # kernel's process group is killed rather than left to tear down torch and
        # torchvision, which takes 3 s of each job on a CPU (measured; the work is done)
        execute_notebook(CHAPTERS[job["stage"]], status["notebook"], job["params"],
                         cwd=str(ROOT), log_output=False, shutdown_kernel="immediate")
        status["status"] = "complete"
    except Exception as exc:  # recorded; the batch goes on
        status["status"] = "failed"
        status["error"] = "".join(traceback.format_exception_only(type(exc), exc))[-3000:]
    status["wall_s"] = round(time.time() - start, 2)
    write_json(status_path(output_dir, job), status)
    return status


class IPCKernelManager(AsyncKernelManager):
    """A kernel that talks over Unix sockets in a private folder of its own instead of TCP:
    nothing listens on the network, and ipykernel has no "running over TCP without
    encryption" warning to print at every job. The folder is the kernel's alone: kernels
    started at the same instant pick their socket numbers without seeing each other's."""

    def __init__(self, **kwargs):
        folder = tempfile.mkdtemp(prefix="kernel-")   # mode 700
        super().__init__(**{"transport": "ipc", "ip": os.path.join(folder, "ipc"), **kwargs})
        self._folder = folder

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            shutil.rmtree(self._folder, ignore_errors=True)

    cleanup_resources = run_sync(_async_cleanup_resources)


def execute_notebook(source, output, parameters: dict, **options):
    """papermill's run of one notebook, in a python3 kernel on IPC sockets, no progress bar
    (``options``: papermill's, e.g. ``cwd``)."""
    return papermill.execute_notebook(str(source), str(output), parameters=parameters,
                                      kernel_name=KERNEL, progress_bar=False,
                                      kernel_manager_class=IPCKernelManager, **options)


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
        status = job_status(job, code_fingerprint(job["stage"]), status="failed",
                            notebook=_notebook(job, output_dir),
                            error=f"the {type(exc).__name__} of the engine: {exc}"[-3000:],
                            wall_s=round(time.time() - start, 2))
        write_json(status_path(output_dir, job), status)
        return status


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
        # spawned, not forked: a fork copies no threads, so a child of a process that ran a
        # notebook in-process (nbclient's event-loop thread) or touched CUDA would hang or fail
        spawn = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(len(slots), mp_context=spawn) as pool:
            yield (lambda job, device: pool.submit(execute, job, out, threads, device)), slots
        return
    # workers import run_batch from this checkout (a local cluster's, and SLURM jobs
    # through sbatch's default --export=ALL, inherit the variable; remote Dask workers are
    # started with it: docs/scale-out.md)
    path = os.environ.get("PYTHONPATH", "")
    if str(ROOT) not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), path]))
    engine = (_dask(cluster, len(slots), options) if executor == "dask"
              else _submitit(cluster, options, out))
    with engine as run, cf.ThreadPoolExecutor(len(slots)) as waiting:
        yield (lambda job, device: waiting.submit(_on_engine, run, job, out, threads, device),
               slots)


def run_batch(plan: dict, output_dir: str, workers: int, stages=STAGES,
              executor: str = "local", cluster: str | None = None,
              options: dict | None = None, job_size: str | None = None) -> dict:
    """Execute the plan with chapter 3's runner, each job a papermill notebook on
    ``executor`` (see ``open_engine``); returns {job id: status} of every job, including
    those completed before (``"before": True``) and those skipped for a failed input.
    ``job_size``: a job per case (the default here) or per run (a cluster's default)."""
    job_size = job_size or ("case" if runs_here(executor, cluster) else "run")
    codes = {stage: code_fingerprint(stage) for stage in stages}
    with open_engine(executor, workers, output_dir, cluster, options) as (start, slots):
        return run_plan(plan, output_dir, start, slots=slots, stages=stages,
                        job_size=job_size, codes=codes)


def wall_time(hours: list[float], devices: int) -> float:
    """The wall time of a stage's jobs on ``devices`` as ``run_jobs`` runs them: in plan
    order, each on the device that frees first (a job's runs train one after another)."""
    free = [0.0] * devices
    for h in hours:
        heapq.heapreplace(free, free[0] + h)
    return max(free)


def print_estimate(plan: dict, output_dir: str, tflops: float | None,
                   gpus: list[int] = (), job_size: str = "case") -> None:
    table = estimate_study(plan, output_dir, tflops * 1e12 if tflops else None)
    by = table.groupby(["dataset", "version"], sort=False).hours.sum()
    print(by.round(2).to_string())
    speed = f"{tflops:g} TFLOP/s (assumed)" if tflops else "speeds measured on this machine"
    print(f"{len(table)} training runs, {table.train_pflops.sum():.1f} PFLOP of training, "
          f"{table.hours.sum():.1f} h at {speed}")
    hours = table.set_index("run").hours.fillna(0)
    costs = run_costs(plan, output_dir)
    jobs = [hours[job["runs"]].sum() for job in plan_jobs(plan, "method", job_size, costs)]
    for n in gpus:
        print(f"on {n} GPU(s): {wall_time(jobs, n):.1f} h of training wall time ({len(jobs)} "
              f"jobs of a {job_size}, longest first; the longest {max(jobs):.1f} h, the "
              f"total / {n} {sum(jobs) / n:.1f} h)")


TIMES = ROOT / "docs" / "times.md"
TIMES_HEAD = """\
# How long each GPU profile takes

*Generated by `python run_batch.py --times` from `params/*.yaml`: README.md and
speedup.ipynb quote this table; a test checks it is current.* Training time from the FLOP
count of every run (chapter 3's `run_work`: every step at its input size, the validation
passes and the test) at an assumed T4 speed of {cv:g} TFLOP/s for the CNNs and {nlp:g} for
the transformers (no T4 was measured; the notebook measures the GPU it runs on before any
download). Sessions: free Colab sessions of up to {session:g} h of training each, resumed from
Drive. Drive: the versions, the results and one checkpoint. Add the data stage: downloads
(Caltech-256 1.2 GB, VOC 2012 1.9 GB, BookCorpus 1.2 GB plus ~3 min of extraction, Yahoo
~0.5 GB) and ~1 min per dataset to build its versions.

"""


def time_table() -> str:
    """docs/times.md: every GPU profile's runs, work, time on a T4, sessions and Drive."""
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for path in sorted((ROOT / "params").glob("*.yaml")):
            plan = expand_plan(load_profile(path), scratch, scratch)
            if plan["requires_gpu"]:
                table = estimate_study(plan, scratch, ASSUMED_T4_TFLOPS[plan["task"]] * 1e12)
                rows.append(times_row(plan, table))
    order = {"smoke": 0, "colab": 1, "full": 2}
    rows.sort(key=lambda r: (r["profile"].split("-")[0], order.get(r["profile"].split("-")[1], 3)))
    head = TIMES_HEAD.format(session=SESSION_HOURS, **ASSUMED_T4_TFLOPS)
    return head + times_markdown(rows) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("profile", nargs="?", help="a params/*.yaml file")
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
    ap.add_argument("--job-size", choices=JOB_SIZES, default=None,
                    help="a method job trains one case's runs (default here) or one run "
                         "(default on a cluster: spreads a case's runs over its GPUs)")
    ap.add_argument("--executor-param", nargs="+", default=[], metavar="KEY=VALUE",
                    help="settings of the engine: submitit's update_parameters (e.g. "
                         "slurm_partition=gpu timeout_min=720 cpus_per_task=8), or "
                         "Dask's LocalCluster")
    ap.add_argument("--times", action="store_true",
                    help=f"write {TIMES.relative_to(ROOT)}, every GPU profile's time, and exit")
    args = ap.parse_args(argv)
    if args.times:
        TIMES.write_text(time_table())
        print(f"wrote {TIMES}")
        return 0
    if args.profile is None:
        ap.error("a profile is needed (or --times)")
    stale = nbexport.stale_modules()
    if stale:
        print(f"error: {', '.join(stale)} differ(s) from the chapters (edited without "
              "`make sync`?): run `make sync` (python nbexport.py), then again",
              file=sys.stderr)
        return 2
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
        print_estimate(plan, args.output_dir, args.tflops, args.gpus,
                       args.job_size or ("case" if runs_here(args.executor, args.cluster)
                                         else "run"))
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
        statuses = run_batch(plan, args.output_dir, workers, args.stages, args.executor,
                             args.cluster, options, args.job_size)
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
