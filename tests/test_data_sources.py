"""Tests of chapter 01's data sources: digests per mirror, the BookCorpus archive and its
Hub-parquet fallback, Yahoo archives and parquet, and the streaming BookCorpus reader.

Everything is served by a loopback HTTP server (`_Server` of test_data_prep.py) from
files built in the real on-disk formats; no test touches the network.
"""
import hashlib
import json
import tarfile
import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import speedup.files as files
import speedup.textdata as textdata
from speedup.registry import DATASETS
from speedup.files import DownloadError
from speedup.textdata import TextLines, prepare_text_dataset, read_bookcorpus
from speedup.data import fetch_dataset, read_voc2012
from speedup.samples import make_sample_bookcorpus, make_sample_yahoo_answers
from speedup.prepare import prepare_dataset
from test_data_prep import _Server, _sample_voc_tar

FRACTIONS = [0.7, 0.15, 0.15]
BOOK_SIZES = {"s": 20_000, "m": 60_000}


def _sha(path, name="sha256"):
    return hashlib.new(name, path.read_bytes()).hexdigest()


def _write_parquet(path, columns):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


@pytest.fixture()
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    (tmp_path / "www").mkdir()
    serving = _Server(tmp_path / "www")
    yield serving
    serving.httpd.shutdown()


# ---------------------------------------------------------------- digests per mirror

def test_sha1_pinned_mirror_is_accepted_and_other_bytes_fall_through(tmp_path, server):
    archive = _sample_voc_tar(tmp_path, "VOCtrainval_11-May-2012.tar")   # served from www/
    (tmp_path / "www" / "bad").mkdir()
    (tmp_path / "www" / "bad" / archive.name).write_text("<html>access blocked</html>")
    sha1 = _sha(archive, "sha1")
    mirrors = [
        {"url": f"{server.url}/bad/{archive.name}", "md5": "0" * 32},
        # like the d2l copy of VOC: pinned by sha1, and by an md5 it does not match
        {"url": f"{server.url}/{archive.name}", "sha1": sha1, "md5": "f" * 32},
    ]
    root = fetch_dataset("voc2012", mirrors, tmp_path / "cache")
    assert server.paths == [f"/bad/{archive.name}"] * 2 + [f"/{archive.name}"]
    record = json.loads((root / ".source.json").read_text())["files"][0]
    assert record["verified"] == ["sha1"] and record["sha1"] == sha1
    assert record["url"].endswith(f"/{archive.name}") and "note" not in record
    assert len(read_voc2012(root)[0]) == 30
    # a later run that must extract again re-checks the cached archive, without a request
    (root / ".source.json").unlink()
    fetch_dataset("voc2012", mirrors, tmp_path / "cache")
    assert len(server.requests) == 3


def test_mirror_pinned_by_sha1_rejects_other_bytes_with_both_digests(tmp_path, server):
    (tmp_path / "www" / "x.tar").write_bytes(b"not the archive")
    url = f"{server.url}/x.tar"
    with pytest.raises(DownloadError, match=rf"{url}: checksum mismatch: expected sha1 "
                                            rf"{'a' * 40}, got sha1 [0-9a-f]{{40}}"):
        files.download([{"url": url, "sha1": "a" * 40}], tmp_path / "dl" / "x.tar")
    assert not list((tmp_path / "dl").iterdir())


def test_registry_pins_every_mirror_and_voc_tries_the_d2l_copy_first():
    for name, spec in DATASETS.items():
        for mirror in spec.get("mirrors", []):
            assert set(mirror) & {"md5", "sha1", "sha256"}, (name, mirror["url"])
    voc = DATASETS["voc2012"]["mirrors"]
    assert voc[0]["url"] == ("http://d2l-data.s3-accelerate.amazonaws.com/"
                             "VOCtrainval_11-May-2012.tar")
    assert voc[0]["sha1"] == "4e443f8a2eca6b1dac8a6c57641b67dd40621a49"
    assert all(m["md5"] == "6cd6e144f989b92b3379bac3b3de84fd" for m in voc)


# ---------------------------------------------------------------- BookCorpus sources

