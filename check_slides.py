"""Check a rendered slide deck as the audience sees it, and the talk its notes hold.

    python check_slides.py --output-dir _output        # make slides-check
    python check_slides.py --output-dir _output_nlp    # make slides-check TASK=nlp

`render_slides.py` writes slides.pptx, slides.html and (with LibreOffice) slides.pdf into the
output dir. This script looks at them as rendered, not as python-pptx believes they will be:

* slides.pptx as LibreOffice draws it (`soffice`, Debian's libreoffice-impress): its PDF,
  read back with poppler (`pdftohtml -xml` gives every line of text with its box and size
  and every picture with its box; `pdftoppm` gives a PNG per slide);
* slides.html as Chromium lays it out (headless, driven over the DevTools protocol on a
  pipe, no extra package): every text line's box and size, every picture's box, and a
  screenshot per slide.

Each deck fails on: text outside its box (a title, a bullet list, a table cell, a caption)
or outside the slide, a picture outside the slide, body text under 18 pt or table text under
12 pt (points of a 10-inch-wide slide), a figure slide whose pictures cover less than half
the slide, and an empty or near-blank rendered slide. The speaker notes are checked as a
talk: every section (a presenter marker of render_slides.py) must fit its minutes at the
deck's words a minute, and all spoken words 11 minutes (the recording's limit is 12).

The PNGs go to `<output dir>/slides_png/` (pptx-01.png ..., html-01.png ...) for looking at.
Exit status 1 when any check fails; 2 when a tool is missing (the message names it).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import render_slides

MIN_POINTS = {"body": 18, "table": 12}  # as rendered, on a 10 x 5.625 in slide
MIN_FIGURE_SHARE = 0.5   # of the slide, under a figure slide's pictures
MIN_INK = 0.005          # share of a slide's pixels unlike its background: less is near-blank
TOLERANCE_PT = 4         # a text line may overhang its box by this much (line spacing)
SPOKEN_MINUTES = 11      # all speaker notes, at the deck's words a minute
SLIDE_WIDTH_PT = 720     # 10 inches: the pptx's width, and the unit the html is measured in
PNG_DPI = 48             # PNGs of the pptx's pages: enough for a blank check and a look
TOOLS = {"soffice": "libreoffice-impress", "pdftohtml": "poppler-utils",
         "pdftoppm": "poppler-utils", "chromium": "chromium"}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
BACKUP = "[Backup"       # speaker notes of a slide kept for questions: never spoken
BULLETS = "•◦▪–-"
MARKER = re.compile(r"\[(Presenter \d+[^:\]]*): ([^\]]*?)\. ([\d.]+) min, [\d:]+-[\d:]+\]")


@dataclass
class Problem:
    deck: str
    slide: int
    what: str

    def __str__(self) -> str:
        return f"{self.deck} slide {self.slide}: {self.what}"


@dataclass
class Report:
    slides: dict = field(default_factory=dict)   # deck -> number of slides checked
    problems: list = field(default_factory=list)
    talk: list = field(default_factory=list)     # lines: time per section and in total
    pngs: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def chromium() -> str | None:
    return next((shutil.which(n) for n in CHROMIUM_NAMES if shutil.which(n)), None)


def missing_tools() -> list[str]:
    """The tools this check needs that are not on PATH, each with its Debian package."""
    found = {"soffice": render_slides.libreoffice(), "chromium": chromium()}
    return [f"{tool} (apt-get install {package})" for tool, package in TOOLS.items()
            if not (found.get(tool) or shutil.which(tool))]


# ------------------------------------------------------------------ geometry (points)

def inside(inner, outer, tolerance: float = TOLERANCE_PT, vertical: float | None = None
           ) -> bool:
    """Is box `inner` (left, top, right, bottom) within `outer`, give or take `tolerance`
    (`vertical` up and down, where it differs)?"""
    dy = tolerance if vertical is None else vertical
    return (inner[0] >= outer[0] - tolerance and inner[1] >= outer[1] - dy
            and inner[2] <= outer[2] + tolerance and inner[3] <= outer[3] + dy)


def covered_share(boxes, width: float, height: float) -> float:
    """Share of a width x height slide that the union of `boxes` covers."""
    mask = np.zeros((int(round(height)), int(round(width))), dtype=bool)
    for left, top, right, bottom in boxes:
        mask[max(0, int(top)):max(0, int(bottom)), max(0, int(left)):max(0, int(right))] = True
    return float(mask.mean())


def ink(png: Path) -> float:
    """Share of an image's pixels that differ clearly from its commonest colour."""
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3).astype(int)
    coarse = pixels // 8
    codes = np.bincount((coarse[:, 0] * 32 + coarse[:, 1]) * 32 + coarse[:, 2])
    common = codes.argmax()
    background = np.array([common // 1024, common // 32 % 32, common % 32]) * 8
    return float((np.abs(pixels - background).max(axis=1) > 40).mean())


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _short(text: str, n: int = 50) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 3] + "..."


# ---------------------------------------------------- slides.pptx, as LibreOffice renders it

EMU_PER_PT = 12700


def pptx_layout(pptx: Path) -> tuple[list[dict], tuple[float, float]]:
    """Per slide, from the file: its text boxes (with their text; tables as one box), its
    pictures, its title and its notes, in points."""
    from pptx import Presentation
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    deck = Presentation(pptx)

    def box(shape):
        return tuple(v / EMU_PER_PT for v in (shape.left, shape.top, shape.left + shape.width,
                                              shape.top + shape.height))

    slides = []
    for slide in deck.slides:
        texts, pictures = [], []
        for shape in slide.shapes:
            if shape.shape_type == MSO_SHAPE_TYPE.PICTURE:
                pictures.append(box(shape))
            elif shape.has_table:
                cells = "".join(c.text_frame.text for r in shape.table.rows for c in r.cells)
                texts.append({"box": box(shape), "text": _squash(cells), "table": True})
            elif shape.has_text_frame and shape.text_frame.text.strip():
                texts.append({"box": box(shape), "text": _squash(shape.text_frame.text),
                              "table": False})
        title = slide.shapes.title.text_frame.text if slide.shapes.title is not None else ""
        notes = slide.notes_slide.notes_text_frame.text if slide.has_notes_slide else ""
        slides.append({"texts": texts, "pictures": pictures, "title": title, "notes": notes})
    return slides, (deck.slide_width / EMU_PER_PT, deck.slide_height / EMU_PER_PT)


def pdf_layout(pdf: Path) -> list[dict]:
    """Per page, as drawn: every line of text (box, text, size in points) and every picture."""
    with tempfile.TemporaryDirectory(prefix="check-slides-") as tmp:
        subprocess.run(["pdftohtml", "-xml", "-zoom", "1", "-q", "-nodrm", str(pdf),
                        str(Path(tmp) / "deck")], check=True, capture_output=True, timeout=120)
        root = ElementTree.parse(Path(tmp) / "deck.xml").getroot()
    sizes, pages = {}, []
    for page in root.iter("page"):
        for spec in page.iter("fontspec"):
            sizes[spec.get("id")] = float(spec.get("size"))
        texts, images = [], []
        for element in page:
            if element.tag not in ("text", "image"):
                continue
            left, top = float(element.get("left")), float(element.get("top"))
            box = (left, top, left + float(element.get("width")),
                   top + float(element.get("height")))
            if element.tag == "image":
                images.append(box)
            elif "".join(element.itertext()).strip():
                texts.append({"box": box, "text": "".join(element.itertext()),
                              "points": sizes[element.get("font")]})
        pages.append({"width": float(page.get("width")), "height": float(page.get("height")),
                      "texts": texts, "images": images})
    return pages


def check_pptx(output_dir: Path, png_dir: Path | None, report: Report) -> None:
    pptx = output_dir / render_slides.OUTPUT_NAMES["pptx"]
    pdf = output_dir / render_slides.PDF_NAME
    if not pdf.is_file() or pdf.stat().st_mtime < pptx.stat().st_mtime:
        render_slides.export_pdf(pptx)
    deck = "slides.pptx"
    slides, (width, height) = pptx_layout(pptx)
    pages = pdf_layout(pdf)
    report.slides[deck] = len(slides)
    if len(pages) != len(slides):
        report.problems.append(Problem(deck, 0, f"LibreOffice drew {len(pages)} pages for "
                                                f"{len(slides)} slides"))
    page_box = (0, 0, width, height)
    for number, (slide, page) in enumerate(zip(slides, pages), 1):
        def fail(what, number=number):
            report.problems.append(Problem(deck, number, what))

        for line in page["texts"]:
            words = _squash(line["text"]).strip(BULLETS)
            if not words:  # a bullet: drawn by the paragraph, not part of its text
                continue
            if not inside(line["box"], page_box, 1):
                fail(f"text outside the slide: {_short(line['text'])!r}")
                continue
            owners = [t for t in slide["texts"] if words in t["text"]
                      and inside(line["box"], t["box"], height)]  # its text, near its box
            owner = next((t for t in owners if inside(line["box"], t["box"])), None)
            if owner is None:
                fail(f"text outside its box: {_short(line['text'])!r}")
                continue
            kind = "table" if owner["table"] else "body"
            if line["points"] < MIN_POINTS[kind] - 0.5:
                fail(f"{kind} text of {line['points']:g} pt (under {MIN_POINTS[kind]} pt): "
                     f"{_short(line['text'])!r}")
        for image in page["images"]:
            if not inside(image, page_box, 1):
                fail("a picture outside the slide")
        if page["images"] and number > 1:
            share = covered_share(page["images"], width, height)
            if share < MIN_FIGURE_SHARE:
                fail(f"its pictures cover {share:.0%} of the slide (under "
                     f"{MIN_FIGURE_SHARE:.0%})")
    with tempfile.TemporaryDirectory(prefix="check-slides-png-") as tmp:
        folder = png_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("pptx-*.png"):
            old.unlink()
        subprocess.run(["pdftoppm", "-r", str(PNG_DPI), "-png", str(pdf),
                        str(folder / "pptx")], check=True, capture_output=True, timeout=120)
        pngs = sorted(folder.glob("pptx-*.png"))
        for number, png in enumerate(pngs, 1):
            share = ink(png)
            if share < MIN_INK:
                report.problems.append(Problem(deck, number, f"near-blank as rendered "
                                                             f"({share:.1%} ink)"))
        if png_dir:
            report.pngs += pngs


# ------------------------------------------------------- slides.html, as Chromium renders it

class DevTools:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4): no
    websocket client, no browser-automation package."""

    def __init__(self, binary: str):
        to_chrome, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome = os.pipe()

        def remap():  # the child's fd 3 reads commands, fd 4 writes replies
            a, b = os.dup(to_chrome), os.dup(from_chrome)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self._profile = tempfile.TemporaryDirectory(prefix="check-slides-chromium-")
        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--remote-debugging-pipe", "--no-first-run", "--mute-audio",
             f"--user-data-dir={self._profile.name}", "about:blank"],
            close_fds=False, preexec_fn=remap, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome)
        os.close(from_chrome)
        self._buffer, self._id, self.session = b"", 0, None

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, browser: bool = False, timeout: float = 60, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if self.session and not browser:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"Chromium, {method}: {reply['error']}")
                return reply["result"]

    def open(self, url: str) -> None:
        page = next(t for t in self.call("Target.getTargets", browser=True)["targetInfos"]
                    if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", browser=True,
                                 targetId=page["targetId"], flatten=True)["sessionId"]
        self.call("Page.enable")
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str, timeout: float = 60):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                           returnByValue=True, timeout=timeout)
        if "exceptionDetails" in result:
            raise RuntimeError(f"in the page: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        try:
            self.call("Browser.close", browser=True, timeout=10)
            self.process.wait(timeout=10)
        except Exception:  # noqa: BLE001  closing is best effort
            self.process.kill()
        finally:
            os.close(self._to_chrome)
            os.close(self._from_chrome)
            self._profile.cleanup()


READY_JS = """new Promise((resolve, reject) => {
  const start = Date.now();
  const go = () => (window.Reveal && Reveal.isReady()) ? resolve(Reveal.getConfig())
    : Date.now() - start > 30000 ? reject(new Error('reveal.js never got ready'))
    : setTimeout(go, 50);
  go();
})"""

# One slide, shown as in the talk: every text node's line boxes, font size and block box,
# every picture's box, all in the slide's own CSS pixels (reveal.js scales the slide).
MEASURE_JS = """(async (index) => {
  Reveal.slide(index);
  const slide = Reveal.getCurrentSlide();
  await Promise.all([...slide.querySelectorAll('img')].map(i => i.decode().catch(() => null)));
  Reveal.layout();
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const scale = Reveal.getScale();
  const frame = document.querySelector('.reveal .slides').getBoundingClientRect();
  const rel = r => [(r.left - frame.left) / scale, (r.top - frame.top) / scale,
                    (r.right - frame.left) / scale, (r.bottom - frame.top) / scale];
  const texts = [];
  const walker = document.createTreeWalker(slide, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const element = node.parentElement;
    if (!node.textContent.trim() || element.closest('aside.notes')) continue;
    const style = getComputedStyle(element);
    if (style.visibility === 'hidden') continue;
    const range = document.createRange();
    range.selectNodeContents(node);
    const lines = [...range.getClientRects()].filter(r => r.width > 0 && r.height > 0);
    if (!lines.length) continue;
    let block = element;
    while (block !== slide && getComputedStyle(block).display.startsWith('inline'))
      block = block.parentElement;
    texts.push({text: node.textContent.slice(0, 80), px: parseFloat(style.fontSize),
                table: !!element.closest('table'), lines: lines.map(rel),
                block: rel(block.getBoundingClientRect())});
  }
  const images = [...slide.querySelectorAll('img')].map(i => ({
    box: rel(i.getBoundingClientRect()), loaded: i.complete && i.naturalWidth > 0}));
  return {texts, images, clip: [frame.left, frame.top, frame.width, frame.height]};
})"""


def check_html(output_dir: Path, png_dir: Path | None, report: Report) -> None:
    html = output_dir / render_slides.OUTPUT_NAMES["revealjs"]
    deck = "slides.html"
    if re.search(r"<script src=\"https?://[^\"]*reveal", html.read_text(encoding="utf-8")):
        raise RuntimeError(f"{html} loads reveal.js from the web, which this offline check "
                           "cannot: render it with a local reveal.js (npm install "
                           "reveal.js@5.2.1 --prefix .venv/npm, as make does) or with Quarto")
    browser = DevTools(chromium())
    try:
        browser.open(html.resolve().as_uri())
        config = browser.evaluate(READY_JS)
        width, height = config["width"], config["height"]
        margin = 1 + config.get("margin", 0.04)
        browser.call("Emulation.setDeviceMetricsOverride", width=round(width * margin),
                     height=round(height * margin), deviceScaleFactor=1, mobile=False)
        browser.evaluate("Reveal.configure({controls: false, progress: false, "
                         "transition: 'none'}); Reveal.layout(); true")
        count = browser.evaluate("Reveal.getTotalSlides()")
        report.slides[deck] = count
        points = SLIDE_WIDTH_PT / width  # per CSS pixel of the slide
        slide_box = (0, 0, width, height)
        folder = png_dir or Path(tempfile.mkdtemp(prefix="check-slides-html-"))
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("html-*.png"):
            old.unlink()
        for index in range(count):
            number = index + 1

            def fail(what, number=number):
                report.problems.append(Problem(deck, number, what))

            shown = browser.evaluate(f"{MEASURE_JS}({index})")
            for text in shown["texts"]:
                # a line's box is the font's whole height, which overhangs a tight line
                # height: allow a fifth of the size up and down, a pixel sideways
                lines, dy = text["lines"], 0.2 * text["px"]
                if not all(inside(line, slide_box, 1, dy) for line in lines):
                    fail(f"text outside the slide: {_short(text['text'])!r}")
                elif not all(inside(line, text["block"], 1, dy) for line in lines):
                    fail(f"text outside its box: {_short(text['text'])!r}")
                kind = "table" if text["table"] else "body"
                size = text["px"] * points
                if size < MIN_POINTS[kind] - 0.5:
                    fail(f"{kind} text of {size:.1f} pt ({text['px']:g} px, under "
                         f"{MIN_POINTS[kind]} pt): {_short(text['text'])!r}")
            boxes = []
            for image in shown["images"]:
                if not image["loaded"]:
                    fail("a picture that did not load")
                if not inside(image["box"], slide_box, 1):
                    fail("a picture outside the slide")
                boxes.append(image["box"])
            if boxes and number > 1:
                share = covered_share(boxes, width, height)
                if share < MIN_FIGURE_SHARE:
                    fail(f"its pictures cover {share:.0%} of the slide (under "
                         f"{MIN_FIGURE_SHARE:.0%})")
            x, y, w, h = shown["clip"]
            shot = browser.call("Page.captureScreenshot", format="png",
                                clip={"x": x, "y": y, "width": w, "height": h, "scale": 1})
            png = folder / f"html-{number:02d}.png"
            png.write_bytes(base64.b64decode(shot["data"]))
            share = ink(png)
            if share < MIN_INK:
                fail(f"near-blank as rendered ({share:.1%} ink)")
            if png_dir:
                report.pngs.append(png)
        if not png_dir:
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        browser.close()


# ------------------------------------------------------------------ the talk

def spoken_words(notes: str) -> int:
    """Words a presenter says: the notes without [stage directions]."""
    return len(re.findall(r"\S+", re.sub(r"\[[^\]]*\]", " ", notes)))


def talk_sections(notes: list[str]) -> list[dict]:
    """The talk's sections in order, from the presenter markers in the slides' notes: who,
    what, the budget in minutes, its slides and their spoken words. Backup slides are
    skipped; slides before the first marker belong to the first section."""
    sections = []
    for number, text in enumerate(notes, 1):
        if text.lstrip().startswith(BACKUP):
            continue
        for match in MARKER.finditer(text):
            sections.append({"who": match.group(1), "topic": match.group(2),
                             "minutes": float(match.group(3)), "slides": [], "words": 0})
        if not sections:  # the title slide's own notes, before its marker
            sections.append({"who": "", "topic": "", "minutes": 0, "slides": [], "words": 0})
        sections[-1]["slides"].append(number)
        sections[-1]["words"] += spoken_words(text)
    if sections and not sections[0]["who"] and len(sections) > 1:  # fold into the first
        lead = sections.pop(0)
        sections[0]["slides"][:0] = lead["slides"]
        sections[0]["words"] += lead["words"]
    return sections


def check_talk(output_dir: Path, report: Report) -> None:
    """Each section's spoken words fit its minutes; all of them fit SPOKEN_MINUTES."""
    slides, _ = pptx_layout(output_dir / render_slides.OUTPUT_NAMES["pptx"])
    staged = (output_dir / render_slides.STAGED_NAME).read_text(encoding="utf-8")
    talk = render_slides.talk_plan(staged)
    pace = talk.get("words-per-minute", 130)
    sections = talk_sections([s["notes"] for s in slides])
    deck = "talk"
    if len(sections) != len(talk["sections"]):
        report.problems.append(Problem(deck, 0, f"{len(sections)} presenter sections in the "
                                                f"notes, {len(talk['sections'])} in the plan"))
    missing = [i for i, s in enumerate(slides, 1) if not s["notes"].strip()]
    if missing:
        report.problems.append(Problem(deck, missing[0], f"slides without notes: {missing}"))
    total_words = total_budget = 0
    for section in sections:
        spoken = section["words"] / pace
        total_words += section["words"]
        total_budget += section["minutes"]
        report.talk.append(f"{section['who']}: {section['topic']}, slides "
                           f"{section['slides'][0]}-{section['slides'][-1]}: "
                           f"{section['words']} words = {spoken:.1f} min of its "
                           f"{section['minutes']:g}")
        if spoken > section["minutes"] + 1e-9:
            report.problems.append(Problem(deck, section["slides"][0], f"{section['who']}'s "
                                   f"{section['words']} words take {spoken:.1f} min at {pace} "
                                   f"a minute, over the {section['minutes']:g} min planned"))
    total = total_words / pace
    report.talk.append(f"total: {total_words} spoken words = {total:.1f} min at {pace} words a "
                       f"minute (limit {SPOKEN_MINUTES}); planned {total_budget:g} min of "
                       f"{talk.get('limit-minutes', 12)}")
    if total > SPOKEN_MINUTES:
        report.problems.append(Problem(deck, 0, f"{total_words} spoken words take {total:.1f} "
                                                f"min, over {SPOKEN_MINUTES}"))
    if total_budget > SPOKEN_MINUTES:
        report.problems.append(Problem(deck, 0, f"the sections plan {total_budget:g} min, over "
                                                f"{SPOKEN_MINUTES}"))


