"""Tests of chapter 01 (data prep): formats, readers, size versions, loading, fetching."""
import hashlib
import http.server
import io
import json
import re
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from PIL import Image

from speedup.samples import (
    CALTECH_NAMES, SAMPLE_DIFFICULTY, SAMPLE_FORMAT, make_sample_bookcorpus,
    make_sample_caltech256, make_sample_voc2012, make_sample_yahoo_answers,
)
from speedup.registry import DATASETS, VOC_CLASSES
from speedup.files import ArchiveError, DownloadError, download, safe_extract
from speedup.data import (
    IMAGE_SHARD, DamagedVersionError, UnknownVersionError, VersionSettings,
    build_size_versions, encode_image, fetch_dataset, load_version, nested_order,
    read_caltech256, read_stored_file, read_version_image, read_version_manifest, read_voc2012,
    read_voc_annotation,
)
from speedup.textdata import load_text_version, read_yahoo_answers, version_tokenizer
from speedup.prepare import prepare_dataset

N_CLASSES = 6
# growing budgets with growing short sides: nesting must still hold
SIZES = {"s": 20_000, "m": 60_000, "l": 150_000}
SIDES = {"s": 16, "m": 24, "l": 32}
FRACTIONS = [0.7, 0.15, 0.15]


@pytest.fixture(scope="module")
def caltech(tmp_path_factory):
    root = make_sample_caltech256(tmp_path_factory.mktemp("caltech"), n_classes=N_CLASSES,
                                  images_per_class=(30, 90), n_clutter=10)
    return root, read_caltech256(root)


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = make_sample_voc2012(tmp_path_factory.mktemp("voc"), n_images=400, n_unlisted=7)
    return root, read_voc2012(root)


def build(data, out_dir, name, seed=0, **overrides):
    records, classes, _ = data
    settings = dict(sizes=SIZES, short_sides=SIDES, jpeg_quality=85,
                    split_fractions=FRACTIONS, seed=seed)
    settings.update(overrides)
    return build_size_versions(records, classes, multi_label=DATASETS[name]["multi_label"],
                               settings=VersionSettings(**settings), out_dir=out_dir,
                               dataset=name)


@pytest.fixture(scope="module")
def built(tmp_path_factory, caltech, voc):
    out = tmp_path_factory.mktemp("out")
    return out, {"caltech256": build(caltech[1], out / "data" / "caltech256", "caltech256"),
                 "voc2012": build(voc[1], out / "data" / "voc2012", "voc2012")}


# ---------------------------------------------------------------- formats and readers

def test_caltech_sample_layout_and_reader(caltech):
    root, (records, classes, skipped) = caltech
    top = root / "256_ObjectCategories"
    folders = sorted(p.name for p in top.iterdir())
    assert folders[:3] == ["001.ak47", "002.american-flag", "003.backpack"]
    assert folders[-1] == "257.clutter" and len(folders) == N_CLASSES + 1
    for folder in top.iterdir():
        number = folder.name[:3]
        names = [p.name for p in folder.iterdir() if p.suffix == ".jpg"]
        assert names and all(re.fullmatch(rf"{number}_\d{{4}}\.jpg", n) for n in names)
    assert classes == CALTECH_NAMES[:N_CLASSES]          # clutter excluded by default
    assert skipped == 1                                   # the stray RENAME2 file
    counts = np.bincount([label for _, label in records])
    assert counts.max() > 1.5 * counts.min()              # imbalanced, like the real data
    with_clutter, classes_c, _ = read_caltech256(root, include_clutter=True)
    assert classes_c == classes + ["clutter"] and len(with_clutter) == len(records) + 10


def test_grayscale_and_cmyk_become_rgb(caltech):
    root, (records, _, _) = caltech
    modes = {}
    for path, _ in records:
        with Image.open(path) as image:
            modes.setdefault(image.mode, path)
    assert {"L", "RGB"} <= set(modes)
    for path in modes.values():
        with Image.open(io.BytesIO(encode_image(path, 16, 85))) as image:
            assert image.mode == "RGB" and min(image.size) == 16


def test_voc_sample_layout_and_reader(voc):
    root, (records, classes, skipped) = voc
    top = root / "VOCdevkit" / "VOC2012"
    main = top / "ImageSets" / "Main"
    assert classes == VOC_CLASSES and skipped == 0 and len(records) == 400
    assert len(list((top / "JPEGImages").iterdir())) == 407      # unlisted images exist
    train, val = (set((main / f"{s}.txt").read_text().split()) for s in ("train", "val"))
    assert train | val == set((main / "trainval.txt").read_text().split()) and not train & val
    seen = set()
    for path, targets in records:
        objects = read_voc_annotation(top / "Annotations" / f"{path.stem}.xml")
        assert objects and all(o["bndbox"][0] < o["bndbox"][2] for o in objects)
        expected = [-1] * len(VOC_CLASSES)
        for o in objects:
            c = VOC_CLASSES.index(o["name"])
            expected[c] = max(expected[c], 0 if o["difficult"] else 1)
        assert list(targets) == expected
        seen.update(targets)
    assert seen == {-1, 0, 1}


# ---------------------------------------------------------------- size versions

