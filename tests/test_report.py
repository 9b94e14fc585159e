"""The report: speedup.ipynb runs the whole demo study on its own, and the slide deck
renders from a pipeline output dir and meets the presentation's rules.

Each task's deck (cv, nlp) is tested from placeholder figures and tables of the real names
and shapes (seconds); the cv deck also from the output of the merged notebook's demo run
(minutes, run once here: `make test` distributes tests by file, so this file's fixtures run
on one worker). The text pair's demo run is test_report_nlp.py's, which reuses the checks
and helpers of this file.
"""
import json
import os
import re
import shutil
import stat
from pathlib import Path

import matplotlib
import nbformat
import papermill

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from pptx import Presentation  # noqa: E402
from pptx.enum.shapes import MSO_SHAPE_TYPE, PP_PLACEHOLDER  # noqa: E402

import render_slides  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# The test profiles' labels, which every deck must show (params/<task>-test.yaml: the demo
# study's every part, at the smallest size; `make report` runs the demo profiles).
LABELS = {"cv": "Test profile: embedded sample data, tiny models (width 8 of 64)",
          "nlp": "Test profile: embedded sample data, tiny models (micro preset, not base)"}
TOPICS = ("Dataset", "Approach", "Architectures", "Evaluation")
DATASETS = {"cv": ("caltech256", "voc2012"), "nlp": ("yahoo_answers", "bookcorpus")}
RESULT_FIGURES = ("schedule", "tuning", "convergence", "epochs_to_target",
                  "final_performance", "time_to_target", "frontier_case", "performance_profile",
                  "speedup")
WORDS_PER_MINUTE = 130
TALK_MINUTES = 12


def _table(columns: list[str], rows: int, caption: str) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(f"{c[:3]}{r}" for c in columns) + " |" for r in range(rows)]
    return "\n".join(lines) + f"\n\n{caption}\n"


def make_placeholder_output(output_dir, task: str = "cv") -> None:
    """A task's figures, tables and plan.json with the pipeline's names, the sizes of its
    largest ones."""
    (output_dir / "figures").mkdir(parents=True, exist_ok=True)
    (output_dir / "tables").mkdir(parents=True, exist_ok=True)
    for name in [f"samples_{d}" for d in DATASETS[task]] + list(RESULT_FIGURES):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        ax.plot([0, 1, 2], [0, 1, 0.5])
        ax.set_title(f"placeholder: {name}")
        fig.savefig(output_dir / "figures" / f"{name}.png", dpi=60)
        plt.close(fig)
    data_cols = ["version", "bytes", "budget", "train", "val", "test", "classes",
                 "resolution", "TV distance"]
    # Size columns: cv's two image sides; nlp's widest case, the full profile's four lengths.
    model_cols = (["model", "dataset", "classes", "params (M)"]
                  + (["GFLOPs @ 16 px", "GFLOPs @ 32 px"] if task == "cv" else
                     [f"GFLOPs @ {n} tokens" for n in (32, 64, 128, 512)]))
    if task == "nlp":
        data_cols.remove("resolution")
    caption = "*Computed on embedded sample data with scaled-down models.*"
    tables = {
        **{f"data_{d}": _table(data_cols, 3, caption) for d in DATASETS[task]},
        "architectures": _table(model_cols, 4, caption),
        # 2 archs x 2 datasets x 3 sizes x 2 curricula: the longest table on any slide.
        "speedup": _table(["model", "dataset", "size", "curriculum", "baseline s",
                           "method s", "speed-up", "epochs (base / method)",
                           "test (base / method)"], 24, "Geometric-mean speed-up: ...\n\n"
                          + caption),
    }
    tables["speedup_summary"] = "Target: 95% of the baseline's best validation score.\n"
    for name, text in tables.items():
        (output_dir / "tables" / f"{name}.md").write_text(text)
    (output_dir / "tables" / "label.md").write_text(LABELS[task] + "\n")
    (output_dir / "plan.json").write_text(json.dumps({"task": task}))


