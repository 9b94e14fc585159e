"""Render a task's slide deck to PowerPoint and reveal.js in an output dir.

    python render_slides.py --output-dir _output       # -> _output/slides.pptx, slides.html
    python render_slides.py --output-dir _output_nlp   # the text pair's deck, by plan.json

The deck is the task's (slides/slides.qmd for the image pair, slides/slides-nlp.qmd for the
text pair), the task the one in `<output dir>/plan.json` unless --task says otherwise. The
code that stages and renders it is chapter 4's (`speedup.deck`, section "The deck"), the same
that `speedup.ipynb` runs at its end on Colab; this script reads the sources from the
checkout and adds the local reveal.js when there is one (`npm install reveal.js@5.2.1
--prefix .venv/npm`), which makes slides.html a single self-contained file. Quarto renders
when it is on PATH, else the pandoc bundled by pypandoc-binary; where LibreOffice is
installed, slides.pdf is written beside slides.pptx. `check_slides.py` checks the decks as
rendered.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import speedup.deck as deck  # noqa: E402
from speedup.deck import (  # noqa: E402,F401  the names tests and check_slides.py use
    DECK_FILES, DEFAULT_TASK, OUTPUT_NAMES, PDF_NAME, STAGED_NAME, MissingInputError,
    RenderError, UnknownTaskError, export_pdf, expand_shortcodes, libreoffice, pandoc_args,
    read_task, run_tool, talk_plan, write_notes,
)

LOCAL_REVEALJS = ROOT / ".venv" / "npm" / "node_modules" / "reveal.js"
DEFAULT_PRESENTERS = tuple(f"Presenter {i}" for i in range(1, 5))


def find_revealjs() -> Path | None:
    """reveal.js from REVEALJS_DIR, else the npm install under .venv, or None."""
    return deck.find_revealjs(LOCAL_REVEALJS)


def sources() -> dict[str, str]:
    """The deck's sources in this checkout (the decks, the Lua filter, _quarto.yml,
    EVIDENCE.md)."""
    return deck.read_sources(ROOT)


def render(output_dir, **options) -> dict[str, Path]:
    """``speedup.deck.render_deck`` with this checkout's sources and reveal.js."""
    return deck.render_deck(output_dir, sources(), revealjs=LOCAL_REVEALJS, **options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="_output",
                        help="the pipeline's output dir, with figures/ and tables/")
    parser.add_argument("--engine", choices=("auto", "quarto", "pandoc"), default="auto",
                        help="auto: Quarto when it is on PATH, else pandoc")
    parser.add_argument("--task", default=None,
                        help=f"whose deck to render ({', '.join(sorted(DECK_FILES))}); default: "
                             f"the task in the output dir's plan.json, else {DEFAULT_TASK}")
    parser.add_argument("--presenters", default=None,
                        help='the presenters, comma-separated, e.g. "Ann,Bo,Cy,Di" (default: '
                             + ", ".join(DEFAULT_PRESENTERS) + ")")
    parser.add_argument("--no-pdf", action="store_true",
                        help="skip slides.pdf (written where LibreOffice is installed)")
    args = parser.parse_args(argv)
    try:
        outputs = render(args.output_dir, engine=args.engine, task=args.task,
                         presenters=args.presenters, pdf=False if args.no_pdf else None)
    except (MissingInputError, UnknownTaskError, RenderError, ValueError) as error:
        print(f"render_slides.py: error: {error}", file=sys.stderr)
        return 1
    if "pptx" in outputs:
        outputs["notes"] = write_notes(outputs["pptx"])
    for path in outputs.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
