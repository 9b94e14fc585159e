"""The package speedup/ (generated from the chapters by nbexport.py) is imported from this
checkout."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# `make test` runs the files on 2 workers, a file at a time (`--dist loadfile`, so a
# file's module fixtures run once). xdist hands files out in collection order; the files
# that run a whole study go first, longest first, so that the short ones fill in at the
# end instead of one long file running alone at the end (`--no-loadscope-reorder` keeps
# this order: xdist's own puts the files with the most tests first).
# Measured on 2 cores (s): report_nlp 196, report 195, engines 180, faults 165, batch 155,
# informative_nlp 145, informative_cv 100, arms 91, data_prep 41, study 40.
LONGEST_FIRST = ["test_report_nlp.py", "test_report.py", "test_engines.py", "test_faults.py",
                 "test_batch.py", "test_informative_nlp.py", "test_informative_cv.py",
                 "test_arms.py", "test_data_prep.py", "test_study.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable within a file