@pytest.fixture(scope="module", params=["placeholders-cv", "placeholders-nlp", "pipeline"])
def rendered(request, tmp_path_factory):
    if request.param == "pipeline":  # the demo study, run by speedup.ipynb
        output_dir = request.getfixturevalue("demo_notebook_run") / "_output"
    else:
        output_dir = tmp_path_factory.mktemp("output")
        make_placeholder_output(output_dir, task=request.param.split("-")[1])
    return render_slides.render(output_dir, engine="pandoc")


def _label(rendered) -> str:
    """The label that the rendered deck's task must show: its test profile's."""
    return LABELS[render_slides.read_task(rendered["pptx"].parent)]


def _title(slide) -> str:
    return slide.shapes.title.text_frame.text if slide.shapes.title is not None else ""


def _text(slide) -> str:
    return "\n".join(s.text_frame.text for s in slide.shapes if s.has_text_frame)


def _has_picture(slide) -> bool:
    return any(s.shape_type == MSO_SHAPE_TYPE.PICTURE
               or (s.is_placeholder and s.placeholder_format.type == PP_PLACEHOLDER.PICTURE)
               for s in slide.shapes)


def _notes(slide) -> str:
    return slide.notes_slide.notes_text_frame.text.strip() if slide.has_notes_slide else ""


def test_deck_covers_the_required_topics(rendered):
    titles = [_title(s) for s in Presentation(rendered["pptx"]).slides]
    for topic in TOPICS:
        assert any(topic in t for t in titles), f"no slide title mentions {topic!r}: {titles}"
    assert 10 <= len(titles) <= 15, titles  # a 12-minute talk: ~50 s a slide


def test_every_slide_has_speaker_notes_that_fit_the_talk(rendered):
    slides = list(Presentation(rendered["pptx"]).slides)
    empty = [i + 1 for i, s in enumerate(slides) if not _notes(s)]
    assert not empty, f"slides without speaker notes: {empty}"
    words = sum(len(re.findall(r"\S+", _notes(s))) for s in slides)
    assert words / WORDS_PER_MINUTE <= TALK_MINUTES, f"{words} words of notes"


def test_figures_and_labels_are_on_the_slides(rendered):
    slides = list(Presentation(rendered["pptx"]).slides)
    label = _label(rendered)
    assert sum(_has_picture(s) for s in slides) >= 4
    assert label in _text(slides[0]), "the profile label is not on the title slide"
    results = [s for s in slides if _title(s).startswith("Evaluation:")]
    assert results and all(label in _text(s) for s in results)


def test_everything_stays_on_its_slide(rendered):
    deck = Presentation(rendered["pptx"])
    for number, slide in enumerate(deck.slides, 1):
        for shape in slide.shapes:
            assert 0 <= shape.left and shape.left + shape.width <= deck.slide_width, number
            assert 0 <= shape.top and shape.top + shape.height <= deck.slide_height, number


def test_tables_are_readable(rendered):
    """Columns are sized so that no table shrinks below 10 pt (it went to 6 pt when a short
    column such as "classes" was narrower than its header word)."""
    deck = Presentation(rendered["pptx"])
    sizes = {(number, run.font.size.pt)
             for number, slide in enumerate(deck.slides, 1)
             for shape in slide.shapes if shape.has_table
             for row in shape.table.rows for cell in row.cells
             for paragraph in cell.text_frame.paragraphs for run in paragraph.runs}
    assert sizes and min(points for _, points in sizes) >= 10, sorted(sizes)


def test_outputs_say_they_are_generated(rendered, tmp_path):
    html = rendered["revealjs"].read_text(encoding="utf-8")
    assert "reveal" in html and html.startswith("<!-- generated by render_slides.py")
    assert "generated" in Presentation(rendered["pptx"]).core_properties.comments
    staged = rendered["pptx"].parent / "slides.qmd"
    assert staged.read_text().startswith("<!-- generated by render_slides.py")
    assert "{{<" not in staged.read_text(), "an include shortcode was left unexpanded"