@pytest.mark.parametrize("name", ["caltech256", "voc2012"])
def test_versions_fit_budget_and_cover_every_class(built, name):
    out, manifests = built[0], built[1][name]
    for version, m in manifests.items():
        folder = out / "data" / name / version
        shard = (folder / IMAGE_SHARD).read_bytes()
        sizes = [it["bytes"] for it in m["items"]]
        assert m["bytes"] == sum(sizes) == len(shard) <= m["budget_bytes"]   # JPEGs only
        assert m["bytes"] >= 0.95 * m["budget_bytes"]            # close to the budget
        assert sorted(p.name for p in folder.iterdir()) == [IMAGE_SHARD, "manifest.json"]
        assert [it["offset"] for it in m["items"]] == np.cumsum([0] + sizes[:-1]).tolist()
        assert m["files"][IMAGE_SHARD] == {"bytes": len(shard),
                                           "sha256": hashlib.sha256(shard).hexdigest()}
        assert m["mb_definition"].startswith("1 MB = 10**6 bytes")
        for split in ("train", "val", "test"):
            assert min(m["counts"][split].values()) >= 1, (version, split)
        files = [it["file"] for it in m["items"]]
        assert len(files) == len(set(files))                     # no item in two splits
        for it in m["items"]:
            blob = shard[it["offset"]:it["offset"] + it["bytes"]]
            assert hashlib.sha256(blob).hexdigest() == it["sha256"]
        with Image.open(io.BytesIO(blob)) as image:
            assert min(image.size) == SIDES[version] and image.mode == "RGB"
    assert manifests["l"]["tv_distance"] < 0.08                  # proportions kept
    n = manifests["l"]["n_images"]
    assert abs(n["train"] / n["total"] - 0.7) < 0.05


@pytest.mark.parametrize("name", ["caltech256", "voc2012"])
def test_versions_are_nested(built, name):
    manifests = built[1][name]
    splits = [{it["source"]: it["split"] for it in m["items"]} for m in manifests.values()]
    for smaller, larger in zip(splits, splits[1:]):
        assert len(smaller) < len(larger)
        assert all(larger.get(source) == split for source, split in smaller.items())


def test_same_seed_gives_identical_manifests(built, caltech, tmp_path):
    out = built[0]
    again = build(caltech[1], tmp_path / "again", "caltech256")
    for version in SIZES:
        assert (tmp_path / "again" / version / "manifest.json").read_bytes() == \
            (out / "data" / "caltech256" / version / "manifest.json").read_bytes()
    other = build(caltech[1], tmp_path / "other", "caltech256", seed=1)
    assert [i["source"] for i in other["s"]["items"]] != [i["source"] for i in again["s"]["items"]]


def test_rerun_resumes_and_setting_change_rebuilds(caltech, tmp_path):
    sizes, sides = {"s": 20_000}, {"s": 16}
    build(caltech[1], tmp_path, "caltech256", sizes=sizes, short_sides=sides)
    manifest = tmp_path / "s" / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    build(caltech[1], tmp_path, "caltech256", sizes=sizes, short_sides=sides)
    assert manifest.stat().st_mtime_ns == stamp
    changed = build(caltech[1], tmp_path, "caltech256", sizes=sizes, short_sides=sides,
                    jpeg_quality=60)
    assert changed["s"]["jpeg_quality"] == 60 and manifest.stat().st_mtime_ns != stamp


def test_too_small_budget_is_a_clear_error(caltech, tmp_path):
    with pytest.raises(ValueError, match=r"caltech256 version 'tiny'.*budget 3,000 bytes"):
        build(caltech[1], tmp_path, "caltech256", sizes={"tiny": 3_000},
              short_sides={"tiny": 32})
    assert not (tmp_path / "tiny").exists()


# ---------------------------------------------------------------- storage

def _files_on_disk(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())


def test_a_version_of_any_size_is_a_handful_of_files(built, tmp_path):
    """Google Drive's mount times out on folders of thousands of files: a version is one
    images.bin and its manifest; a text version its three splits, the manifest and one
    file per cached tokenizer."""
    out, manifests = built
    for name in ("caltech256", "voc2012"):
        for version in manifests[name]:
            assert _files_on_disk(out / "data" / name / version) == [IMAGE_SHARD,
                                                                     "manifest.json"]
        assert len(manifests[name]["l"]["items"]) > 200        # images, not files
    prepare_dataset("yahoo_answers", "sample", {"s": 40_000}, {}, 85, FRACTIONS, False, 0,
                    tmp_path / "out", tmp_path / "cache", show=False)
    for arch in ("bert", "gpt1"):
        version_tokenizer(tmp_path / "out", "yahoo_answers", "s", arch, 300, pretrained=False)
    on_disk = _files_on_disk(tmp_path / "out/data/yahoo_answers/s")
    assert on_disk == ["manifest.json", "test.jsonl", "tokenizer-bert-300.json",
                       "tokenizer-gpt1-300.json", "train.jsonl", "val.jsonl"]
    assert len(on_disk) <= 16


