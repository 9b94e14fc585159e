"""The rendered check (check_slides.py) finds each fault it is there for, on small decks made
to have them, and counts a talk's spoken words. The decks of the test study are checked in
test_report.py and test_report_nlp.py.

The tests that render need LibreOffice (libreoffice-impress), poppler (poppler-utils) and
Chromium (chromium); they install nothing and skip, naming what is missing (.ci/run installs
them). A few seconds each.
"""
import shutil
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import check_slides  # noqa: E402
import render_slides  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

MISSING = check_slides.missing_tools()
needs_tools = pytest.mark.skipif(bool(MISSING), reason="the rendered check needs "
                                 + ", ".join(MISSING))
needs_revealjs = pytest.mark.skipif(
    render_slides.find_revealjs() is None,
    reason="no local reveal.js (npm install reveal.js@5.2.1 --prefix .venv/npm, as make does)")


def _figure(path: Path, width: float, height: float) -> Path:
    fig, ax = plt.subplots(figsize=(width, height))
    ax.plot([0, 1, 2], [0, 1, 0.5], lw=4)
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return path


def _bad_pptx(folder: Path) -> Path:
    """Seven slides: fine, text overflowing its box, text off the slide, 10 pt text, a
    figure covering a fifth of the slide, a picture off the slide, a blank slide."""
    from pptx import Presentation
    from pptx.enum.text import MSO_AUTO_SIZE
    from pptx.util import Inches, Pt

    deck = Presentation()
    deck.slide_width, deck.slide_height = Inches(10), Inches(5.625)
    title_only, blank = deck.slide_layouts[5], deck.slide_layouts[6]
    picture = _figure(folder / "figure.png", 9.6, 4.3)

    def text(slide, words: str, box, points: int):
        frame = slide.shapes.add_textbox(*(Inches(v) for v in box)).text_frame
        frame.word_wrap, frame.auto_size = True, MSO_AUTO_SIZE.NONE
        frame.text = words
        for run in frame.paragraphs[0].runs:
            run.font.size = Pt(points)

    def titled(words: str):
        slide = deck.slides.add_slide(title_only)
        slide.shapes.title.text = words
        for run in slide.shapes.title.text_frame.paragraphs[0].runs:
            run.font.size = Pt(28)
        return slide

    slide = titled("A fine slide")
    slide.shapes.add_picture(str(picture), Inches(0.2), Inches(1.2), Inches(9.6), Inches(4.3))
    text(titled("Too much text"), "word " * 120, (1, 2, 4, 0.8), 20)
    text(titled("Off the slide"), "This line starts past the right edge", (9.2, 2, 4, 1), 20)
    text(titled("Small print"), "Ten point text nobody reads", (1, 2, 8, 1), 10)
    slide = titled("A small figure")
    slide.shapes.add_picture(str(picture), Inches(3), Inches(2), Inches(3.5), Inches(1.6))
    slide = titled("A figure off the slide")
    slide.shapes.add_picture(str(picture), Inches(2), Inches(1.2), Inches(9.6), Inches(4.3))
    deck.slides.add_slide(blank)
    path = folder / "slides.pptx"
    deck.save(path)
    return path


@needs_tools
def test_the_pptx_check_finds_each_fault_as_libreoffice_draws_it(tmp_path):
    render_slides.export_pdf(_bad_pptx(tmp_path))
    report = check_slides.Report()
    check_slides.check_pptx(tmp_path, tmp_path / "png", report)
    found = {}
    for problem in report.problems:
        found.setdefault(problem.slide, []).append(problem.what)
    assert 1 not in found, found[1]
    assert any("text outside its box" in p for p in found[2]), found
    assert any("text outside the slide" in p for p in found[3]), found
    assert any("10 pt (under 18 pt)" in p for p in found[4]), found
    assert any("cover 10% of the slide" in p for p in found[5]), found
    assert any("picture outside the slide" in p for p in found[6]), found
    assert any("near-blank" in p for p in found[7]), found
    assert len(list((tmp_path / "png").glob("pptx-*.png"))) == 7


BAD_HTML_DECK = """---
title: A deck made to fail
---

## A fine slide

![](figure.png){.r-stretch}

## Small print

<p style="font-size: 14px">Fourteen pixels: about 8 pt on a 10-inch slide</p>

## Off the slide

<p style="position: absolute; left: 1250px; width: 400px">This starts at the edge</p>

## A word too long for its box

<div style="width: 200px; margin: 0">Pneumonoultramicroscopicsilicovolcanoconiosis</div>

## A small figure

<img src="figure.png" style="width: 300px">

## <EMPTY>

""".replace(" <EMPTY>", " ")  # a title of one space: empty


@needs_tools
@needs_revealjs
def test_the_html_check_finds_each_fault_as_chromium_draws_it(tmp_path):
    import pypandoc

    _figure(tmp_path / "figure.png", 9.6, 4.3)
    (tmp_path / "slides.md").write_text(BAD_HTML_DECK)
    options = {"slide-level": 2, "theme": "white", "embed-resources": True, "width": 1280,
               "height": 720}
    lua = tmp_path / "slide_fixes.lua"
    lua.write_text((ROOT / "slides" / "slide_fixes.lua").read_text())
    render_slides.run_tool([pypandoc.get_pandoc_path(), "slides.md",
                            *render_slides.pandoc_args("revealjs", options,
                                                       render_slides.find_revealjs(), lua),
                            "--output", "slides.html"], cwd=tmp_path)
    report = check_slides.Report()
    check_slides.check_html(tmp_path, tmp_path / "png", report)
    found = {}
    for problem in report.problems:
        found.setdefault(problem.slide, []).append(problem.what)
    assert 2 not in found, found[2]  # slide 1 is the title slide
    assert any("under 18 pt" in p for p in found[3]), found
    assert any("text outside the slide" in p for p in found[4]), found
    assert any("text outside its box" in p for p in found[5]), found
    assert any("cover" in p and "under 50%" in p for p in found[6]), found
    assert any("near-blank" in p for p in found[7]), found


def test_spoken_words_leave_out_stage_directions():
    assert check_slides.spoken_words("[Presenter 1: Data. 2.5 min, 0:00-2:30] One two three.") \
        == 3
    notes = ["[Talk plan ...] [Presenter 1: Data. 2 min, 0:00-2:00] Hello all.",
             "Four more words here.",
             "[Presenter 2, Ann: Method. 1.5 min, 2:00-3:30] Five words are spoken here.",
             "[Backup slide, for questions; not presented.] Not counted at all."]
    sections = check_slides.talk_sections(notes)
    assert [(s["who"], s["minutes"], s["slides"], s["words"]) for s in sections] == [
        ("Presenter 1", 2.0, [1, 2], 6), ("Presenter 2, Ann", 1.5, [3], 5)]


def test_missing_tools_are_named_with_their_package(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    missing = check_slides.missing_tools()
    assert "soffice (apt-get install libreoffice-impress)" in missing
    assert "chromium (apt-get install chromium)" in missing
    assert "pdftoppm (apt-get install poppler-utils)" in missing