def test_missing_figure_is_named_before_rendering(tmp_path):
    make_placeholder_output(tmp_path)
    (tmp_path / "figures" / "tuning.png").unlink()
    with pytest.raises(render_slides.MissingInputError, match="figures/tuning.png"):
        render_slides.render(tmp_path, engine="pandoc")
    assert not (tmp_path / "slides.pptx").exists()
    assert render_slides.main(["--output-dir", str(tmp_path)]) == 1


def _deck_source(output_dir) -> str:
    """The source deck that the staged copy in `output_dir` says it came from."""
    first = (output_dir / "slides.qmd").read_text(encoding="utf-8").splitlines()[0]
    return re.search(r"from slides/(\S+);", first).group(1)


@pytest.mark.parametrize("task, deck", [("cv", "slides.qmd"), ("nlp", "slides-nlp.qmd"),
                                        (None, "slides.qmd")])
def test_the_plans_task_picks_the_deck(tmp_path, task, deck):
    make_placeholder_output(tmp_path, task or "cv")
    if task is None:  # an output dir without plan.json is the image pair's
        (tmp_path / "plan.json").unlink()
    outputs = render_slides.render(tmp_path, engine="pandoc", formats=("revealjs",))
    assert _deck_source(tmp_path) == deck
    html = outputs["revealjs"]
    assert html.name == "slides.html" and f"from slides/{deck};" in html.read_text()


def test_the_task_argument_overrides_the_plan(tmp_path):
    make_placeholder_output(tmp_path, "cv")
    make_placeholder_output(tmp_path, "nlp")  # plan.json now says nlp
    render_slides.render(tmp_path, engine="pandoc", formats=("revealjs",), task="cv")
    assert _deck_source(tmp_path) == "slides.qmd"
    assert render_slides.main(["--output-dir", str(tmp_path), "--engine", "pandoc",
                               "--task", "cv"]) == 0
    assert _deck_source(tmp_path) == "slides.qmd"
    assert sorted(p.name for p in tmp_path.glob("slides.*")) == [
        "slides.html", "slides.pptx", "slides.qmd"]


def test_an_unknown_task_is_named_with_the_known_ones(tmp_path, capsys):
    make_placeholder_output(tmp_path, "nlp")
    (tmp_path / "plan.json").write_text(json.dumps({"task": "speech"}))
    with pytest.raises(render_slides.UnknownTaskError, match="'speech'.*cv, nlp"):
        render_slides.render(tmp_path, engine="pandoc")
    with pytest.raises(ValueError, match="'audio'.*cv, nlp"):
        render_slides.render(tmp_path, engine="pandoc", task="audio")
    assert render_slides.main(["--output-dir", str(tmp_path), "--task", "audio"]) == 1
    assert "'audio'" in capsys.readouterr().err
    assert not list(tmp_path.glob("slides.*")), "nothing is staged or rendered"


FAKE_QUARTO = """#!/bin/sh
# Stands in for Quarto: logs its arguments and the project file it finds, then writes what
# `quarto render slides.qmd --to FORMAT` would, copied from a deck pandoc rendered.
echo "$@" >> "$QUARTO_LOG"
cat _quarto.yml slide_fixes.lua > /dev/null || exit 3
case "$4" in
  pptx) cp "$FAKE_DECK_DIR/slides.pptx" slides.pptx ;;
  revealjs) cp "$FAKE_DECK_DIR/slides.html" slides.html ;;
esac
"""


def test_quarto_renders_the_staged_copy_when_on_path(rendered, tmp_path, monkeypatch):
    bin_dir, output_dir = tmp_path / "bin", tmp_path / "output"
    bin_dir.mkdir()
    quarto = bin_dir / "quarto"
    quarto.write_text(FAKE_QUARTO)
    quarto.chmod(quarto.stat().st_mode | stat.S_IEXEC)
    make_placeholder_output(output_dir, render_slides.read_task(rendered["pptx"].parent))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("QUARTO_LOG", str(tmp_path / "quarto.log"))
    monkeypatch.setenv("FAKE_DECK_DIR", str(rendered["pptx"].parent))
    assert shutil.which("quarto") == str(quarto)
    outputs = render_slides.render(output_dir)  # engine "auto" picks Quarto
    calls = (tmp_path / "quarto.log").read_text().splitlines()
    assert calls == ["render slides.qmd --to pptx", "render slides.qmd --to revealjs"]
    assert sorted(p.name for p in outputs.values()) == ["slides.html", "slides.pptx"]
    # The temporary project files are gone; the staged copy stays beside the outputs.
    assert not (output_dir / "_quarto.yml").exists()
    assert not (output_dir / "slide_fixes.lua").exists()
    assert (output_dir / "slides.qmd").is_file()

