"""Benchmark of the text data stage: peak memory and time of the 1 MB / 10 MB / 100 MB
versions of BookCorpus and Yahoo Answers, cut from full-size synthetic corpora.

`make bench-text-data` runs it. It writes, once, into `_cache/bench/` (git-ignored):

- a BookCorpus look-alike in the real layout (`books_large_p1.txt`, `books_large_p2.txt`,
  one lower-cased, pre-tokenised sentence per line, ~65 bytes a line as in the real 4.85 GB
  / 74 M lines), `--book-gb` GB of it (default 1.2, the size of the compressed archive),
  from the chapter's own sentence grammar: a pool of sentences is generated, then lines
  are drawn from it with numpy and written a million at a time;
- a Yahoo Answers CSV release look-alike (`yahoo_answers_csv/{train,test}.csv`, 1.4 M +
  60 k rows, ~780 MB) drawn the same way from the chapter's sample rows.

Each measurement runs the chapter's own `prepare_dataset` (speedup.prepare, exported
from chapters/01_data_prep.ipynb) in a fresh child process, which reports its peak resident
memory (`ru_maxrss`) and wall time. Figures go to BENCHMARKS-text-data.md and, as data, to
_output/bench/text_data.json. Target: peak memory <= 3 GB (Colab's free runtime has 12.7).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from speedup.samples import (  # noqa: E402
    _TOPIC_WORDS, _sample_book_sentence, _sample_yahoo_rows,
)

GENERATOR = 1    # bump when the generators change, so the cached corpora are rebuilt
SIZES = {"1MB": 1_000_000, "10MB": 10_000_000, "100MB": 100_000_000}
YAHOO_ROWS = {"train": 1_400_000, "test": 60_000}
GB = 1e9


def _done(folder: Path, wanted: dict) -> bool:
    marker = folder / "done.json"
    return marker.exists() and {k: json.loads(marker.read_text()).get(k) for k in wanted} \
        == wanted


def _write_drawn(path: Path, pool: np.ndarray, n: int, rng, chunk=1_000_000) -> int:
    """Write `n` lines drawn from `pool` (lines with their newline); returns the bytes."""
    written = 0
    with open(path, "wb") as f:
        for start in range(0, n, chunk):
            block = "".join(pool[rng.integers(0, len(pool), min(chunk, n - start))]
                            .tolist()).encode()
            f.write(block)
            written += len(block)
    return written


def make_bookcorpus(folder: Path, gigabytes: float, seed: int = 0) -> Path:
    """`gigabytes` of BookCorpus-format text in `folder` (cached)."""
    wanted = {"generator": GENERATOR, "gigabytes": gigabytes, "seed": seed}
    if _done(folder, wanted):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    # one to three grammar sentences a line: ~65 bytes, the real corpus's mean
    sentences = [_sample_book_sentence(rng, int(rng.integers(len(_TOPIC_WORDS))))
                 for _ in range(60_000)]
    pool = np.array([" ".join(sentences[j] for j in rng.integers(0, len(sentences),
                                                               int(rng.integers(1, 4))))
                     + "\n" for _ in range(40_000)], dtype=object)
    mean = sum(len(s) for s in pool) / len(pool)
    n_lines = int(gigabytes * GB / mean)
    total = sum(_write_drawn(folder / f"books_large_p{k}.txt", pool, n_lines // 2, rng)
                for k in (1, 2))
    info = {**wanted, "lines": n_lines // 2 * 2, "bytes": total,
            "seconds": round(time.perf_counter() - started, 1)}
    (folder / "done.json").write_text(json.dumps(info))
    print(f"wrote {total / GB:.2f} GB of BookCorpus-format text ({info['lines']:,} lines) "
          f"in {info['seconds']} s")
    return folder


def make_archive(books: Path) -> Path:
    """`books` as a .tar.bz2 with the two files at its root, as the real one (cached)."""
    archive = books.with_name(books.name + ".tar.bz2")
    if not archive.exists():
        started = time.perf_counter()
        partial = archive.with_name(archive.name + ".partial")
        with tarfile.open(partial, "w:bz2", compresslevel=1) as tar:   # level 1: faster
            for part in sorted(books.glob("books_large_p*.txt")):
                tar.add(part, arcname=part.name)
        partial.replace(archive)
        print(f"wrote {archive.name} ({archive.stat().st_size / GB:.2f} GB) in "
              f"{time.perf_counter() - started:.0f} s")
    return archive


def make_yahoo_csv(folder: Path, seed: int = 0) -> Path:
    """A full-size Yahoo Answers CSV release in `folder/yahoo_answers_csv/` (cached)."""
    wanted = {"generator": GENERATOR, "rows": YAHOO_ROWS, "seed": seed}
    if _done(folder, wanted):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "yahoo_answers_csv").mkdir(parents=True)
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    rows = _sample_yahoo_rows(40_000, seed)
    lines = []
    for topic, title, content, answer, *_ in rows:   # (the sample's difficulty is not in the CSV)
        # the real best answers are longer than the sample's: ~530 bytes a row in all
        answer = "\\n".join([answer] * (2 + (rng.random() < 0.35)))
        buffer = io.StringIO()
        csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\n").writerow(
            (topic + 1, title, content, answer))
        lines.append(buffer.getvalue())
    pool = np.array(lines, dtype=object)
    total = sum(_write_drawn(folder / "yahoo_answers_csv" / f"{split}.csv", pool, n, rng)
                for split, n in YAHOO_ROWS.items())
    info = {**wanted, "bytes": total, "seconds": round(time.perf_counter() - started, 1)}
    (folder / "done.json").write_text(json.dumps(info))
    print(f"wrote a {total / 1e6:.0f} MB Yahoo Answers CSV release in {info['seconds']} s")
    return folder


CHILD = textwrap.dedent("""
    import json, resource, sys, time
    started = time.perf_counter()
    sys.path.insert(0, {root!r})
    from speedup.prepare import prepare_dataset
    from speedup.textdata import TextLines, _files
    import_s = time.perf_counter() - started
    started = time.perf_counter()
    if {task!r} == "import":
        result = {{}}
    elif {task!r} == "index":
        result = {{"lines": len(TextLines(_files({source!r}, ".txt")))}}
    else:
        manifests = prepare_dataset({dataset!r}, {source!r}, {sizes!r}, {{}}, 85,
                                    [0.7, 0.15, 0.15], False, 0, {out!r}, {cache!r},
                                    show=False)
        from speedup.data import version_dir
        result = {{"versions": {{v: {{"bytes": m["bytes"], "items": m["n_items"]["total"],
                                    "files": sum(p.is_file() for p in version_dir(
                                        {out!r}, {dataset!r}, v).rglob("*"))}}
                                for v, m in manifests.items()}}}}
    result["wall_s"] = round(time.perf_counter() - started, 2)
    result["import_s"] = round(import_s, 2)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print("RESULT " + json.dumps(result))