def test_a_damaged_shard_is_set_aside_and_its_version_built_again(tmp_path, capsys):
    args = ("caltech256", "sample", {"a": 30_000}, {"a": 24}, 85, FRACTIONS, False, 0,
            tmp_path / "out", tmp_path / "cache")
    first = prepare_dataset(*args, show=False)
    folder = tmp_path / "out/data/caltech256/a"
    shard = folder / IMAGE_SHARD
    good = shard.read_bytes()
    item = first["a"]["items"][3]
    flipped = bytearray(good)
    flipped[item["offset"] + 40] ^= 0xFF              # one bit rot, the size unchanged
    shard.write_bytes(bytes(flipped))
    capsys.readouterr()
    # the loaders check the shard's sha256 as they read it: set aside, named, not built
    with pytest.raises(DamagedVersionError, match=r"images\.bin was damaged.*run the data"):
        load_version(tmp_path / "out", "caltech256", "a")
    out = capsys.readouterr().out
    assert out.count("warning: damaged file") == 1 and "images.bin.damaged" in out
    assert read_version_manifest(folder) is None     # so the batch runs the data job again
    shard.with_name("images.bin.damaged").replace(shard)
    with pytest.raises(DamagedVersionError, match=r"item .* differs from its sha256"):
        read_version_image(folder, item, 24)
    shard.with_name("images.bin.damaged").replace(shard)
    capsys.readouterr()
    # the data chapter checks every version it would reuse: rebuilt, the same as before
    again = prepare_dataset(*args, show=False)
    out = capsys.readouterr().out
    assert out.count("warning: damaged file") == 1 and "sha256 differs" in out
    assert "reusing" not in out and again == first and shard.read_bytes() == good


def test_a_folder_of_jpegs_from_an_older_chapter_is_rebuilt(tmp_path, capsys):
    """Manifest format 1 stored each image as files/<name>.jpg: not misread, rebuilt."""
    args = ("caltech256", "sample", {"a": 30_000}, {"a": 24}, 85, FRACTIONS, False, 0,
            tmp_path / "out", tmp_path / "cache")
    first = prepare_dataset(*args, show=False)
    folder = tmp_path / "out/data/caltech256/a"
    old = json.loads((folder / "manifest.json").read_text())
    shard = read_stored_file(folder, old, IMAGE_SHARD)
    (folder / "files").mkdir()
    for it in old["items"]:                          # as format 1 wrote a version
        (folder / "files" / it["file"]).write_bytes(
            shard[it["offset"]:it["offset"] + it["bytes"]])
        it["file"] = f"files/{it['file']}"
        del it["offset"]
    del old["files"], old["settings"]["kind"]
    old["settings"]["format"] = 1
    (folder / IMAGE_SHARD).unlink()
    (folder / "manifest.json").write_text(json.dumps(old))
    capsys.readouterr()
    with pytest.raises(UnknownVersionError, match="manifest format 1 .a folder of JPEG files"):
        load_version(tmp_path / "out", "caltech256", "a")
    again = prepare_dataset(*args, show=False)
    out = capsys.readouterr().out
    assert "built in manifest format 1 (a folder of JPEG files)" in out
    assert "warning" not in out and again == first
    assert _files_on_disk(folder) == [IMAGE_SHARD, "manifest.json"]


def test_nested_order_prefixes_are_stratified():
    labels = [(0,)] * 600 + [(1,)] * 300 + [(2,)] * 100
    order, splits, n_cover = nested_order(labels, 3, FRACTIONS, seed=0)
    assert sorted(order) == list(range(1000)) and n_cover == 9
    cover = {(labels[i][0], splits[i]) for i in order[:n_cover]}
    assert len(cover) == 9                                       # each class x each split
    for length in (100, 400, 1000):
        counts = np.bincount([labels[i][0] for i in order[:length]], minlength=3)
        assert np.allclose(counts / length, [0.6, 0.3, 0.1], atol=0.04)
    with pytest.raises(ValueError, match="fewer than 3"):
        nested_order([(0,)] * 5 + [(1,)] * 2, 2, FRACTIONS, seed=0)


# ---------------------------------------------------------------- loading

def test_load_version_shapes_dtypes_and_mask(built):
    out, manifests = built
    single = load_version(out, "caltech256", "m")
    assert single.image_size == 24 and not single.multi_label and single.train.mask is None
    assert single.train.images.shape[1:] == (3, 24, 24)
    assert single.train.images.dtype == torch.uint8 and single.val.targets.dtype == torch.int64
    n = manifests["caltech256"]["m"]["n_images"]
    assert (len(single.train), len(single.val), len(single.test)) == \
        (n["train"], n["val"], n["test"])
    multi = load_version(out, "voc2012", "l")
    split = multi.train
    assert split.images.shape[1:] == (3, 32, 32) and split.targets.dtype == torch.float32
    assert split.targets.shape == split.mask.shape == (len(split), 20)
    assert split.mask.dtype == torch.bool
    items = [it for it in multi.manifest["items"] if it["split"] == "train"]
    difficult = [(r, c) for r, it in enumerate(items) for c in it["difficult"]]
    assert difficult and all(not split.mask[r, c] for r, c in difficult)
    assert int((~split.mask).sum()) == len(difficult)
    assert torch.equal(split.targets.sum(1), torch.tensor([len(it["labels"]) for it in items],
                                                          dtype=torch.float32))
    with pytest.raises(FileNotFoundError, match="run the data chapter"):
        load_version(out, "voc2012", "10MB")


# ---------------------------------------------------------------- fetching

