"""Adding an arm to the study is one cell plus one profile line.

A copy of the project gets one new cell in chapter 3 (a registered arm class with a setting
of its own, its default tuning grid beside it) and a profile that names the arm; after
`make sync` the real batch runs it (papermill, fresh kernels) through training, its tuning
grid and the evaluation, whose tables and figures then show it beside the baseline.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]

TOY_ARM = '''#| export arms
@register_arm
@dataclass(frozen=True)
class FixedSmall(Arm):
    """A toy arm: trains at ``fixed_scale`` x the full size throughout."""
    name, label, color, tasks = "toy", "toy arm (small inputs)", "#2ca02c", ("cv",)
    grid = {"fixed_scale": [0.5, 0.75]}
    fixed_scale: float = 0.5     # a knob no other arm has

    def size(self, progress: float, full_size: int) -> int:
        return max(4, round(full_size * self.fixed_scale / 4) * 4)'''

PROFILE = {
    "task": "cv", "profile": "toy", "label": "test profile: sample data, tiny models",
    "workers": 2,
    "data_prep": {"datasets": ["caltech256"],
                  "params": {"source": "sample", "sizes": {"60KB": 60000},
                             "short_sides": {"60KB": 24}}},
    "architectures": {"params": {"archs": ["resnet18"], "width": 8, "input_sizes": [12, 24]}},
    "method": {"archs": ["resnet18"], "arms": ["baseline", "toy"], "seeds": [0, 1],
               "budgets": [0.5],
               "params": {"width": 8, "epochs": 2, "batch_size": 32, "eval_points": 4},
               "tuning": {"datasets": ["caltech256"], "version": "60KB",
                          "grids": {"baseline": {"lr": [0.05, 0.1]}}}},  # toy: its own
    "evaluation": {"params": {"target_fraction": 0.9}},
}


def _project_copy(dest: Path) -> Path:
    dest.mkdir()
    for name in ("run_batch.py", "nbexport.py"):
        shutil.copy(ROOT / name, dest / name)
    for name in ("chapters", "speedup"):
        shutil.copytree(ROOT / name, dest / name)
    return dest


def test_a_toy_arm_added_as_one_cell_runs_through_the_batch_and_the_evaluation(tmp_path):
    project = _project_copy(tmp_path / "project")
    path = project / "chapters" / "03_method.ipynb"
    book = nbformat.read(path, as_version=4)
    registry = next(i for i, c in enumerate(book.cells) if "def register_arm" in c.source)
    book.cells.insert(registry + 1, nbformat.v4.new_code_cell(TOY_ARM))
    nbformat.write(book, path)
    subprocess.run([sys.executable, "nbexport.py"], cwd=project, check=True)   # make sync
    profile = tmp_path / "toy.yaml"
    profile.write_text(yaml.safe_dump(PROFILE))
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(project / "run_batch.py"), str(profile),
                           "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"),
                           "--stages", "data_prep", "tuning", "selection", "method",
                           "evaluation"],  # no model table
                          cwd=project, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    plan = json.loads((out / "plan.json").read_text())
    assert plan["tuning_trials"] == {"baseline": 2, "toy": 2}
    toy = [j for j in plan["stages"]["method"] if j["params"]["arm"] == "toy"]
    assert {j["params"]["seed"] for j in toy if j["main"]} == {0, 1}
    for run in toy:
        result = json.loads((out / "results" / f"{run['id']}.json").read_text())
        side = 12 if run["params"]["fixed_scale"] == 0.5 else 16  # 24 px x the scale
        assert all(h["mean_input_size"] == side for h in result["history"])
        # the toy's runs are keyed by its own knob: the baseline's are not
        assert "fixed_scale" in result["key"]
    grid = [j for j in plan["stages"]["tuning"] if j["params"]["arm"] == "toy"]
    assert {j["params"]["fixed_scale"] for j in grid} == {0.5, 0.75}   # its class's grid
    baseline = next(j for j in plan["stages"]["method"] if j["params"]["arm"] == "baseline")
    assert "fixed_scale" not in json.loads(
        (out / "results" / f"{baseline['id']}.json").read_text())["key"]
    # the evaluation names the new arm by its label, beside the baseline
    assert "toy arm (small inputs)" in (out / "tables" / "speedup.md").read_text()
    assert "toy arm (small inputs)" in (out / "tables" / "speedup_summary.md").read_text()
    for name in ("frontier.png", "reached.png", "tuning.png"):
        assert (out / "figures" / name).stat().st_size > 10_000
