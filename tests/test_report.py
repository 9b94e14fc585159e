"""The report: speedup.ipynb runs the whole demo study on its own, and the slide deck
renders from a pipeline output dir and meets the presentation's rules.

Each task's deck (cv, nlp) is tested from placeholder figures and tables of the real names
and shapes (seconds); the cv deck also from the output of the merged notebook's demo run
(minutes, run once here: `make test` distributes tests by file, so this file's fixtures run
on one worker). The text pair's demo run is test_report_nlp.py's, which reuses the checks
and helpers of this file.
"""
import io
import json
import os
import re
import shutil
import stat
from pathlib import Path

import matplotlib
import nbformat
import run_batch  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from pptx import Presentation  # noqa: E402
from pptx.enum.shapes import MSO_SHAPE_TYPE, PP_PLACEHOLDER  # noqa: E402

import check_slides  # noqa: E402
from speedup.study import plan_jobs  # noqa: E402
import render_slides  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# The test profiles' labels, which every deck must show (params/<task>-test.yaml: the demo
# study's every part, at the smallest size; `make report` runs the demo profiles).
LABELS = {"cv": "Test profile: embedded sample data, tiny models (width 8 of 64)",
          "nlp": "Test profile: embedded sample data, tiny models (micro preset, not base)"}
# The assignment's four topics, in order, as the presenters' sections name them.
TOPICS = ("Dataset", "approach", "architectures", "Evaluation")
DATASETS = {"cv": ("caltech256", "voc2012"), "nlp": ("yahoo_answers", "bookcorpus")}
ARCHS = {"cv": ("resnet18", "vgg11_bn"), "nlp": ("bert", "gpt1")}
RESULT_FIGURES = ("schedule", "tuning", "convergence", "curves", "reached", "speedup",
                  "final_performance", "frontier")
# Chapter 4's figures drawn for the slides (figures/slide_<name>.png), at their size.
SLIDE_FIGURES = ("datasets", "versions", "schedule", "tuning", "convergence", "speedup",
                 "case", "final_performance", "frontier")
FINDING_TITLES = ("versions", "schedule", "tuning", "convergence", "speedup", "case", "final")
WORDS_PER_MINUTE = 130
SPOKEN_MINUTES = 11  # of the 12 a recording may last


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
        # 2 archs x 2 datasets x 3 sizes x 2 arms: the longest table on any slide.
        "speedup": _table(["case", "arm", "comparison", "seeds at target (base / arm)",
                           "speed-up in flops [interval]", "verdict"], 24,
                          "Primary comparison, fixed before the runs: ...\n\n" + caption),
    }
    tables["speedup_summary"] = "Target: 95% of the baseline's best validation score.\n"
    for name, text in tables.items():
        (output_dir / "tables" / f"{name}.md").write_text(text)
    (output_dir / "tables" / "label.md").write_text(LABELS[task] + "\n")
    (output_dir / "plan.json").write_text(json.dumps({"task": task}))
    figure_label = "Computed on embedded sample data with scaled-down models"
    for name in SLIDE_FIGURES + tuple(f"cases_{a}" for a in ARCHS[task]):
        fig, ax = plt.subplots(figsize=(9.6, 4.3))
        ax.plot([0, 1, 2], [0, 1, 0.5], lw=4)
        ax.set_title(f"placeholder: slide {name}", fontsize=16)
        fig.savefig(output_dir / "figures" / f"slide_{name}.png", dpi=60,
                    metadata={"Description": figure_label})
        plt.close(fig)
    titles = {k: f"A placeholder finding about {k} that the slide states as a sentence"
              for k in FINDING_TITLES}
    (output_dir / "tables" / "findings.json").write_text(json.dumps({
        "titles": titles, "target": "95%", "schedule_speedup": 1.5, "label": figure_label,
        "claim": "In this run, the arm reached the target sooner in 1 of 2 cases."}))


def notebook_deck(output_dir: Path) -> dict:
    """The deck speedup.ipynb wrote into ``output_dir`` (pptx and notes), and its reveal.js
    twin for the rendered check's html half."""
    pptx = output_dir / "slides.pptx"
    written = pptx.stat().st_mtime_ns
    html = render_slides.render(output_dir, engine="pandoc", formats=("revealjs",))
    assert pptx.stat().st_mtime_ns == written   # the pptx checked is the notebook's
    return {"pptx": pptx, "notes": output_dir / "slides_notes.md", **html}


@pytest.fixture(scope="module", params=["placeholders-cv", "placeholders-nlp", "pipeline"])
def rendered(request, tmp_path_factory):
    if request.param == "pipeline":  # the demo study's deck, as speedup.ipynb wrote it
        return notebook_deck(request.getfixturevalue("demo_notebook_run") / "_output")
    output_dir = tmp_path_factory.mktemp("output")
    make_placeholder_output(output_dir, task=request.param.split("-")[1])
    return render_slides.render(output_dir, engine="pandoc", pdf=False)


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