def test_unknown_dataset(tmp_path):
    with pytest.raises(ValueError, match=r"'mnist'.*caltech256"):
        fetch_dataset("mnist", "sample", tmp_path)


class _Server:
    """A loopback HTTP server for a folder, with Range support and scripted failures.

    `requests` records (path, Range header) of every request. A path in `drop_once` gets,
    the first time, the headers of the whole file but only half its bytes, then the
    connection closes (as when a transfer breaks). `no_range` ignores Range headers.
    """

    def __init__(self, folder, drop_once=(), no_range=False):
        self.requests, self.drop_once = [], set(drop_once)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                path = Path(folder) / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                start = int(match.group(1)) if match and not no_range else 0
                if start >= len(data) > 0:
                    self.send_error(416)
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if self.path in server.drop_once:
                    server.drop_once.discard(self.path)
                    self.wfile.write(data[start:start + (len(data) - start) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def paths(self):
        return [path for path, _ in self.requests]


def _sample_voc_tar(tmp_path, name="voc_sample.tar"):
    root = make_sample_voc2012(tmp_path / "src", n_images=30, n_unlisted=0)
    (tmp_path / "www").mkdir(exist_ok=True)
    archive = tmp_path / "www" / name
    with tarfile.open(archive, "w") as tar:
        tar.add(root / "VOCdevkit", arcname="VOCdevkit")
    return archive


@pytest.fixture()
def served_voc(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    archive = _sample_voc_tar(tmp_path)
    server = _Server(tmp_path / "www")
    yield server, archive
    server.httpd.shutdown()


def test_fetch_from_url_with_md5_mirrors_and_cache(served_voc, tmp_path):
    server, archive = served_voc
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    mirrors = [f"{server.url}/missing/voc_sample.tar", f"{server.url}/voc_sample.tar"]
    root = fetch_dataset("voc2012", mirrors, tmp_path / "cache", md5=md5)
    assert server.paths == ["/missing/voc_sample.tar", "/voc_sample.tar"]  # 404, then ok
    records, _, _ = read_voc2012(root)
    assert len(records) == 30
    again = fetch_dataset("voc2012", mirrors, tmp_path / "cache", md5=md5)
    assert again == root and len(server.requests) == 2               # cache hit: no request

def test_wrong_checksum_is_downloaded_again_once_then_named(served_voc, tmp_path):
    server, archive = served_voc
    actual = hashlib.md5(archive.read_bytes()).hexdigest()
    url = f"{server.url}/voc_sample.tar"
    expected = "0" * 32
    with pytest.raises(DownloadError, match=rf"{re.escape(url)}: checksum mismatch: "
                                            rf"expected md5 {expected}, got md5 {actual}"):
        fetch_dataset("voc2012", url, tmp_path / "cache", md5=expected)
    assert server.paths == ["/voc_sample.tar"] * 2           # deleted, downloaded once more
    assert not list((tmp_path / "cache" / "downloads").iterdir())   # nothing bad kept


def test_interrupted_download_resumes_with_range(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    archive = _sample_voc_tar(tmp_path)
    server = _Server(tmp_path / "www", drop_once={"/voc_sample.tar"})
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    try:
        root = fetch_dataset("voc2012", f"{server.url}/voc_sample.tar", tmp_path / "cache",
                             md5=md5)
    finally:
        server.httpd.shutdown()
    half = archive.stat().st_size // 2
    assert server.requests == [("/voc_sample.tar", None), ("/voc_sample.tar", f"bytes={half}-")]
    assert len(read_voc2012(root)[0]) == 30
    cached = tmp_path / "cache" / "downloads" / "voc_sample.tar"
    assert cached.read_bytes() == archive.read_bytes()
    assert not cached.with_name("voc_sample.tar.part").exists()


def test_part_file_left_by_a_killed_run_is_resumed(served_voc, tmp_path):
    server, archive = served_voc
    data = archive.read_bytes()
    part = tmp_path / "dl" / "voc_sample.tar.part"
    part.parent.mkdir()
    part.write_bytes(data[:1000])
    record = download([f"{server.url}/voc_sample.tar"], part.with_suffix(""),
                      hashlib.md5(data).hexdigest())
    assert record["md5"] == hashlib.md5(data).hexdigest() and record["verified"] == ["md5"]
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert server.requests == [("/voc_sample.tar", "bytes=1000-")]
    assert (tmp_path / "dl" / "voc_sample.tar").read_bytes() == data


def test_server_without_range_support_restarts(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    archive = _sample_voc_tar(tmp_path)
    server = _Server(tmp_path / "www", no_range=True)
    part = tmp_path / "dl" / "voc_sample.tar.part"
    part.parent.mkdir()
    part.write_bytes(b"x" * 500)          # bytes the server will not continue from
    try:
        download([f"{server.url}/voc_sample.tar"], part.with_suffix(""))
    finally:
        server.httpd.shutdown()
    assert (tmp_path / "dl" / "voc_sample.tar").read_bytes() == archive.read_bytes()


def test_all_mirrors_failing_names_each(served_voc, tmp_path):
    server, _ = served_voc
    mirrors = [f"{server.url}/a.tar", "http://127.0.0.1:9/b.tar"]   # 404; nothing listens
    with pytest.raises(DownloadError, match=r"(?s)a\.tar.*404.*b\.tar"):
        download(mirrors, tmp_path / "x.tar", attempts=2, backoff=0)


def test_registry_digests_apply_to_the_official_archive_name(served_voc, tmp_path):
    server, archive = served_voc
    archive.rename(archive.with_name(DATASETS["voc2012"]["archive"]))  # not the real bytes
    url = f"{server.url}/{DATASETS['voc2012']['archive']}"
    d2l, official = DATASETS["voc2012"]["mirrors"][:2]
    assert "d2l-data" in d2l["url"] and d2l["sha1"].startswith("4e443f8a")
    with pytest.raises(DownloadError, match=rf"expected md5 {official['md5']}, "
                                            rf"sha1 {d2l['sha1']}, got md5"):
        fetch_dataset("voc2012", url, tmp_path / "cache")
    assert not (tmp_path / "cache" / "voc2012").exists()


def test_tar_member_outside_target_is_refused(tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ("VOCdevkit/VOC2012/ok.txt", "../escaped.txt"):
            member = tarfile.TarInfo(name)
            member.size = 2
            tar.addfile(member, io.BytesIO(b"hi"))
    with pytest.raises(ValueError, match="escaped.txt"):
        fetch_dataset("voc2012", str(archive), tmp_path / "cache")
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "cache" / "escaped.txt").exists()
    with pytest.raises(ArchiveError):
        safe_extract(archive, tmp_path / "direct")
    assert not (tmp_path / "direct").exists() and not (tmp_path / "direct.partial").exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
                                  tarfile.FIFOTYPE])
def test_links_and_device_files_are_refused(tmp_path, kind):
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tar:
        ok = tarfile.TarInfo("VOCdevkit/VOC2012/ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"hi"))
        member = tarfile.TarInfo("VOCdevkit/VOC2012/trap")
        member.type = kind
        member.linkname = "VOCdevkit/VOC2012/ok.txt" if kind == tarfile.LNKTYPE else "ok.txt"
        tar.addfile(member)
    with pytest.raises(ArchiveError, match="trap"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


@pytest.mark.parametrize("cut", ["mid-file", "at-member"])
def test_truncated_archive_is_a_clear_error(served_voc, tmp_path, cut):
    server, archive = served_voc
    data = archive.read_bytes()
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    if cut == "mid-file":
        big = max(members, key=lambda m: m.size)
        end = big.offset_data + big.size // 2
    else:    # exactly where a member's header starts: tarfile alone would not notice
        end = members[len(members) // 2].offset
    (archive.parent / "cut.tar").write_bytes(data[:end])
    url = f"{server.url}/cut.tar"
    with pytest.raises(ArchiveError, match="truncated"):
        fetch_dataset("voc2012", url, tmp_path / "cache")
    assert not (tmp_path / "cache" / "voc2012").exists()
    assert not (tmp_path / "cache" / "downloads" / "cut.tar").exists()   # re-fetched next time


def test_fetch_local_folder(caltech):
    root, _ = caltech
    assert fetch_dataset("caltech256", str(root), "unused") == root.resolve()
    assert fetch_dataset("caltech256", str(root / "256_ObjectCategories"), "unused") == \
        root.resolve()


# ---------------------------------------------------------------- entry point

def test_prepare_dataset_writes_versions_figure_and_table(tmp_path):
    manifests = prepare_dataset(
        "caltech256", "sample", {"a": 30_000, "b": 60_000}, {"a": 24, "b": 24}, 85, FRACTIONS,
        False, 0, tmp_path / "out", tmp_path / "cache", show=False)
    assert list(manifests) == ["a", "b"] and manifests["a"]["source_checksum"] == \
        f"sample-v{SAMPLE_FORMAT}"
    assert manifests["a"]["source_report"] == {"non_image_files": 1, "corrupt_images": 0}
    assert (tmp_path / "out" / "figures" / "samples_caltech256.png").stat().st_size > 1000
    table = (tmp_path / "out" / "tables" / "data_caltech256.md").read_text()
    assert "| a |" in table and "embedded sample data" in table
    assert json.loads((tmp_path / "out/data/caltech256/b/manifest.json").read_text())[
        "classes"] == CALTECH_NAMES[:10]


# ---------------------------------------------------------------- quirks of the real data

def test_voc_splits_use_iterative_stratification(voc):
    records = voc[1][0]
    positives = [tuple(c for c, t in enumerate(ts) if t == 1) for _, ts in records]
    difficult = [tuple(c for c, t in enumerate(ts) if t == 0) for _, ts in records]

    def worst_label(iterative):
        order, splits, _ = nested_order(positives, 20, FRACTIONS, 0, difficult,
                                        iterative=iterative)
        counts = np.zeros((20, 3))
        for i, split in enumerate(splits):
            for c in positives[i]:
                counts[c, ("train", "val", "test").index(split)] += 1
        share = counts / counts.sum(1, keepdims=True)
        return np.abs(share - FRACTIONS).max(), order, splits

    plain, _, _ = worst_label(False)         # rarest-label strata only
    iterative, order, splits = worst_label(True)
    assert iterative < 0.1 and iterative <= plain
    again = nested_order(positives, 20, FRACTIONS, 0, difficult, iterative=True)
    assert again[0] == order and again[1] == splits                  # deterministic


def test_voc_lists_are_cross_checked_against_annotations(tmp_path):
    root = make_sample_voc2012(tmp_path, n_images=12, n_unlisted=0)
    top = root / "VOCdevkit" / "VOC2012"
    ids = (top / "ImageSets" / "Main" / "trainval.txt").read_text().split()
    xml = top / "Annotations" / f"{ids[0]}.xml"
    text = xml.read_text()
    name = re.search(r"<name>(\w+)</name>", text).group(1)
    other = "sheep" if name != "sheep" else "cow"
    xml.write_text(text.replace(f"<name>{name}</name>", f"<name>{other}</name>"))
    (top / "Annotations" / f"{ids[1]}.xml").unlink()
    report = {}
    records, _, skipped = read_voc2012(root, report=report)
    assert len(records) == 12 and skipped == 0
    assert report["label_mismatches"] == 1 and report["missing_annotations"] == 1


def test_corrupt_images_are_skipped_and_counted(tmp_path):
    root = make_sample_caltech256(tmp_path, n_classes=3, images_per_class=(6, 8), n_clutter=3)
    victim = sorted((root / "256_ObjectCategories" / "002.american-flag").glob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:-300])                   # cut off mid-data
    report = {}
    records, _, skipped = read_caltech256(root, report=report)
    assert skipped == 2 and report == {"non_image_files": 1, "corrupt_images": 1}
    assert victim not in [path for path, _ in records]


@pytest.mark.parametrize("mode,fmt", [("L", "JPEG"), ("CMYK", "JPEG"), ("P", "PNG"),
                                      ("RGBA", "PNG"), ("I;16", "PNG")])
def test_any_colour_mode_becomes_rgb(tmp_path, mode, fmt):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), np.uint8))
    path = tmp_path / f"x.{fmt.lower()}"
    image.convert("RGB" if mode == "I;16" else mode).save(path, fmt)
    if mode == "I;16":
        Image.fromarray(np.full((40, 60), 300, np.uint16)).save(path, fmt)
    with Image.open(io.BytesIO(encode_image(path, 16, 85))) as out:
        assert out.mode == "RGB" and out.size == (24, 16)


# ---------------------------------------------------------------- bad input

def test_unknown_version_lists_the_built_ones(built):
    out, _ = built
    with pytest.raises(ValueError, match=r"'10MB'.*voc2012.*\['s', 'm', 'l'\]"):
        load_version(out, "voc2012", "10MB")


def test_too_small_budget_fails_before_any_work(tmp_path):
    with pytest.raises(ValueError, match=r"voc2012: budget.*'tiny': 5000"):
        prepare_dataset("voc2012", "sample", {"tiny": 5_000, "ok": 100_000},
                        {"tiny": 16, "ok": 16}, 85, FRACTIONS, False, 0, tmp_path / "out",
                        tmp_path / "cache", show=False)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad,message", [
    ({"jpeg_quality": 850}, "jpeg_quality = 850: expected an integer from 1 to 100"),
    ({"short_sides": {"tiny": 16}}, r"short_sides = \{'tiny': 16\}: expected a shorter side"),
    ({"split_fractions": [0.8, 0.3, 0.1]}, r"split_fractions = \[0.8, 0.3, 0.1\]"),
    ({"seed": -1}, "seed = -1"),
    ({"sizes": {"ok": "1MB"}}, r"sizes = \{'ok': '1MB'\}"),
    ({"include_clutter": "no"}, "include_clutter = 'no'"),
    ({"source": 3}, "source = 3"),
    ({"dataset": "mnist"}, r"dataset = 'mnist': expected one of \['bookcorpus'"),
    ({"sizez": {}}, r"unknown parameter\(s\) \['sizez'\] of the data chapter"),
])
def test_bad_parameters_are_named_before_any_work(tmp_path, bad, message):
    params = dict(dataset="caltech256", source="sample", sizes={"ok": 100_000},
                  short_sides={"ok": 16}, jpeg_quality=85, split_fractions=FRACTIONS,
                  include_clutter=False, seed=0, output_dir=tmp_path / "out",
                  cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match=message):
        prepare_dataset(**{**params, **bad}, show=False)
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- text datasets

