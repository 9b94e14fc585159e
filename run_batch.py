"""Run the study: every chapter, for every combination a profile asks for.

    python run_batch.py params/cv-demo.yaml [--output-dir _output] [--workers 2]

A profile (``params/*.yaml``) names the combinations; this script expands it
into a plan of papermill jobs in four stages (data prep -> architectures ->
method -> evaluation), checks every parameter against the chapter's own
``parameters`` cell (unknown keys and wrong types fail before anything runs),
and executes the jobs, in parallel within a stage. Each executed notebook is
kept under ``<output>/notebooks/``; each job's status under ``<output>/batch/``.
A failed job is recorded and the batch goes on; re-running skips the jobs that
already completed with the same parameters.
"""
from __future__ import annotations

import argparse
import ast
import concurrent.futures as cf
import itertools
import json
import os
import sys
import time
import traceback
from pathlib import Path

import papermill
import yaml
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parent
CHAPTERS = {
    "data_prep": ROOT / "chapters" / "01_data_prep.ipynb",
    "architectures": ROOT / "chapters" / "02_architectures.ipynb",
    "method": ROOT / "chapters" / "03_method.ipynb",
    "evaluation": ROOT / "chapters" / "04_evaluation.ipynb",
}
STAGES = list(CHAPTERS)
PROFILE_KEYS = {"task", "profile", "label", "workers", *STAGES}
STAGE_KEYS = {
    "data_prep": {"datasets", "params", "per_dataset"},
    "architectures": {"params"},
    "method": {"archs", "curricula", "seeds", "params", "per_arch", "per_dataset", "tuning"},
    "evaluation": {"params"},
}
TUNING_KEYS = {"dataset", "version", "curriculum", "grid"}
KERNEL = "python3"


class ProfileError(ValueError):
    """A profile that names an unknown key or gives a value of the wrong type."""


def chapter_defaults(stage: str) -> dict:
    """The chapter's parameters cell, as {name: default value}."""
    spec = papermill.inspect_notebook(str(CHAPTERS[stage]))
    return {name: ast.literal_eval(p["default"]) for name, p in spec.items()}


def check_params(stage: str, params: dict, where: str, defaults: dict) -> None:
    """Unknown names and wrong types fail here, naming the key and the file."""
    for key, value in params.items():
        if key not in defaults:
            raise ProfileError(f"{where}: unknown parameter '{key}' for {stage}; "
                               f"known: {sorted(defaults)}")
        want = type(defaults[key])
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        ok = ok or (want is float and isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            raise ProfileError(f"{where}: parameter '{key}' must be {want.__name__}, "
                               f"got {type(value).__name__} {value!r}")


def check_keys(section: dict, allowed: set, where: str) -> None:
    if not isinstance(section, dict):
        raise ProfileError(f"{where}: expected a mapping, got {type(section).__name__}")
    unknown = set(section) - allowed
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) {sorted(unknown)}; "
                           f"allowed: {sorted(allowed)}")


