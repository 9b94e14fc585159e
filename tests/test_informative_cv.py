"""Every case of the cv demo is informative: its full-budget baseline lands where a target
says something (chapter 4, informative_ranges). Trains the demo's seed-0 baselines (~2 min)."""
from informative import demo_baseline_ranges


def test_every_cv_demo_case_is_informative(tmp_path):
    baselines, ranges = demo_baseline_ranges("cv", tmp_path)
    print(ranges.to_string())
    assert len(ranges) == len(baselines) == 12, "2 architectures x 2 datasets x 3 versions"
    outside = ranges[~ranges.informative]
    assert outside.empty, f"cases outside their informative range:\n{outside.to_string()}"