TEXT_SIZES = {"s": 30_000, "m": 90_000, "l": 250_000}


def test_yahoo_csv_quirks(tmp_path):
    csv_file = tmp_path / "train.csv"
    csv_file.write_text(
        '"5","Why is my laptop slow?","It has ""Windows"", 2 GB","Add memory\\nor a SSD."\n'
        '"1","Title only","",""\n'
        '"10","","","Vote, then wait\\n\\nfor results"\n'
        '"11","bad class","x","y"\n'
        '"3","","",""\n', encoding="utf-8")
    report = {}
    texts, labels, classes = read_yahoo_answers(csv_file, report=report)
    assert labels == [4, 0, 9] and classes[4] == "Computers & Internet"
    assert texts[0] == 'Why is my laptop slow?\nIt has "Windows", 2 GB\nAdd memory\nor a SSD.'
    assert texts[1] == "Title only" and texts[2] == "Vote, then wait\n\nfor results"
    assert report == {"rows": 5, "dropped_rows": 2, "empty_title": 2, "empty_content": 3,
                      "empty_answer": 2}


def test_yahoo_parquet_and_csv_samples_agree(tmp_path):
    csv_root = make_sample_yahoo_answers(tmp_path / "c", n_rows=200, fmt="csv")
    pq_root = make_sample_yahoo_answers(tmp_path / "p", n_rows=200, fmt="parquet")
    assert sorted(p.name for p in (pq_root / "yahoo_answers_topics").iterdir()) == \
        ["test-00000-of-00001.parquet", "train-00000-of-00001.parquet"]
    first = (csv_root / "yahoo_answers_csv" / "train.csv").read_text().splitlines()[0]
    assert re.fullmatch(r'"(10|[1-9])",".*"', first)                 # 1-10, quoted
    from_csv = read_yahoo_answers(csv_root / "yahoo_answers_csv")
    from_pq = read_yahoo_answers(pq_root)
    assert from_csv == from_pq and sorted(set(from_csv[1])) == list(range(10))
    assert any("\n" in t for t in from_csv[0]) and not any("\\n" in t for t in from_csv[0])