""")


def measure(task: str, dataset: str = "", source: str = "", out: Path = Path(),
            cache: Path = Path()) -> dict:
    """Run one task in a fresh Python process; its own peak RSS and wall time."""
    code = CHILD.format(root=str(ROOT), task=task, dataset=dataset, source=str(source),
                        sizes=SIZES, out=str(out), cache=str(cache))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"{task} {dataset} failed:\n{done.stdout[-3000:]}"
                           f"{done.stderr[-3000:]}")
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    print(f"{task} {dataset}: {result}")
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--book-gb", type=float, default=1.2,
                        help="GB of synthetic BookCorpus text (the real corpus: 4.85)")
    parser.add_argument("--archive", action="store_true",
                        help="also time BookCorpus from its .tar.bz2 (built once: minutes)")
    parser.add_argument("--no-yahoo", action="store_true",
                        help="skip the full-size Yahoo Answers CSV")
    parser.add_argument("--cache-dir", default="_cache/bench")
    parser.add_argument("--output", default="BENCHMARKS-text-data.md")
    args = parser.parse_args(argv)
    bench = Path(args.cache_dir).resolve()
    books = make_bookcorpus(bench / f"bookcorpus_{args.book_gb:g}gb", args.book_gb)
    book_info = json.loads((books / "done.json").read_text())
    work = bench / "text_data"
    shutil.rmtree(work, ignore_errors=True)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}",
        "load_average_at_start": round(os.getloadavg()[0], 1),
        "sizes": SIZES,
        "import_only": measure("import"),
        "bookcorpus": {"corpus_bytes": book_info["bytes"], "corpus_lines": book_info["lines"],
                       "generated_in_s": book_info["seconds"]},
    }
    b = result["bookcorpus"]
    b["index_pass"] = measure("index", source=books)
    b["first_run"] = measure("prepare", "bookcorpus", books, work / "out", work / "cache")
    shutil.rmtree(work / "out")          # versions gone, line index kept
    b["rerun_cached_index"] = measure("prepare", "bookcorpus", books, work / "out",
                                      work / "cache")
    if args.archive:
        archive = make_archive(books)
        b["archive_bytes"] = archive.stat().st_size
        b["from_archive"] = measure("prepare", "bookcorpus", archive, work / "out_archive",
                                    work / "cache_archive")
    if not args.no_yahoo:
        yahoo = make_yahoo_csv(bench / "yahoo_answers_full")
        info = json.loads((yahoo / "done.json").read_text())
        result["yahoo"] = {"corpus_bytes": info["bytes"],
                           "corpus_rows": sum(YAHOO_ROWS.values()),
                           "generated_in_s": info["seconds"],
                           "first_run": measure("prepare", "yahoo_answers",
                                                yahoo / "yahoo_answers_csv", work / "out",
                                                work / "cache")}
    result["load_average_at_end"] = round(os.getloadavg()[0], 1)
    data = ROOT / "_output" / "bench"
    data.mkdir(parents=True, exist_ok=True)
    (data / "text_data.json").write_text(json.dumps(result, indent=1) + "\n")
    Path(args.output).write_text(render(result))
    print(render(result))


def render(r: dict) -> str:
    """BENCHMARKS-text-data.md from the result dict."""
    b = r["bookcorpus"]
    lines = [
        "# Benchmarks: the text data stage",
        "",
        "*Generated by `make bench-text-data` (`bench_text_data.py`); figures from its last "
        "run.*",
        "",
        "Each row is one fresh Python process running the data chapter's own code "
        "(`prepare_dataset` of `speedup.prepare`, exported from "
        "`chapters/01_data_prep.ipynb`) to build the 1 MB, 10 MB and 100 MB versions; "
        "*peak memory* is that process's `ru_maxrss`. "
        f"Machine: {r['machine']}; load average {r['load_average_at_start']} at the start, "
        f"{r['load_average_at_end']} at the end (other work on the machine slows the "
        "times, not the memory). The corpora are synthetic, in the real on-disk formats, "
        "and read from the page cache.",
        "",
        "| what | corpus | wall time | lines (rows) per s | peak memory |",
        "|---|---:|---:|---:|---:|",
        f"| Python + the chapter's imports (torch, pyarrow, ...) only | — "
        f"| {r['import_only']['import_s']:.1f} s | — "
        f"| {r['import_only']['peak_rss_mb']:,.0f} MB |",
    ]
    n, size = b["corpus_lines"], b["corpus_bytes"]
    runs = [("BookCorpus: line index pass only (`TextLines`)", b["index_pass"]),
            ("BookCorpus: first run (index pass + 3 versions)", b["first_run"]),
            ("BookCorpus: rerun, line index cached", b["rerun_cached_index"])]
    if "from_archive" in b:
        runs.append((f"BookCorpus: from a {b['archive_bytes'] / 1e9:.2f} GB `.tar.bz2` "
                     f"(digests, extraction, index, 3 versions)", b["from_archive"]))
    for label, run in runs:
        lines.append(f"| {label} | {size / 1e9:.2f} GB, {n / 1e6:.1f} M lines "
                     f"| {run['wall_s']:.1f} s | {n / run['wall_s'] / 1e6:.2f} M "
                     f"| **{run['peak_rss_mb']:,.0f} MB** |")
    if "yahoo" in r:
        y = r["yahoo"]
        run, rows = y["first_run"], y["corpus_rows"]
        lines.append(f"| Yahoo Answers: CSV release -> 3 versions "
                     f"| {y['corpus_bytes'] / 1e6:.0f} MB, {rows / 1e6:.2f} M rows "
                     f"| {run['wall_s']:.1f} s | {rows / run['wall_s'] / 1e3:.0f} k "
                     f"| **{run['peak_rss_mb']:,.0f} MB** |")
    lines += ["", "| dataset | version | bytes stored | lines / rows | files on disk |",
              "|---|---|---:|---:|---:|"]
    for name, runs in (("BookCorpus", b["first_run"]),
                       ("Yahoo Answers", r.get("yahoo", {}).get("first_run"))):
        for v, m in (runs or {}).get("versions", {}).items():
            lines.append(f"| {name} | {v} | {m['bytes']:,} | {m['items']:,} "
                         f"| {m.get('files', '?')} |")
    lines += ["", f"Target: peak memory <= 3 GB while building the largest versions. "
              f"BookCorpus is read as a stream (an index of every 100,000th line's offset), "
              f"so its memory does not grow with the corpus; the real 4.85 GB corpus only "
              f"lengthens the index pass (about {4.85e9 / size:.1f}x this one)."]
    if "from_archive" in b:   # the archive run minus the cached rerun: mostly bz2
        rate = size / (b["from_archive"]["wall_s"] - b["rerun_cached_index"]["wall_s"])
        lines[-1] += (f" Extracting the `.tar.bz2` ran at about {rate / 1e6:.0f} MB of text "
                      f"per s, so the real archive (4.85 GB of text) takes about "
                      f"{4.85e9 / rate / 60:.0f} min.")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