def _main_flow(slides) -> list:
    """The slides of the talk: all but the backup slides kept for questions."""
    return [s for s in slides if not _notes(s).startswith(check_slides.BACKUP)]


def _sections(rendered) -> list[dict]:
    slides = list(Presentation(rendered["pptx"]).slides)
    return check_slides.talk_sections([_notes(s) for s in slides])


def test_deck_covers_the_required_topics_in_order_in_four_sections(rendered):
    sections = _sections(rendered)
    assert len(sections) == 4 and len({s["who"] for s in sections}) == 4, sections
    for topic, section in zip(TOPICS, sections):
        assert topic in section["topic"], (topic, section["topic"])
    main = _main_flow(Presentation(rendered["pptx"]).slides)
    assert 10 <= len(main) <= 15, [_title(s) for s in main]  # 12 minutes: ~50 s a slide
    assert sum(len(s["slides"]) for s in sections) == len(main)


def test_content_slides_state_their_finding_in_a_sentence(rendered):
    """Assertion-evidence: a figure slide's title is a sentence (no "Evaluation: ..."
    topic labels), most of them filled in from chapter 4's findings, never left as code."""
    main = _main_flow(Presentation(rendered["pptx"]).slides)[1:]
    titles = [_title(s) for s in main if _has_picture(s)]
    assert len(titles) >= 8, titles
    for title in titles:
        assert len(title.split()) >= 6 and ":" not in title.split()[0], title
    text = "\n".join(_title(s) for s in main).replace("\u2019", "'")  # pandoc's quotes
    assert "{{<" not in text and "Evaluation:" not in text
    found = json.loads((rendered["pptx"].parent / "tables/findings.json").read_text())
    assert all(title in text for title in found["titles"].values()), text


def test_the_talk_fits_eleven_minutes_and_every_section_its_budget(rendered):
    slides = list(Presentation(rendered["pptx"]).slides)
    empty = [i + 1 for i, s in enumerate(slides) if not _notes(s)]
    assert not empty, f"slides without speaker notes: {empty}"
    sections = _sections(rendered)
    for section in sections:
        assert section["words"] / WORDS_PER_MINUTE <= section["minutes"], section
    words = sum(s["words"] for s in sections)
    assert words / WORDS_PER_MINUTE <= SPOKEN_MINUTES, f"{words} spoken words"
    assert sum(s["minutes"] for s in sections) <= SPOKEN_MINUTES
    plan = _notes(slides[0])  # the title slide states who says what, and for how long
    assert "Time per presenter" in plan and "Total 11 min of the 12 allowed" in plan
    for section in sections:
        assert f"{section['who']}: {section['topic']}, {section['minutes']:g} min" in plan


def test_figures_and_labels_are_on_the_slides(rendered):
    """The profile label on the title slide; every figure of the talk says, in its own
    pixels (and its PNG's description), that it was computed on sample data."""
    from PIL import Image

    slides = list(Presentation(rendered["pptx"]).slides)
    assert LABELS[render_slides.read_task(rendered["pptx"].parent)] in _text(slides[0])
    pictures = [s for slide in _main_flow(slides) for s in slide.shapes
                if s.shape_type == MSO_SHAPE_TYPE.PICTURE]
    assert len(pictures) >= 8
    for picture in pictures:
        described = Image.open(io.BytesIO(picture.image.blob)).info.get("Description", "")
        assert "sample data" in described, described


def test_a_figure_fills_its_slide_at_the_size_it_was_drawn(rendered):
    """A figure slide's picture is placed at about its drawn size (9.6 x 4.3 in), so that
    14 pt in the figure is 14 pt on the slide, and covers more than half the slide."""
    deck = Presentation(rendered["pptx"])
    area = deck.slide_width * deck.slide_height
    for slide in _main_flow(deck.slides)[1:]:
        pictures = [s for s in slide.shapes if s.shape_type == MSO_SHAPE_TYPE.PICTURE]
        if pictures:
            (picture,) = pictures
            assert picture.width * picture.height > 0.5 * area, _title(slide)
            assert abs(picture.width / 914400 - 9.6) < 0.6, (_title(slide), picture.width)


def test_everything_stays_on_its_slide(rendered):
    deck = Presentation(rendered["pptx"])
    for number, slide in enumerate(deck.slides, 1):
        for shape in slide.shapes:
            assert 0 <= shape.left and shape.left + shape.width <= deck.slide_width, number
            assert 0 <= shape.top and shape.top + shape.height <= deck.slide_height, number