@pytest.fixture()
def books(tmp_path, server):
    """The sample corpus as the real tar.bz2 (two files at its root) and as Hub parquet."""
    src = make_sample_bookcorpus(tmp_path / "src", n_lines=6000) / "bookcorpus"
    www = tmp_path / "www"
    with tarfile.open(www / "bookcorpus.tar.bz2", "w:bz2") as tar:
        for part in sorted(src.glob("*.txt")):
            tar.add(part, arcname=part.name)
    lines = [ln for part in sorted(src.glob("*.txt")) for ln in part.read_text().splitlines()]
    api = www / "api/datasets/bookcorpus/bookcorpus/parquet/plain_text/train"
    urls = []
    for k, chunk in enumerate((lines[:3500], lines[3500:])):   # shards cut mid-"book"
        _write_parquet(www / f"files/plain_text/train/{k:04d}.parquet", {"text": chunk})
        urls.append(f"{server.url}/files/plain_text/train/{k:04d}.parquet")
    api.parent.mkdir(parents=True)
    api.write_text(json.dumps(urls))
    return src, lines


def _use_sources(monkeypatch, name, sources):
    monkeypatch.setitem(DATASETS[name], "sources", sources)


def _book_texts(out, version):
    folder = out / "data" / "bookcorpus" / version
    return {s: (folder / f"{s}.txt").read_bytes() for s in ("train", "val", "test")}


def test_bookcorpus_archive_download_records_its_sha256(tmp_path, server, books, monkeypatch):
    src, lines = books
    archive = tmp_path / "www" / "bookcorpus.tar.bz2"
    url = f"{server.url}/bookcorpus.tar.bz2"
    _use_sources(monkeypatch, "bookcorpus", [
        {"kind": "archive", "archive": "bookcorpus.tar.bz2", "mirrors": [url]}])
    out, cache = tmp_path / "out", tmp_path / "cache"
    manifests = prepare_dataset("bookcorpus", "download", BOOK_SIZES, {}, 85, FRACTIONS, False,
                                0, out, cache, show=False)
    for m in manifests.values():
        (record,) = m["source_files"]
        assert record["file"] == "bookcorpus.tar.bz2" and record["url"] == url
        assert record["sha256"] == _sha(archive) and record["verified"] == []
        assert "no digest is published" in record["note"]
        assert m["source"] == "download" and m["source_report"]["lines"] == len(lines)
        for split, run in m["runs"].items():    # contiguous runs of the real lines
            stored = (out / "data/bookcorpus" / m["version"] / f"{split}.txt").read_text()
            assert stored.splitlines() == lines[run["first_line"]:][:run["n_lines"]]
    assert "No digest is published" in (out / "tables" / "data_bookcorpus.md").read_text()
    # the same files as read from the extracted folder in place
    prepare_text_dataset("bookcorpus", str(src), BOOK_SIZES, FRACTIONS, 0, tmp_path / "local",
                         tmp_path / "cache2")
    assert _book_texts(out, "m") == _book_texts(tmp_path / "local", "m")
    # a second run requests nothing; a damaged cached archive is caught by its recorded sha256
    prepare_text_dataset("bookcorpus", "download", BOOK_SIZES, FRACTIONS, 0, out, cache)
    assert server.paths == ["/bookcorpus.tar.bz2"]
    cached = cache / "downloads" / "bookcorpus.tar.bz2"
    assert json.loads(cached.with_name(cached.name + ".json").read_text())["sha256"] == \
        _sha(archive)
    cached.write_bytes(cached.read_bytes()[:-10] + b"0123456789")
    (cache / "bookcorpus" / ".source.json").unlink()
    again = prepare_text_dataset("bookcorpus", "download", BOOK_SIZES, FRACTIONS, 0, out,
                                 cache)
    assert server.paths == ["/bookcorpus.tar.bz2"] * 2 and _sha(cached) == _sha(archive)
    assert again["m"]["source_files"] == manifests["m"]["source_files"]


def test_bookcorpus_falls_back_to_hub_parquet(tmp_path, server, books, monkeypatch):
    src, lines = books
    _use_sources(monkeypatch, "bookcorpus", [
        {"kind": "archive", "archive": "bookcorpus.tar.bz2",
         "mirrors": [{"url": f"{server.url}/gone/bookcorpus.tar.bz2", "sha256": "0" * 64}]},
        {"kind": "hub-parquet", "repo": "bookcorpus/bookcorpus", "config": "plain_text",
         "splits": ["train"], "endpoint": server.url},
    ])
    out, cache = tmp_path / "out", tmp_path / "cache"
    manifests = prepare_text_dataset("bookcorpus", "download", BOOK_SIZES, FRACTIONS, 0, out,
                                     cache)
    assert server.paths == ["/gone/bookcorpus.tar.bz2",
                            "/api/datasets/bookcorpus/bookcorpus/parquet/plain_text/train",
                            "/files/plain_text/train/0000.parquet",
                            "/files/plain_text/train/0001.parquet"]
    records = manifests["m"]["source_files"]
    assert [r["file"] for r in records] == ["plain_text-train-00000.parquet",
                                            "plain_text-train-00001.parquet"]
    assert all(r["verified"] == [] and "no digest" in r["note"] for r in records)
    assert manifests["m"]["source_report"]["lines"] == len(lines)
    prepare_text_dataset("bookcorpus", str(src), BOOK_SIZES, FRACTIONS, 0, tmp_path / "local",
                         tmp_path / "cache2")
    for version in BOOK_SIZES:            # one reader: parquet gives the archive's versions
        assert _book_texts(out, version) == _book_texts(tmp_path / "local", version)


