"""Benchmark of the data stage: cutting a Caltech-256-sized archive into its 3 versions.

`make bench-data` runs it. It writes a synthetic archive in Caltech-256's layout with the
real image count and size distribution (30,607 JPEGs, ~39 KB each, 256 classes + clutter,
80-827 images per class; `--images` scales the count down), then times the chapter's own
code (`read_caltech256` + `build_size_versions` of `speedup.data`, exported from
chapters/01_data_prep.ipynb) building the cv-full profile's versions (1 MB / 10 MB /
100 MB at 32 / 64 / 128 px, JPEG quality 75) on all cores, and Pillow's `draft` against a
plain decode on one core.
Figures go to BENCHMARKS.md and, as data, to _output/bench/data_prep.json.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from speedup.data import (  # noqa: E402
    VersionSettings, build_size_versions, encode_image, parallel_map, read_caltech256,
)

REAL_IMAGES = 30_607
GENERATOR = 2   # bump when _synthetic_jpeg changes, so the cached archive is rebuilt
FULL = {"sizes": {"1MB": 1_000_000, "10MB": 10_000_000, "100MB": 100_000_000},
        "short_sides": {"1MB": 32, "10MB": 64, "100MB": 128}, "jpeg_quality": 75}


def _synthetic_jpeg(job):
    """One photo-like JPEG (smooth colour field + sensor noise), ~39 KB on average."""
    path, seed = job
    rng = np.random.default_rng(seed)
    short = int(rng.integers(180, 300))
    long = int(short * rng.uniform(1.0, 1.5))
    w, h = (long, short) if rng.random() < 0.7 else (short, long)
    field = rng.normal(0, 1, (h // 8 + 1, w // 8 + 1, 3))
    smooth = Image.fromarray(np.clip(128 + 60 * field, 0, 255).astype(np.uint8))
    smooth = np.asarray(smooth.resize((w, h), Image.Resampling.BICUBIC), dtype=float)
    pixels = np.clip(smooth + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    if rng.random() < 0.04:
        image = image.convert("L")          # Caltech-256 has some grayscale JPEGs
    image.save(path, "JPEG", quality=87)   # calibrated: ~39 KB mean, as Caltech-256
    return path.stat().st_size


def make_archive(root: Path, n_images: int, seed: int = 0) -> Path:
    """Caltech-256's layout and class-size spread (80-827), scaled to `n_images`."""
    marker = root / "done.json"
    wanted = {"n_images": n_images, "generator": GENERATOR}
    if marker.exists() and {k: json.loads(marker.read_text()).get(k) for k in wanted} == wanted:
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    weights = np.exp(rng.uniform(np.log(80), np.log(827), 257))
    counts = np.maximum(3, np.round(weights / weights.sum() * n_images).astype(int))
    jobs = []
    for c, count in enumerate(counts):
        name = "clutter" if c == 256 else f"class{c + 1:03d}"
        folder = root / "256_ObjectCategories" / f"{c + 1:03d}.{name}"
        folder.mkdir(parents=True)
        jobs += [(folder / f"{c + 1:03d}_{j + 1:04d}.jpg", seed * 10**6 + len(jobs) + j)
                 for j in range(count)]
    started = time.perf_counter()
    sizes = parallel_map(_synthetic_jpeg, jobs)
    print(f"wrote {len(jobs):,} JPEGs, mean {np.mean(sizes) / 1e3:.1f} KB, "
          f"in {time.perf_counter() - started:.0f} s")
    marker.write_text(json.dumps({**wanted, "mean_bytes": float(np.mean(sizes))}))
    return root