# ------------------------------------------------------------------ all of it

def check_deck(output_dir: str | Path, png_dir: str | Path | None = None,
               formats: tuple[str, ...] = ("pptx", "revealjs")) -> Report:
    """Every check on the decks rendered in `output_dir`. Raises RuntimeError naming the
    tools that are missing."""
    missing = missing_tools()
    if missing:
        raise RuntimeError("the rendered check needs " + ", ".join(missing))
    output_dir = Path(output_dir)
    for fmt in formats:
        path = output_dir / render_slides.OUTPUT_NAMES[fmt]
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run render_slides.py (make slides)")
    png_dir = Path(png_dir) if png_dir else None
    report = Report()
    if "pptx" in formats:
        check_pptx(output_dir, png_dir, report)
        check_talk(output_dir, report)
    if "revealjs" in formats:
        check_html(output_dir, png_dir, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="_output",
                        help="where render_slides.py wrote slides.pptx and slides.html")
    parser.add_argument("--png-dir", default=None,
                        help="where to keep the PNG of every slide (default: "
                             "<output dir>/slides_png)")
    args = parser.parse_args(argv)
    png_dir = Path(args.png_dir or Path(args.output_dir) / "slides_png")
    try:
        report = check_deck(args.output_dir, png_dir)
    except (RuntimeError, FileNotFoundError) as error:
        print(f"check_slides.py: {error}", file=sys.stderr)
        return 2
    for deck, count in report.slides.items():
        print(f"{deck}: {count} slides checked as rendered")
    print("\n".join(report.talk))
    print(f"PNGs of every slide: {png_dir}/")
    if report.ok:
        print("rendered check: ok")
        return 0
    print(f"rendered check: {len(report.problems)} problem(s)")
    for problem in report.problems:
        print(f"  {problem}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
