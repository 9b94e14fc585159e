"""The demo's full-budget baselines, run as the demo runs them (its plan's settings), and
chapter 4's informative-range check on them: tests/test_informative_{cv,nlp}.py."""
from pathlib import Path

import run_batch
from speedup.prepare import prepare_dataset
from speedup.protocol import informative_ranges
from speedup.results import load_results, with_roles
from speedup.train import RunConfig, run_training

ROOT = Path(__file__).resolve().parents[1]


def demo_baseline_ranges(task: str, output_dir: Path):
    """Every demo case's seed-0 full-budget baseline, trained; chapter 4's ranges of them."""
    profile = run_batch.load_profile(ROOT / "params" / f"{task}-demo.yaml")
    plan = run_batch.expand_plan(profile, str(output_dir), str(output_dir / "cache"))
    for job in plan["stages"]["data_prep"]:
        prepare_dataset(**job["params"], show=False)
    baselines = [j for j in plan["stages"]["method"]
                 if j["main"] and j["params"]["arm"] == "baseline"
                 and j["params"]["budget"] == 1.0 and j["params"]["seed"] == 0]
    for job in baselines:
        run_training(RunConfig.from_flat({**job["params"], "num_threads": 1}))
    return baselines, informative_ranges(with_roles(load_results(str(output_dir)), plan))