def test_every_bookcorpus_source_failing_names_each(tmp_path, server, monkeypatch):
    _use_sources(monkeypatch, "bookcorpus", [
        {"kind": "archive", "archive": "bookcorpus.tar.bz2",
         "mirrors": [f"{server.url}/gone/bookcorpus.tar.bz2"]},
        {"kind": "hub-parquet", "repo": "bookcorpus/bookcorpus", "config": "plain_text",
         "splits": ["train"], "endpoint": server.url},
    ])
    with pytest.raises(DownloadError, match=r"(?s)bookcorpus: no source.*gone/bookcorpus"
                                            r"\.tar\.bz2.*404.*hub-parquet bookcorpus/book"):
        prepare_text_dataset("bookcorpus", "download", BOOK_SIZES, FRACTIONS, 0,
                             tmp_path / "out", tmp_path / "cache")
    assert not (tmp_path / "cache" / "bookcorpus" / ".source.json").exists()


# ---------------------------------------------------------------- Yahoo sources

@pytest.fixture()
def yahoo(tmp_path):
    """The Yahoo sample as the distributed yahoo_answers_csv.tgz and as its CSV folder."""
    root = make_sample_yahoo_answers(tmp_path / "src", n_rows=1500)
    archive = tmp_path / "www" / "yahoo_answers_csv.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / "yahoo_answers_csv", arcname="yahoo_answers_csv")
    return root / "yahoo_answers_csv", archive


YAHOO_SIZES = {"s": 40_000}


def _yahoo_rows(out):
    return (out / "data" / "yahoo_answers" / "s" / "train.jsonl").read_bytes()


@pytest.mark.parametrize("where", ["local", "url"])
def test_yahoo_tgz_is_extracted_and_read(tmp_path, server, yahoo, where):
    folder, archive = yahoo
    source = str(archive) if where == "local" else f"{server.url}/{archive.name}"
    cache = tmp_path / "cache"
    manifests = prepare_text_dataset("yahoo_answers", source, YAHOO_SIZES, FRACTIONS, 0,
                                     tmp_path / "out", cache)
    (record,) = manifests["s"]["source_files"]
    assert record["file"] == "yahoo_answers_csv.tgz" and record["sha256"] == _sha(archive)
    assert (record.get("path") if where == "local" else record["url"]) is not None
    assert manifests["s"]["source_report"]["rows"] == 1500
    prepare_text_dataset("yahoo_answers", str(folder), YAHOO_SIZES, FRACTIONS, 0,
                         tmp_path / "plain", tmp_path / "cache2")
    assert _yahoo_rows(tmp_path / "out") == _yahoo_rows(tmp_path / "plain")
    again = prepare_text_dataset("yahoo_answers", source, YAHOO_SIZES, FRACTIONS, 0,
                                 tmp_path / "out", cache)
    assert again["s"]["source_files"] == manifests["s"]["source_files"]
    assert len(server.requests) == (where == "url")            # the cache answered