def test_tables_are_readable(rendered):
    """Columns are sized so that no table shrinks below 12 pt (it went to 6 pt when a short
    column such as "classes" was narrower than its header word)."""
    deck = Presentation(rendered["pptx"])
    sizes = {(number, run.font.size.pt)
             for number, slide in enumerate(deck.slides, 1)
             for shape in slide.shapes if shape.has_table
             for row in shape.table.rows for cell in row.cells
             for paragraph in cell.text_frame.paragraphs for run in paragraph.runs}
    assert sizes and min(points for _, points in sizes) >= 12, sorted(sizes)


def test_outputs_say_they_are_generated(rendered, tmp_path):
    html = rendered["revealjs"].read_text(encoding="utf-8")
    assert "reveal" in html and html.startswith("<!-- generated by speedup.deck")
    assert "generated" in Presentation(rendered["pptx"]).core_properties.comments
    staged = rendered["pptx"].parent / "slides.qmd"
    assert staged.read_text().startswith("<!-- generated by speedup.deck")
    assert "{{<" not in staged.read_text(), "an include shortcode was left unexpanded"


def test_missing_figure_is_named_before_rendering(tmp_path):
    make_placeholder_output(tmp_path)
    (tmp_path / "figures" / "slide_tuning.png").unlink()
    with pytest.raises(render_slides.MissingInputError, match="figures/slide_tuning.png"):
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
                               "--task", "cv", "--no-pdf"]) == 0
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
    outputs = render_slides.render(output_dir, pdf=False)  # engine "auto" picks Quarto
    calls = (tmp_path / "quarto.log").read_text().splitlines()
    assert calls == ["render slides.qmd --to pptx", "render slides.qmd --to revealjs"]
    assert sorted(p.name for p in outputs.values()) == ["slides.html", "slides.pptx"]
    # The temporary project files are gone; the staged copy stays beside the outputs.
    assert not (output_dir / "_quarto.yml").exists()
    assert not (output_dir / "slide_fixes.lua").exists()
    assert (output_dir / "slides.qmd").is_file()

def test_the_deck_passes_the_rendered_check(rendered):
    """As LibreOffice and Chromium draw them, the test study's decks keep every text in its
    box, figures fill their slides, nothing is small or blank (check_slides.py)."""
    if "notes" not in rendered:
        pytest.skip("the placeholder decks are checked as rendered in test_slides_check.py "
                    "and by the pipeline's deck")
    missing = check_slides.missing_tools()
    if missing:
        pytest.skip("the rendered check needs " + ", ".join(missing))
    if render_slides.find_revealjs() is None:
        pytest.skip("no local reveal.js (npm install reveal.js@5.2.1 --prefix .venv/npm)")
    report = check_slides.check_deck(rendered["pptx"].parent)
    assert report.ok, "\n".join(map(str, report.problems))
    assert set(report.slides) == {"slides.pptx", "slides.html"}


def test_presenters_are_named_in_the_notes_and_on_the_title_slide(tmp_path):
    make_placeholder_output(tmp_path, "cv")
    outputs = render_slides.render(tmp_path, engine="pandoc", formats=("pptx",), pdf=False,
                                   presenters="Ann, Bo, Cy, Di")
    slides = list(Presentation(outputs["pptx"]).slides)
    assert "Ann, Bo, Cy and Di" in _text(slides[0])
    assert [s["who"] for s in check_slides.talk_sections([_notes(s) for s in slides])] == [
        "Presenter 1, Ann", "Presenter 2, Bo", "Presenter 3, Cy", "Presenter 4, Di"]
    with pytest.raises(ValueError, match="4 presenters; got 2"):
        render_slides.render(tmp_path, engine="pandoc", presenters="Ann,Bo", pdf=False)


def test_the_conclusion_quotes_the_evidence_claim_or_says_it_is_missing(tmp_path):
    make_placeholder_output(tmp_path, "cv")
    deck = (ROOT / "slides" / "slides.qmd").read_text()
    evidence = tmp_path / "EVIDENCE.md"
    own = render_slides.expand_shortcodes(deck, tmp_path, "cv", evidence=None)
    assert "1 of 2 cases. The multi-seed evidence run (`make evidence`) has not been run" in own
    evidence.write_text("# Evidence\n<!-- claim:nlp -->Text claim.<!-- /claim -->\n"
                        "<!-- claim:cv -->\nProgressive resizing is 1.4x faster\n"
                        "[1.2, 1.6] over 3 seeds.\n<!-- /claim -->\n")
    quoted = render_slides.expand_shortcodes(deck, tmp_path, "cv",
                                             evidence=evidence.read_text())
    assert "> Progressive resizing is 1.4x faster [1.2, 1.6] over 3 seeds. (EVIDENCE.md)" in quoted
    assert "Text claim" not in quoted and "has not been run" not in quoted


