"""Make the chapters importable as ``speedup.<topic>`` (see nbmodule.py)."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nbmodule  # noqa: E402,F401  registers the chapter importer