def run_merged_notebook(work: Path, **parameters) -> Path:
    """speedup.ipynb, run top to bottom in a fresh kernel in the empty folder `work`, as on
    Colab: the merged notebook must need no file of this repository. Returns `work`, which
    holds the executed notebook (speedup.out.ipynb) and the study's output dir."""
    # One torch thread per kernel: `make test` runs the image and the text pair's notebooks
    # at once on 2 workers, and two 2-thread kernels on 2 cores slow each other down.
    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the kernel
    try:
        papermill.execute_notebook(str(ROOT / "speedup.ipynb"),
                                   str(work / "speedup.out.ipynb"), parameters=parameters,
                                   kernel_name="python3", cwd=str(work), progress_bar=False)
    finally:
        if threads is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = threads
    return work


@pytest.fixture(scope="module")
def demo_notebook_run(tmp_path_factory):
    """The image pair's test study, run by speedup.ipynb with profile=test."""
    return run_merged_notebook(tmp_path_factory.mktemp("colab"), profile="test")


def test_merged_notebook_runs_every_job_of_the_demo(demo_notebook_run):
    out = demo_notebook_run / "_output"
    plan = json.loads((out / "plan.json").read_text())
    assert plan["profile"] == "test" and plan["task"] == "cv"
    for run in plan["stages"]["method"]:
        result = json.loads((out / "results" / f"{run['id']}.json").read_text())
        assert result["status"] == "complete"
        check_validation_passes(run, result)
        assert result["data_source"] == "sample"
    for dataset in ("caltech256", "voc2012"):
        versions = sorted(p.name for p in (out / "data" / dataset).iterdir())
        assert versions == ["120KB", "60KB", "90KB"]
    check_evaluation_outputs(out, "embedded sample data")


def check_validation_passes(run: dict, result: dict) -> None:
    """A run is validated every `full budget steps // eval_points` steps and at its end."""
    hist, p = result["history"], run["params"]
    every = hist[0]["step"]
    assert all(h["step"] == every * (i + 1) for i, h in enumerate(hist[:-1]))
    if p["budget"] == 1:
        assert len(hist) >= p["eval_points"]
    assert hist[-1]["train_flops"] > hist[0]["train_flops"] > 0


def check_evaluation_outputs(out: Path, phrase: str) -> None:
    """Every evaluation figure is drawn, and the speed-up table says `phrase`."""
    for name in ("tuning", "convergence", "epochs_to_target", "final_performance",
                 "time_to_target", "speedup", "schedule", "frontier", "frontier_case",
                 "performance_profile"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000, name
    table = (out / "tables" / "speedup.md").read_text()
    assert "Geometric-mean speed-up" in table and phrase in table


def test_merged_notebook_reports_no_failures(demo_notebook_run):
    nb = nbformat.read(demo_notebook_run / "speedup.out.ipynb", as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    last = nb.cells[-1]
    assert last.id == "gen-finish"
    plan = json.loads((demo_notebook_run / "_output" / "plan.json").read_text())
    jobs = sum(len(jobs) for jobs in plan["stages"].values())
    assert f"all {jobs} jobs complete" in "".join(o.get("text", "") for o in last.outputs)
    # before training it printed the estimated time, measured on this CPU, and the status
    estimate = next(c for c in nb.cells if c.id == "gen-estimate")
    printed = "".join(o.get("text", "") for o in estimate.outputs)
    assert "h of training in all" in printed and "0 of " in printed
    status = next(c for c in nb.cells if c.id == "gen-status")
    runs = len(plan["stages"]["method"])
    assert f"{runs} of {runs} training runs done" in "".join(o.get("text", "")
                                                              for o in status.outputs)