def test_a_missing_finding_is_named_before_rendering(tmp_path):
    make_placeholder_output(tmp_path, "nlp")
    (tmp_path / "tables" / "findings.json").write_text(json.dumps({"titles": {}}))
    with pytest.raises(render_slides.MissingInputError, match="'titles.versions'"):
        render_slides.render(tmp_path, engine="pandoc", pdf=False)
    (tmp_path / "tables" / "findings.json").unlink()
    with pytest.raises(render_slides.MissingInputError, match="tables/findings.json"):
        render_slides.render(tmp_path, engine="pandoc", pdf=False)


def run_merged_notebook(work: Path, **parameters) -> Path:
    """speedup.ipynb, run top to bottom in a fresh kernel in the empty folder `work`, as on
    Colab: the merged notebook must need no file of this repository. Returns `work`, which
    holds the executed notebook (speedup.out.ipynb) and the study's output dir."""
    # One torch thread per kernel: `make test` runs the image and the text pair's notebooks
    # at once on 2 workers, and two 2-thread kernels on 2 cores slow each other down.
    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the kernel
    try:
        run_batch.execute_notebook(ROOT / "speedup.ipynb", work / "speedup.out.ipynb",
                                   parameters, cwd=str(work))
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
    for run in plan["stages"]["tuning"] + plan["stages"]["method"]:
        result = json.loads((out / "results" / f"{run['id']}.json").read_text())
        assert result["status"] == "complete"
        check_validation_passes(run, result)
        assert result["data_source"] == "sample"
    check_main_runs_use_the_picks(out, plan)
    for dataset in ("caltech256", "voc2012"):
        versions = sorted(p.name for p in (out / "data" / dataset).iterdir())
        assert versions == ["120KB", "60KB", "90KB"]
    check_evaluation_outputs(out, "embedded sample data")


def check_main_runs_use_the_picks(out: Path, plan: dict) -> None:
    """Phase B trained what phase A picked: every run's recorded settings hold its arm's
    picks for its architecture and dataset, as the selection wrote them (the A/A arm: the
    baseline's); a tuned dataset's runs are never left at a setting phase A did not pick."""
    picks = json.loads((out / "tuning" / "picks.json").read_text())
    assert picks["picks"] and not picks["untuned"]
    checked = 0
    for run in plan["stages"]["method"]:
        trained = json.loads((out / "results" / f"{run['id']}.json").read_text())["params"]
        arm = "baseline" if trained["arm"] == "aa" else trained["arm"]
        chosen = picks["picks"].get(trained["arch"], {}).get(trained["dataset"], {}).get(arm)
        if chosen is None:   # a dataset phase A did not tune (tuning.datasets)
            continue
        assert {k: trained[k] for k in chosen} == chosen, run["id"]
        checked += 1
    assert checked >= len([r for r in plan["stages"]["method"] if r["main"]]) // 2


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
    for name in ("tuning", "convergence", "final_performance", "curves", "reached",
                 "speedup", "schedule", "frontier"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000, name
    table = (out / "tables" / "speedup.md").read_text()
    detail = (out / "tables" / "speedup_detail.md").read_text()
    assert "Primary comparison, fixed before the runs" in table and phrase in table + detail
    assert "val items n, SE of a pass" in detail and "**primary**" in detail
    # nothing the pipeline wrote itself was taken for a damaged file and set aside
    assert not sorted(out.rglob("*.damaged"))
    assert json.loads((out / "tables" / "architectures.json").read_text())[0]["params"] > 0


def test_merged_notebook_reports_no_failures(demo_notebook_run):
    nb = nbformat.read(demo_notebook_run / "speedup.out.ipynb", as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    last = nb.cells[-1]
    assert last.id == "gen-finish"
    plan = json.loads((demo_notebook_run / "_output" / "plan.json").read_text())
    jobs = sum(len(plan_jobs(plan, stage)) for stage in plan["stages"])
    assert f"all {jobs} jobs complete" in "".join(o.get("text", "") for o in last.outputs)
    # before training it printed the estimated time, measured on this CPU, and the status
    estimate = next(c for c in nb.cells if c.id == "gen-estimate")
    printed = "".join(o.get("text", "") for o in estimate.outputs)
    assert " of training on " in printed and "0 of " in printed and "Drive: " in printed
    # the deck cell wrote the pptx and its speaker notes and said where they are
    deck = "".join(o.get("text", "") for o in next(c for c in nb.cells
                                                   if c.id == "gen-deck").outputs)
    out = demo_notebook_run / "_output"
    assert f"wrote {(out / 'slides.pptx').resolve()}" in deck and "Download" in deck
    assert "[Presenter 4: " in (out / "slides_notes.md").read_text()
    status = next(c for c in nb.cells if c.id == "gen-status")
    runs = len(plan["stages"]["tuning"]) + len(plan["stages"]["method"])
    assert f"{runs} of {runs} training runs done" in "".join(o.get("text", "")
                                                              for o in status.outputs)
