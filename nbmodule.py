"""Import the exported cells of a chapter notebook as a Python module.

The chapters in ``chapters/`` are the only home of the study's code. A code
cell whose first line is ``#| export`` holds a definition that other chapters,
the tests and the batch runner reuse. Importing ``speedup.<topic>`` runs the
exported cells of ``chapters/NN_<topic>.ipynb`` (plus its ``#| chapter-import``
cells, which bring in the earlier chapters it builds on) in a fresh module::

    import nbmodule                      # registers the importer
    from speedup.method import progressive_size

Nothing is generated on disk, so a chapter edit is seen on the next import.
``merge_notebook.py`` uses the same cell markers to lay the chapters out once,
inline, in ``speedup.ipynb``.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent
CHAPTERS = ROOT / "chapters"
PACKAGE = "speedup"

EXPORT = "#| export"
CHAPTER_IMPORT = "#| chapter-import"
PER_RUN = "#| per-run"


def cell_marker(cell) -> str | None:
    """The ``#| ...`` marker on a code cell's first line, or None."""
    if cell.cell_type != "code" or not cell.source.startswith("#|"):
        return None
    return cell.source.splitlines()[0].strip()


def chapter_path(topic: str) -> Path:
    """``data_prep`` -> ``chapters/01_data_prep.ipynb``."""
    matches = sorted(CHAPTERS.glob(f"[0-9][0-9]_{topic}.ipynb"))
    if len(matches) != 1:
        known = sorted(p.stem[3:] for p in CHAPTERS.glob("[0-9][0-9]_*.ipynb"))
        raise ModuleNotFoundError(
            f"no chapter for '{PACKAGE}.{topic}' in {CHAPTERS}; known: {known}")
    return matches[0]


def exported_source(path: Path) -> list[str]:
    """The code of the cells a module built from ``path`` runs, in order."""
    nb = nbformat.read(path, as_version=4)
    return [c.source for c in nb.cells
            if cell_marker(c) in (EXPORT, CHAPTER_IMPORT)]


class _ChapterLoader(importlib.abc.Loader):
    def __init__(self, path: Path | None):
        self.path = path

    def create_module(self, spec):
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        if self.path is None:  # the package itself
            module.__path__ = []
            return
        module.__file__ = str(self.path)
        for i, source in enumerate(exported_source(self.path)):
            code = compile(source, f"{self.path}#cell{i}", "exec")
            exec(code, module.__dict__)


class _ChapterFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == PACKAGE:
            return importlib.machinery.ModuleSpec(
                fullname, _ChapterLoader(None), is_package=True)
        if fullname.startswith(PACKAGE + "."):
            topic = fullname.split(".", 1)[1]
            return importlib.machinery.ModuleSpec(
                fullname, _ChapterLoader(chapter_path(topic)))
        return None


if not any(isinstance(f, _ChapterFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _ChapterFinder())