def _plain_encode(path, short_side, quality):
    """encode_image without `draft`: full-size decode, then resize."""
    with Image.open(path) as image:
        w, h = image.size
        scale = short_side / min(w, h)
        image = image.convert("RGB").resize(
            (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def one_core_rate(function, paths, side, quality):
    started = time.perf_counter()
    for path in paths:
        function(path, side, quality)
    return len(paths) / (time.perf_counter() - started)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=REAL_IMAGES,
                        help=f"images in the synthetic archive (real: {REAL_IMAGES:,})")
    parser.add_argument("--cache-dir", default="_cache/bench")
    parser.add_argument("--output", default="BENCHMARKS.md")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    root = make_archive(Path(args.cache_dir) / f"caltech_{args.images}", args.images)
    mean_kb = json.loads((root / "done.json").read_text())["mean_bytes"] / 1e3

    out = Path(args.cache_dir) / "versions"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    records, classes, skipped = read_caltech256(root, include_clutter=False)
    read_s = time.perf_counter() - started
    settings = VersionSettings(split_fractions=[0.7, 0.15, 0.15], seed=0, **FULL)
    manifests = build_size_versions(records, classes, multi_label=False, settings=settings,
                                    out_dir=out, dataset="bench")
    total_s = time.perf_counter() - started
    # every image is encoded once per short side up to the prefix its budget needs
    encoded = sum(min(len(records), m["n_images"]["total"] + 64) for m in manifests.values())
    sample = [p for p, _ in records[:: max(1, len(records) // 200)]][:200]
    rates = {side: {"draft": one_core_rate(encode_image, sample, side, 75),
                    "plain": one_core_rate(_plain_encode, sample, side, 75)}
             for side in (32, 64, 128)}
    result = {
        "machine": f"{platform.machine()}, {cores} cores, {platform.python_version()}, "
                   f"Pillow {Image.__version__}",
        "load_average_at_end": os.getloadavg()[0],
        "images": len(records), "classes": len(classes), "mean_jpeg_kb": round(mean_kb, 1),
        "read_s": round(read_s, 2), "total_s": round(total_s, 2),
        "images_per_s_per_core": round(len(records) / total_s / cores, 1),
        "encodes_per_s_per_core": round(encoded / total_s / cores, 1),
        "one_core_encodes_per_s": {s: {k: round(v, 1) for k, v in r.items()}
                                   for s, r in rates.items()},
        "versions": {v: {**{k: m[k] for k in ("bytes", "budget_bytes", "n_images",
                                               "tv_distance")},
                         # what a Google Drive folder holds: files, not images
                         "files_on_disk": sum(p.is_file() for p in (out / v).rglob("*")),
                         "bytes_on_disk": sum(p.stat().st_size for p in (out / v).rglob("*"))}
                     for v, m in manifests.items()},
    }
    data = ROOT / "_output" / "bench"
    data.mkdir(parents=True, exist_ok=True)
    (data / "data_prep.json").write_text(json.dumps(result, indent=1) + "\n")
    Path(args.output).write_text(render(result))
    print(json.dumps(result, indent=1))


def render(r):
    """BENCHMARKS.md from the result dict."""
    lines = [
        "# Benchmarks",
        "",
        "*Generated by `make bench-data` (`bench_data.py`); figures from its last run.*",
        "",
        "## Data stage: Caltech-256-sized archive -> 1 MB / 10 MB / 100 MB versions",
        "",
        f"Synthetic archive in Caltech-256's layout: {r['images']:,} JPEGs in "
        f"{r['classes']} classes (+ clutter, not used), {r['mean_jpeg_kb']} KB on average "
        f"(the real archive: 30,607 JPEGs, ~39 KB). Versions at 32 / 64 / 128 px, JPEG "
        f"quality 75 (the cv-full profile). Machine: {r['machine']}; load average at the "
        f"end {r['load_average_at_end']:.1f} (other work on the machine lowers the figures).",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| wall time, read + all 3 versions | {r['total_s']:.1f} s (read {r['read_s']:.1f} s) |",
        f"| source images per second per core (images / wall time / cores) "
        f"| **{r['images_per_s_per_core']:.0f}** |",
        f"| JPEG re-encodes per second per core (all 3 short sides; count approximate) "
        f"| {r['encodes_per_s_per_core']:.0f} |",
    ]
    for side, rate in r["one_core_encodes_per_s"].items():
        lines.append(f"| one core, {side} px: with `draft` / full decode "
                     f"| {rate['draft']:.0f} / {rate['plain']:.0f} per s |")
    lines += ["", "| version | bytes | budget | images | TV distance | files on disk "
              "| bytes on disk |", "|---|---:|---:|---:|---:|---:|---:|"]
    for v, m in r["versions"].items():
        lines.append(f"| {v} | {m['bytes']:,} | {m['budget_bytes']:,} "
                     f"| {m['n_images']['total']:,} | {m['tv_distance']:.4f} "
                     f"| {m['files_on_disk']} | {m['bytes_on_disk']:,} |")
    lines += ["", "A version is `images.bin` (its JPEG files back to back: exactly `bytes`) "
              "and `manifest.json`, whatever its size; `bytes on disk` adds the manifest."]
    lines += ["", "Target: >= 300 source images per second per core.", "",
              "The text datasets' data stage (peak memory while building the 1 / 10 / 100 MB "
              "versions from a 1.2 GB BookCorpus-format corpus and a full-size Yahoo CSV): "
              "`BENCHMARKS-text-data.md` (`make bench-text-data`).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