@pytest.fixture(scope="module")
def yahoo_built(tmp_path_factory):
    out = tmp_path_factory.mktemp("text")
    manifests = prepare_dataset("yahoo_answers", "sample", TEXT_SIZES, {}, 85, FRACTIONS,
                                False, 0, out, out / "cache", show=False)
    return out, manifests


def test_yahoo_versions_fit_budget_cover_classes_and_nest(yahoo_built):
    out, manifests = yahoo_built
    ids = []
    for version, m in manifests.items():
        data = load_text_version(out, "yahoo_answers", version)
        stored = sum(len(t.encode("utf-8")) for part in (data.train, data.val, data.test)
                     for t in part.texts)
        assert stored == m["bytes"] and 0.98 * m["budget_bytes"] <= stored <= m["budget_bytes"]
        assert m["mb_definition"].startswith("1 MB = 10**6 bytes of UTF-8 text")
        for split in ("train", "val", "test"):
            assert min(m["counts"][split].values()) >= 1, (version, split)
            assert len(getattr(data, split)) == m["n_items"][split]
        assert m["tv_distance"] < 0.03 and abs(m["n_items"]["train"] / m["n_items"]["total"]
                                               - 0.7) < 0.03
        rows = {}
        for split in ("train", "val", "test"):
            for line in (out / "data/yahoo_answers" / version / f"{split}.jsonl").open():
                rows[json.loads(line)["id"]] = split
        ids.append(rows)
    for smaller, larger in zip(ids, ids[1:]):
        assert len(smaller) < len(larger)
        assert all(larger.get(i) == split for i, split in smaller.items())


