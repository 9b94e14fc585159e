"""`make test-colab`: run the merged notebook's demo under Colab's library versions.

    python3 check_colab.py [--task cv|nlp ...]

Outside CI (it downloads about 1.5 GB of wheels the first time). It builds
`.venv-colab` from `requirements-colab.txt` with Python 3.13, Colab's Python (pyenv
3.13.x here; COLAB_PYTHON=/path/to/python picks another), then, for each task, copies
the current `speedup.ipynb` into a fresh empty folder and runs it there with papermill,
as Colab would run it: `-p profile demo` (cv) and `-p task nlp -p profile demo
-p output_dir _output_nlp` (nlp). It checks that each executed notebook has no error
output and no failed job, that every run of the plan completed, and that the figures,
tables/speedup.md, the deck (slides.pptx) and results exist; it prints each run's wall
time, any traceback or warning the notebook printed, and Colab's package versions
against those installed.
The run folders are left in /tmp for inspection. Exits 1 if a check fails. papermill,
nbclient, ipykernel and pyyaml are in the venv only to drive the notebook; the notebook
itself imports none of them.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv-colab"
PY = VENV / "bin" / "python"
REQS = ROOT / "requirements-colab.txt"
# Colab's runtime, August 2026 (shared/spec/facts.md, from googlecolab/backend-info).
COLAB = {"python": "3.13", "torch": "2.11", "torchvision": "0.26", "transformers": "5.15",
         "datasets": "4.0.0", "tokenizers": "0.22", "numpy": "2.1.3", "pandas": "2.2.3",
         "pillow": "11.3", "scikit-learn": "1.6.1", "matplotlib": "3.10", "pyarrow": "18.1",
         "tqdm": "4.67", "ipywidgets": "7.7.1", "iterative-stratification": "(pip-installed)",
         "huggingface-hub": "?", "scipy": "?", "papermill": "(not used)"}
TASKS = {"cv": {"profile": "demo"},
         "nlp": {"task": "nlp", "profile": "demo", "output_dir": "_output_nlp"}}
FIGURES = ("schedule", "tuning", "convergence", "curves", "reached", "speedup",
           "final_performance", "frontier")


def colab_python() -> str:
    found = [os.environ.get("COLAB_PYTHON"),
             *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.13*/bin/python"))),
             shutil.which("python3.13")]  # pyenv's shim fails unless 3.13 is selected
    for python in filter(None, found):
        if subprocess.run([python, "-c", "import sys; assert sys.version_info[:2] == (3, 13)"],
                          capture_output=True).returncode == 0:
            return python
    sys.exit("no Python 3.13 found: set COLAB_PYTHON=/path/to/python3.13")


def ensure_venv() -> None:
    """Create .venv-colab and install requirements-colab.txt (again when it changed)."""
    stamp = VENV / ".installed"
    if stamp.exists() and stamp.stat().st_mtime >= REQS.stat().st_mtime:
        return
    start = time.time()
    if not PY.exists():
        subprocess.run([colab_python(), "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(PY), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "-r", str(REQS)], check=True)
    # the kernel papermill starts (kernel_name python3) must be this venv's Python
    subprocess.run([str(PY), "-m", "ipykernel", "install", "--sys-prefix", "--name",
                    "python3", "--display-name", "Python 3"], check=True,
                   stdout=subprocess.DEVNULL)
    stamp.touch()
    print(f".venv-colab installed in {time.time() - start:.0f} s")


def installed_versions() -> dict:
    code = ("import json, platform, importlib.metadata as m\n"
            f"names = {[n for n in COLAB if n != 'python']!r}\n"
            "def version(n):\n    try:\n        return m.version(n)\n"
            "    except m.PackageNotFoundError:\n        return '-'\n"
            "v = {n: version(n) for n in names}\n"
            "v['python'] = platform.python_version()\nprint(json.dumps(v))")
    return json.loads(subprocess.run([str(PY), "-c", code], check=True, text=True,
                                     capture_output=True).stdout)


def matched(colab: str, here: str) -> str:
    if not re.fullmatch(r"[\d.]+", colab):
        return "n/a"
    return "yes" if here.split("+")[0].split(".")[:colab.count(".") + 1] == \
        colab.split(".") else "no"


def run_task(notebook: Path, task: str) -> tuple[float, list[str]]:
    """Run the notebook for one task in a fresh empty folder; returns (seconds, problems)."""
    params = TASKS[task]
    work = Path(tempfile.mkdtemp(prefix=f"colab-{task}-"))
    args = [a for k, v in params.items() for a in ("-p", k, v)]
    cmd = [str(PY), "-m", "papermill", str(notebook), str(work / "speedup.out.ipynb"), *args,
           "-k", "python3", "--cwd", str(work), "--no-progress-bar"]
    print(f"\n[{task}] {' '.join(cmd[1:])}", flush=True)
    start = time.time()
    proc = subprocess.run(cmd, text=True, capture_output=True)
    seconds = time.time() - start
    problems = [] if proc.returncode == 0 else [f"papermill exited {proc.returncode}: "
                                                 + proc.stderr.strip().splitlines()[-1]]
    out_nb = work / "speedup.out.ipynb"
    if not out_nb.exists():
        return seconds, problems + ["no executed notebook"]
    nb = json.loads(out_nb.read_text())
    kernel_py = nb["metadata"].get("language_info", {}).get("version", "?")
    if not kernel_py.startswith(COLAB["python"]):
        problems.append(f"the kernel ran Python {kernel_py}, not {COLAB['python']}")
    for cell in nb["cells"]:
        for o in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            text = "".join(o.get("text", ""))
            if o["output_type"] == "error":
                problems.append(f"error in cell {cell.get('id')}: {o['ename']}: {o['evalue']}")
            elif "Traceback" in text:  # run_jobs prints a failed job's traceback and goes on
                problems.append(f"traceback in cell {cell.get('id')}:\n{text.strip()}")
            elif "Warning" in text:
                print(f"  warning in cell {cell.get('id')}:",
                      *sorted({line.strip() for line in text.splitlines()
                               if "Warning" in line}), sep="\n    ")
    last = "".join("".join(o.get("text", "")) for o in nb["cells"][-1].get("outputs", []))
    if not re.search(r"all \d+ jobs complete|failed jobs: none", last):  # new | old merge
        problems.append(f"the last cell does not say all jobs completed: {last.strip()!r}")
    out = work / params.get("output_dir", "_output")
    plan = json.loads((out / "plan.json").read_text()) if (out / "plan.json").exists() else {}
    for run in plan.get("stages", {}).get("method", []):
        result = out / "results" / f"{run['id']}.json"
        if not result.exists() or json.loads(result.read_text())["status"] != "complete":
            problems.append(f"run {run['id']} has no complete result")
    for name in FIGURES:
        if not (out / "figures" / f"{name}.png").exists():
            problems.append(f"missing figure {name}.png")
    table = out / "tables" / "speedup.md"
    if not table.exists() or "Primary comparison" not in table.read_text():
        problems.append("tables/speedup.md missing or without its primary comparison")
    if not (out / "slides.pptx").is_file():
        problems.append("no slides.pptx: the notebook's deck cell wrote no deck")
    if not plan:
        problems.append("no plan.json")
    print(f"[{task}] {seconds:.0f} s, {len(plan.get('stages', {}).get('method', []))} "
          f"training runs, output in {work}: {'OK' if not problems else 'FAILED'}")
    for problem in problems:
        print("  -", problem.replace("\n", "\n    "))
    return seconds, problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", choices=TASKS, action="append", help="default: both")
    args = ap.parse_args(argv)
    ensure_venv()
    snapshot = Path(tempfile.mkdtemp(prefix="colab-nb-")) / "speedup.ipynb"
    shutil.copy(ROOT / "speedup.ipynb", snapshot)  # others may regenerate it meanwhile
    print(f"speedup.ipynb sha256 {hashlib.sha256(snapshot.read_bytes()).hexdigest()[:12]}")
    setup = next(c for c in json.loads(snapshot.read_text())["cells"]
                 if c.get("id") == "gen-colab-setup")
    for extra in re.findall(r"'([\w.-]+==[\w.]+)'", "".join(setup["source"])):
        if extra not in REQS.read_text():
            print(f"warning: the setup cell installs {extra}, not what {REQS.name} pins")
    timings, failed = {}, False
    for task in args.task or list(TASKS):
        timings[task], problems = run_task(snapshot, task)
        failed |= bool(problems)
    versions = installed_versions()
    print(f"\n{'package':26} {'Colab':18} {'.venv-colab':14} matched")
    for name, colab in COLAB.items():
        print(f"{name:26} {colab:18} {versions[name]:14} {matched(colab, versions[name])}")
    print("\nwall time:", ", ".join(f"{t} {s:.0f} s" for t, s in timings.items()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