def test_yahoo_download_checks_hub_parquet_by_sha256_then_falls_back(tmp_path, server, yahoo,
                                                                     monkeypatch):
    folder, archive = yahoo
    pq_root = make_sample_yahoo_answers(tmp_path / "pq", n_rows=1500, fmt="parquet")
    www, revision = tmp_path / "www", "c0ffee"
    resolve = f"datasets/community-datasets/yahoo_answers_topics/resolve/{revision}"
    files = []
    for split in ("train", "test"):
        target = www / resolve / f"yahoo_answers_topics/{split}/0000.parquet"
        target.parent.mkdir(parents=True)
        target.write_bytes((pq_root / "yahoo_answers_topics" /
                            f"{split}-00000-of-00001.parquet").read_bytes())
        files.append({"path": f"yahoo_answers_topics/{split}/0000.parquet",
                      "sha256": _sha(target)})
    hub = {"kind": "hub-parquet", "repo": "community-datasets/yahoo_answers_topics",
           "config": "yahoo_answers_topics", "splits": ["train", "test"],
           "revision": revision, "endpoint": server.url, "files": files}
    tgz = {"kind": "archive", "archive": archive.name,
           "mirrors": [{"url": f"{server.url}/{archive.name}", "sha256": _sha(archive)}]}
    _use_sources(monkeypatch, "yahoo_answers", [hub, tgz])
    from_hub = prepare_text_dataset("yahoo_answers", "download", YAHOO_SIZES, FRACTIONS, 0,
                                    tmp_path / "hub", tmp_path / "cache")
    assert [r["verified"] for r in from_hub["s"]["source_files"]] == [["sha256"]] * 2
    assert not any(p.endswith(".tgz") for p in server.paths)
    # the parquet and the CSV release hold the same rows: the same version either way
    bad = {**hub, "files": [{**f, "sha256": "0" * 64} for f in files]}
    _use_sources(monkeypatch, "yahoo_answers", [bad, tgz])
    from_tgz = prepare_text_dataset("yahoo_answers", "download", YAHOO_SIZES, FRACTIONS, 0,
                                    tmp_path / "tgz", tmp_path / "cache3")
    assert from_tgz["s"]["source_files"][0]["verified"] == ["sha256"]
    assert server.paths[-1] == f"/{archive.name}"
    assert server.paths.count(f"/{resolve}/yahoo_answers_topics/train/0000.parquet") == 3
    assert _yahoo_rows(tmp_path / "hub") == _yahoo_rows(tmp_path / "tgz")


# ---------------------------------------------------------------- the streaming reader

def test_text_lines_slices_match_the_files(tmp_path):
    rng = np.random.default_rng(0)
    words = ["the", "old", "house", "é", ",", "."]
    lines = [" ".join(rng.choice(words, rng.integers(0, 6))) for _ in range(139)] + ["end"]
    (tmp_path / "a.txt").write_text("".join(f"{ln}\n" for ln in lines[:61]))
    (tmp_path / "b.txt").write_text("\n".join(lines[61:]))      # no final newline
    index = tmp_path / "index.json"
    text = TextLines([tmp_path / "a.txt", tmp_path / "b.txt"], stride=7, index_path=index)
    assert len(text) == len(lines) and text[-1] == lines[-1] and text[60] == lines[60]
    for lo, hi in [(0, 140), (5, 9), (55, 70), (61, 62), (139, 200), (30, 30), (-3, None)]:
        assert text[lo:hi] == lines[lo:hi], (lo, hi)
    assert [text[k] for k in range(50, 66)] == lines[50:66]     # sequential, no seeks
    with pytest.raises(IndexError):
        text[140]

    def no_scan(*args):
        raise AssertionError("the cached index was not used")
    saved, textdata._scan_lines = textdata._scan_lines, no_scan
    try:
        assert TextLines([tmp_path / "a.txt", tmp_path / "b.txt"], stride=7,
                         index_path=index)[60:63] == lines[60:63]
    finally:
        textdata._scan_lines = saved
    (tmp_path / "b.txt").write_text("changed\n")                 # a stale index is rebuilt
    assert len(TextLines([tmp_path / "a.txt", tmp_path / "b.txt"], stride=7,
                         index_path=index)) == 62


def test_bookcorpus_versions_are_built_in_memory_far_below_the_corpus(tmp_path):
    """A reader that held the corpus (as today's `datasets` column of strings did, or a
    plain read of the file) would need more than the file's size."""
    sample = make_sample_bookcorpus(tmp_path / "pool", n_lines=2000) / "bookcorpus"
    pool = np.array([ln for f in sorted(sample.glob("*.txt"))
                     for ln in f.read_text().splitlines()])
    folder = tmp_path / "big"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for part in (1, 2):
        rows = pool[rng.integers(0, len(pool), 450_000)]
        (folder / f"books_large_p{part}.txt").write_text("\n".join(rows.tolist()) + "\n")
    size = sum(f.stat().st_size for f in folder.glob("*.txt"))
    assert size > 30e6
    sizes = {"s": 100_000, "m": 300_000}
    tracemalloc.start()
    try:
        manifests = prepare_text_dataset("bookcorpus", str(folder), sizes, FRACTIONS, 0,
                                         tmp_path / "out", tmp_path / "cache")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert manifests["m"]["source_report"]["lines"] == 900_000
    assert peak < size / 4, f"peak {peak:,} B while reading a {size:,} B corpus"
    lines = read_bookcorpus(folder)
    for m in manifests.values():
        for split, run in m["runs"].items():
            stored = (tmp_path / "out/data/bookcorpus" / m["version"] / f"{split}.txt")
            assert stored.read_text().splitlines() == \
                lines[run["first_line"]:run["first_line"] + run["n_lines"]]