def test_yahoo_versions_are_deterministic(yahoo_built, tmp_path):
    out, _ = yahoo_built
    prepare_dataset("yahoo_answers", "sample", {"s": TEXT_SIZES["s"]}, {}, 85, FRACTIONS,
                    False, 0, tmp_path, out / "cache", show=False)
    for name in ("manifest.json", "train.jsonl", "test.jsonl"):
        assert (tmp_path / "data/yahoo_answers/s" / name).read_bytes() == \
            (out / "data/yahoo_answers/s" / name).read_bytes()


def test_text_budget_too_small_for_every_class(yahoo_built):
    out, _ = yahoo_built
    with pytest.raises(ValueError, match=r"yahoo_answers version 'x': budget 2,000 bytes"):
        prepare_dataset("yahoo_answers", "sample", {"x": 2_000}, {}, 85, FRACTIONS, False, 0,
                        out, out / "cache", show=False)


def test_bookcorpus_versions_are_contiguous_nested_and_disjoint(tmp_path):
    root = make_sample_bookcorpus(tmp_path / "src", n_lines=8000)
    files = sorted((root / "bookcorpus").glob("*.txt"))
    lines = [ln for f in files for ln in f.read_text().splitlines()]
    assert all(ln == ln.lower() for ln in lines) and any(" , " in ln for ln in lines)
    manifests = prepare_dataset("bookcorpus", str(root / "bookcorpus"),
                                {"s": 20_000, "m": 60_000, "l": 200_000}, {}, 85, FRACTIONS,
                                False, 0, tmp_path / "out", tmp_path / "cache", show=False)
    spans = {}
    for version, m in manifests.items():
        data = load_text_version(tmp_path / "out", "bookcorpus", version)
        assert data.train.labels is None and data.classes == []
        folder = tmp_path / "out/data/bookcorpus" / version
        stored = sum((folder / f"{s}.txt").stat().st_size for s in ("train", "val", "test"))
        assert stored == m["bytes"] and 0.98 * m["budget_bytes"] <= stored <= m["budget_bytes"]
        for split in ("train", "val", "test"):
            run = m["runs"][split]
            first, n = run["first_line"], run["n_lines"]
            assert getattr(data, split).texts == lines[first:first + n]    # contiguous
            spans.setdefault(split, []).append((first, first + n))
    for runs in spans.values():                                          # nested
        assert all(a[0] == b[0] and a[1] < b[1] for a, b in zip(runs, runs[1:]))
    ends = [spans[s][-1] for s in ("train", "val", "test")]              # never meet
    assert ends[0][1] <= ends[1][0] and ends[1][1] <= ends[2][0]
    with pytest.raises(ValueError, match="too small"):
        prepare_dataset("bookcorpus", str(root / "bookcorpus"), {"huge": 10**7}, {}, 85,
                        FRACTIONS, False, 0, tmp_path / "out", tmp_path / "cache", show=False)