def load_profile(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ProfileError(f"profile {path} does not exist; profiles: "
                           f"{sorted(p.name for p in (ROOT / 'params').glob('*.yaml'))}")
    profile = yaml.safe_load(path.read_text())
    check_keys(profile, PROFILE_KEYS, str(path))
    for stage in STAGES:
        if stage not in profile:
            raise ProfileError(f"{path}: missing section '{stage}'")
        check_keys(profile[stage], STAGE_KEYS[stage], f"{path}: {stage}")
    profile["_path"] = str(path)
    return profile


def expand_plan(profile: dict, output_dir: str, cache_dir: str) -> dict:
    """Every job of the study, with its full parameters, in stage order."""
    src = profile["_path"]
    task = profile.get("task", "cv")
    defaults = {s: chapter_defaults(s) for s in STAGES}
    stages: dict[str, list] = {}

    def job(stage, ident, params, where, **extra):
        check_params(stage, params, f"{src}: {where}", defaults[stage])
        full = {**defaults[stage], **params, "output_dir": output_dir}
        if "task" in full:
            full["task"] = task
        if "cache_dir" in full:
            full["cache_dir"] = cache_dir
        return {"id": ident, "stage": stage, "params": full, **extra}

    dp = profile["data_prep"]
    sizes = {}
    stages["data_prep"] = []
    for ds in dp["datasets"]:
        params = {**dp.get("params", {}), **dp.get("per_dataset", {}).get(ds, {}), "dataset": ds}
        j = job("data_prep", f"data-{ds}", params, f"data_prep ({ds})")
        sizes[ds] = list(j["params"]["sizes"])
        stages["data_prep"].append(j)

    arch = profile["architectures"].get("params", {})
    stages["architectures"] = [job("architectures", "architectures",
                                   {**arch, "datasets": list(dp["datasets"])}, "architectures")]

    from speedup.method import run_id  # the chapter that names runs
    m = profile["method"]
    method: dict[str, dict] = {}

    def add_run(params, where, main=False, varied=None):
        j = job("method", "", params, where)
        j["params"].pop("variants")  # a plan entry is one run; see papermill_jobs
        j["id"] = j["params"]["run_name"] = run_id(j["params"])
        old = method.setdefault(j["id"], {**j, "main": False, "varied": []})
        old["main"] = old["main"] or main
        if varied and varied not in old["varied"]:
            old["varied"].append(varied)  # the default point belongs to every grid line

    def run_params(arch_name, ds):
        """Profile-wide settings, then the dataset's, then the architecture's."""
        return {**m.get("params", {}), **m.get("per_dataset", {}).get(ds, {}),
                **m.get("per_arch", {}).get(arch_name, {})}

    for arch_name, ds, seed, cur in itertools.product(m["archs"], dp["datasets"],
                                                      m.get("seeds", [0]), m["curricula"]):
        for version in sizes[ds]:
            params = {**run_params(arch_name, ds), "arch": arch_name, "dataset": ds,
                      "version": version, "curriculum": cur, "seed": seed}
            add_run(params, f"method ({arch_name}, {ds}, {version}, {cur})", main=True)
    tuning = m.get("tuning")
    if tuning:
        check_keys(tuning, TUNING_KEYS, f"{src}: method.tuning")
        for arch_name, (hp, values) in itertools.product(m["archs"], tuning["grid"].items()):
            for value, seed in itertools.product(values, m.get("seeds", [0])):
                params = {**run_params(arch_name, tuning["dataset"]),
                          "arch": arch_name, "dataset": tuning["dataset"],
                          "version": tuning["version"], "curriculum": tuning["curriculum"],
                          "seed": seed, hp: value}
                add_run(params, f"method.tuning ({arch_name}, {hp}={value})", varied=hp)
    stages["method"] = list(method.values())

    ev = profile["evaluation"].get("params", {})
    stages["evaluation"] = [job("evaluation", "evaluation", ev, "evaluation")]
    method_defaults = {**defaults["method"], **m.get("params", {})}
    return {"task": task, "profile": profile.get("profile", Path(src).stem),
            "label": profile.get("label", ""), "source": src,
            "method_defaults": method_defaults, "stages": stages}


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
        case = f"{p['arch']}-{p['dataset']}-{p['version']}-s{p['seed']}"
        groups.setdefault(case if run["main"] else f"tuning-{case}", []).append(run)
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


def is_complete(output_dir: Path, job: dict) -> bool:
    path = _status_path(output_dir, job)
    if not path.exists():
        return False
    status = json.loads(path.read_text())
    return status.get("status") == "complete" and status.get("params") == job["params"]


def execute(job: dict, output_dir: str, threads: int) -> dict:
    """Run one job's chapter with papermill (in a worker process)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by the kernel
    out = Path(output_dir, "notebooks", job["stage"], f"{job['id']}.ipynb")
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    status = {"id": job["id"], "stage": job["stage"], "params": job["params"],
              "notebook": str(out)}
    try:
        papermill.execute_notebook(str(CHAPTERS[job["stage"]]), str(out),
                                   parameters=job["params"], kernel_name=KERNEL,
                                   cwd=str(ROOT), progress_bar=False, log_output=False)
        status["status"] = "complete"
    except Exception as exc:  # recorded; the batch goes on
        status["status"] = "failed"
        status["error"] = "".join(traceback.format_exception_only(type(exc), exc))[-3000:]
    status["wall_s"] = round(time.time() - start, 2)
    path = _status_path(Path(output_dir), job)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(status, indent=1))
    return status


def run_plan(plan: dict, output_dir: str, workers: int, stages=STAGES) -> list[dict]:
    """Execute the plan stage by stage; return the status of every job that ran."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps(plan, indent=1))
    threads = max(1, (os.cpu_count() or 1) // workers)
    ran = []
    for stage in stages:
        jobs = papermill_jobs(plan, stage)
        # Evaluation is cheap and reads everything: always redo it.
        todo = [j for j in jobs if stage == "evaluation" or not is_complete(out, j)]
        skipped = len(jobs) - len(todo)
        desc = f"{stage} ({skipped} done before)" if skipped else stage
        with cf.ProcessPoolExecutor(max_workers=max(1, min(workers, len(todo) or 1))) as pool, \
                tqdm(total=len(todo), desc=desc, unit="job") as bar:
            futures = [pool.submit(execute, j, output_dir, threads) for j in todo]
            for fut in cf.as_completed(futures):
                status = fut.result()
                ran.append(status)
                mark = "ok  " if status["status"] == "complete" else "FAIL"
                bar.write(f"  {mark} {status['id']}  {status['wall_s']:.1f}s"
                          + ("" if status["status"] == "complete"
                             else f"\n       {status['error'].strip().splitlines()[-1]}"
                                  f"\n       see {status['notebook']}"))
                bar.update()
    return ran


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("profile", help="a params/*.yaml file")
    ap.add_argument("--output-dir", default="_output")
    ap.add_argument("--cache-dir", default="_cache")
    ap.add_argument("--workers", type=int, default=None,
                    help="parallel jobs (default: the profile's 'workers', else 1)")
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=STAGES)
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import nbmodule  # noqa: F401  makes `speedup.<topic>` importable
    try:
        profile = load_profile(args.profile)
        plan = expand_plan(profile, args.output_dir, args.cache_dir)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = {s: len(plan["stages"][s]) for s in STAGES}
    print(f"{plan['source']}: {counts}")
    if args.dry_run:
        print(json.dumps(plan, indent=1))
        return 0
    workers = args.workers or profile.get("workers", 1)
    start = time.time()
    ran = run_plan(plan, args.output_dir, workers, args.stages)
    failed = [s for s in ran if s["status"] != "complete"]
    print(f"batch: {len(ran)} jobs run, {len(failed)} failed, {time.time() - start:.0f}s; "
          f"outputs in {args.output_dir}/")
    for s in failed:
        print(f"  failed: {s['id']} -> {s['notebook']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
