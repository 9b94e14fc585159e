"""The text pair's report: speedup.ipynb runs the whole nlp test study on its own (minutes,
once, in this file's module fixture), and its deck passes the same checks as the image
pair's.

The checks are test_report.py's, imported here: pytest runs an imported test function
with this module's fixtures, so `demo_notebook_run` and `rendered` below are the text
pair's.
"""
import json
from pathlib import Path

import pytest
import yaml

from test_report import (  # noqa: F401  the deck checks run again, on this deck
    check_evaluation_outputs, check_validation_passes, notebook_deck, run_merged_notebook,
    test_a_figure_fills_its_slide_at_the_size_it_was_drawn,
    test_content_slides_state_their_finding_in_a_sentence,
    test_deck_covers_the_required_topics_in_order_in_four_sections,
    test_everything_stays_on_its_slide, test_figures_and_labels_are_on_the_slides,
    test_merged_notebook_reports_no_failures, test_outputs_say_they_are_generated,
    test_tables_are_readable, test_the_deck_passes_the_rendered_check,
    test_the_talk_fits_eleven_minutes_and_every_section_its_budget)

ARCHS = ("bert", "gpt1")
DATASETS = ("yahoo_answers", "bookcorpus")
PROFILE = Path(__file__).resolve().parents[1] / "params" / "nlp-test.yaml"
VERSIONS = tuple(yaml.safe_load(PROFILE.read_text())["data_prep"]["params"]["sizes"])
ARMS = ("baseline", "progressive", "difficulty")


@pytest.fixture(scope="module")
def demo_notebook_run(tmp_path_factory):
    """The text pair's test study, run by speedup.ipynb with task=nlp, profile=test."""
    return run_merged_notebook(tmp_path_factory.mktemp("colab-nlp"), task="nlp",
                               profile="test")


@pytest.fixture(scope="module")
def rendered(demo_notebook_run):
    """The text pair's deck as speedup.ipynb wrote it: the rendered check runs on it too."""
    return notebook_deck(demo_notebook_run / "_output")


def test_merged_notebook_runs_every_job_of_the_text_demo(demo_notebook_run):
    out = demo_notebook_run / "_output"
    plan = json.loads((out / "plan.json").read_text())
    assert plan["profile"] == "test" and plan["task"] == "nlp"
    results = [json.loads((out / "results" / f"{run['id']}.json").read_text())
               for run in plan["stages"]["method"]]
    for run, result in zip(plan["stages"]["method"], results):
        assert result["status"] == "complete", run["id"]
        assert result["params"]["task"] == "nlp" and result["data_source"] == "sample"
        lm = result["params"]["dataset"] == "bookcorpus"
        assert result["primary_metric"] == ("perplexity" if lm else "accuracy")
        assert result["history"][-1]["throughput"] > 0
        check_validation_passes(run, result)
    cases = {(r["params"]["arch"], r["params"]["dataset"], r["params"]["version"],
              r["params"]["arm"]) for r in results}
    assert cases >= {(a, d, v, c) for a in ARCHS for d in DATASETS for v in VERSIONS
                     for c in ARMS}
    for dataset in DATASETS:
        assert sorted(p.name for p in (out / "data" / dataset).iterdir()) == sorted(VERSIONS)
        assert (out / "figures" / f"samples_{dataset}.png").stat().st_size > 10_000
        assert (out / "tables" / f"data_{dataset}.md").exists()
        for version in VERSIONS:   # the data chapter's text versions, within their budgets
            manifest = json.loads((out / "data" / dataset / version / "manifest.json")
                                  .read_text())
            assert 0.98 * manifest["budget_bytes"] <= manifest["bytes"] <= manifest["budget_bytes"]
            assert manifest["source"] == "sample"
    table = (out / "tables" / "architectures.md").read_text()
    assert "GFLOPs @ 32 tokens" in table and "micro" in table
    assert "sequence-length warmup" in (out / "tables" / "speedup.md").read_text()
    check_evaluation_outputs(out, "perplexity")


def test_the_text_pairs_deck_is_rendered(rendered):
    staged = rendered["pptx"].parent / "slides.qmd"
    assert "from slides/slides-nlp.qmd;" in staged.read_text().splitlines()[0]