def test_mirror_with_other_bytes_falls_back_to_the_next(served_voc, tmp_path):
    server, archive = served_voc
    (archive.parent / "bad").mkdir()
    (archive.parent / "bad" / "voc_sample.tar").write_text("<html>mirror is down</html>")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    root = fetch_dataset("voc2012", [f"{server.url}/bad/voc_sample.tar",
                                     f"{server.url}/voc_sample.tar"], tmp_path / "cache", md5=md5)
    assert server.paths == ["/bad/voc_sample.tar"] * 2 + ["/voc_sample.tar"]
    assert len(read_voc2012(root)[0]) == 30


def test_cached_archive_is_not_downloaded_again(served_voc, tmp_path):
    server, archive = served_voc
    url = f"{server.url}/voc_sample.tar"
    fetch_dataset("voc2012", url, tmp_path / "cache")
    (tmp_path / "cache" / "voc2012" / ".source.json").unlink()   # extraction must be redone
    root = fetch_dataset("voc2012", url, tmp_path / "cache")
    assert server.paths == ["/voc_sample.tar"] and len(read_voc2012(root)[0]) == 30


def test_text_version_is_not_an_image_version(yahoo_built):
    out, _ = yahoo_built
    with pytest.raises(ValueError, match="load_text_version"):
        load_version(out, "yahoo_answers", "s")
    with pytest.raises(ValueError, match=r"'xl'.*\['s', 'm', 'l'\]"):
        load_text_version(out, "yahoo_answers", "xl")


def test_built_versions_are_reused_without_fetching_the_source_again(tmp_path, capsys):
    """A new Colab session with its versions on Drive lost the raw archive with the VM."""
    args = ("caltech256", "sample", {"a": 30_000}, {"a": 24}, 85, FRACTIONS, False, 0,
            tmp_path / "out")
    first = prepare_dataset(*args, tmp_path / "cache", show=False)
    capsys.readouterr()
    again = prepare_dataset(*args, tmp_path / "new-vm", show=False)
    assert again == first and not (tmp_path / "new-vm").exists()   # nothing fetched
    assert "reusing them without fetching" in capsys.readouterr().out
    manifest = tmp_path / "out/data/caltech256/a/manifest.json"        # older generators:
    manifest.write_text(manifest.read_text().replace(f"sample-v{SAMPLE_FORMAT}", "sample-v0"))
    prepare_dataset(*args, tmp_path / "cache", show=False)         # checked, rebuilt
    assert "reusing them without fetching" not in capsys.readouterr().out
    assert f"sample-v{SAMPLE_FORMAT}" in manifest.read_text()
    changed = list(args)
    changed[4] = 75                                                 # another JPEG quality
    rebuilt = prepare_dataset(*changed, tmp_path / "new-vm", show=False)
    assert rebuilt["a"]["jpeg_quality"] == 75 and (tmp_path / "new-vm").exists()
    (tmp_path / "out/data/caltech256/a" / IMAGE_SHARD).unlink()
    prepare_dataset(*changed, tmp_path / "new-vm", show=False)      # a file gone: rebuilt
    assert "reusing" not in capsys.readouterr().out


def test_the_samples_known_difficulty_reaches_every_version_and_means_what_it_says(tmp_path):
    """The generators' difficulty is carried from sample_difficulty.json into the items and
    the loaded splits, in split order; and it is real: a hard image's object is fainter
    (closer to the image's mean colour), a hard Yahoo row holds fewer of its topic's words."""
    prepare_dataset("caltech256", "sample", {"a": 60_000}, {"a": 24}, 85, FRACTIONS, False, 0,
                    tmp_path / "out", tmp_path / "cache", show=False)
    known = json.loads((tmp_path / "cache" / "sample" / "caltech256" /
                        SAMPLE_DIFFICULTY).read_text())
    data = load_version(tmp_path / "out", "caltech256", "a")
    sources = {it["file"]: it["source"] for it in data.manifest["items"]}
    for split in (data.train, data.val, data.test):
        assert split.difficulty is not None and len(split.difficulty) == len(split)
        expected = [known[sources[f]] for f in split.files]
        assert np.allclose(split.difficulty, expected, atol=1e-4)
    x = data.train.images.float()
    centre = x[:, :, 8:16, 8:16].mean((2, 3))             # where the object sits
    contrast = (centre - x.mean((2, 3))).abs().sum(1).numpy()
    assert spearmanr(data.train.difficulty, contrast).statistic < -0.3

    prepare_dataset("yahoo_answers", "sample", {"a": 60_000}, None, None, FRACTIONS, False, 0,
                    tmp_path / "out", tmp_path / "cache", show=False)
    text = load_text_version(tmp_path / "out", "yahoo_answers", "a").train
    from speedup.samples import _TOPIC_WORDS
    share = [np.mean([w in _TOPIC_WORDS[label].split() for w in t.lower().split()])
             for t, label in zip(text.texts, text.labels)]
    assert text.difficulty is not None and len(text.difficulty) == len(text)
    assert spearmanr(text.difficulty, share).statistic < -0.5
