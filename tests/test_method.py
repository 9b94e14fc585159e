"""Unit tests of chapter 3's definitions: schedules, metrics, scoring, the loop."""
import dataclasses
import math
import os
import time
from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score

import run_batch
from speedup.method import (
    RESULT_KEYS, RunConfig, arm_of, batch_shapes, channel_stats, classification_metrics,
    competence, difficulty_scores, fit, parameter_defaults, progressive_size, run_id,
    train_loop,
)

# The chapter's parameters cell: a run's settings as the batch passes them (minus variants).
DEFAULTS = {k: v for k, v in parameter_defaults(run_batch.parameters_source("method")).items()
            if k != "variants"}


@pytest.mark.parametrize("start_scale,delay,ramp", [(0.5, 0.2, 0.5), (0.25, 0.0, 1.0),
                                                    (0.75, 0.3, 0.0)])
def test_progressive_size_grows_monotonically_from_start_to_full(start_scale, delay, ramp):
    sizes = [progressive_size(p, 64, start_scale, delay, ramp, 4)
             for p in np.linspace(0, 1, 101)]
    assert sizes[0] == round(64 * start_scale / 4) * 4
    assert sizes[-1] == 64
    assert all(b >= a for a, b in zip(sizes, sizes[1:]))
    assert all(s % 4 == 0 for s in sizes)
    # held at the start size during the delay, full size after the ramp
    assert progressive_size(delay * 0.99, 64, start_scale, delay, ramp, 4) == sizes[0]
    assert progressive_size(min(1, delay + ramp), 64, start_scale, delay, ramp, 4) == 64


def test_progressive_size_never_below_one_step():
    assert progressive_size(0, 16, 0.05, 0.5, 0.5, 4) == 4


def test_competence_matches_platanios_root_schedule():
    assert competence(0, 0.25, 0.5) == pytest.approx(0.25)
    assert competence(0.25, 0.25, 0.5) == pytest.approx(math.sqrt(0.25 * (1 - 0.0625) / 0.5
                                                                   + 0.0625))
    assert competence(0.5, 0.25, 0.5) == pytest.approx(1.0)
    assert competence(0.9, 0.25, 0.5) == 1.0


def test_arm_hooks_only_change_their_own_axis():
    settings = DEFAULTS | {"start_scale": 0.5, "start_competence": 0.25}
    base, prog, diff = (arm_of(settings | {"curriculum": k}, 32)
                        for k in ("none", "progressive", "difficulty"))
    assert base.size(0) == 32 and base.pool(0, 100) == 100
    assert prog.size(0) == 16 and prog.pool(0, 100) == 100
    assert diff.size(0) == 32 and diff.pool(0, 100) == 25 and diff.pool(1, 100) == 100


def test_single_label_metrics_against_hand_computed_values():
    y = np.array([0, 0, 1, 2])
    scores = np.eye(3)[[0, 1, 1, 1]]  # predictions 0, 1, 1, 1
    m = classification_metrics(y, scores, multi_label=False)
    assert m["accuracy"] == pytest.approx(0.5)
    # per class precision 1, .333, 0; recall .5, 1, 0
    assert m["precision"] == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert m["recall"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert m["f1"] == pytest.approx((2 / 3 + 0.5 + 0) / 3)


def test_multi_label_metrics_ignore_difficult_labels_like_the_devkit():
    rng = np.random.default_rng(0)
    y = (rng.random((40, 3)) < 0.4).astype(float)
    s = np.clip(y * 0.6 + rng.random((40, 3)) * 0.5, 0, 1)
    mask = np.ones_like(y, dtype=bool)
    mask[:5, 1] = False
    s[:5, 1] = 1 - y[:5, 1]  # wrong, but ignored
    m = classification_metrics(y, s, multi_label=True, mask=mask)
    aps = [average_precision_score(y[mask[:, c], c], s[mask[:, c], c]) for c in range(3)]
    f1s = [f1_score(y[mask[:, c], c], s[mask[:, c], c] >= .5) for c in range(3)]
    gt = np.where(mask, 2 * y - 1, 0)  # the devkit's labels: difficult = 0
    assert m["mAP"] == pytest.approx(np.mean([_vocevalcls_ap(list(s[:, c]), list(gt[:, c]))
                                              for c in range(3)]), abs=1e-9)
    assert m["mAP_sklearn"] == pytest.approx(np.mean(aps))
    assert m["f1"] == pytest.approx(np.mean(f1s))
    unmasked = classification_metrics(y, s, multi_label=True)
    assert unmasked["mAP"] < m["mAP"]


def test_difficulty_scores_rank_prototypical_examples_as_easier():
    g = torch.Generator().manual_seed(0)
    n = 60
    y = torch.arange(n) % 2
    x = torch.randint(0, 40, (n, 3, 16, 16), dtype=torch.uint8, generator=g)
    x[y == 0, 0] += 200  # class 0 is red
    x[y == 1, 2] += 200  # class 1 is blue
    x[:6, 0] -= 200      # six class-0 images lose their red: atypical, hard
    x[:6, 2] += 100
    scores = difficulty_scores(x, y, 2)
    assert set(np.argsort(scores)[-6:]) == set(range(6))


def _toy_data(n, multi=False):
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randint(0, 50, (n, 3, 16, 16), dtype=torch.uint8, generator=g)
    for c in range(3):
        x[y == c, c] += 150
    if multi:
        t = torch.nn.functional.one_hot(y, 3).float()
        return NS(images=x, targets=t, mask=torch.ones_like(t, dtype=torch.bool))
    return NS(images=x, targets=y, mask=None)


@pytest.mark.parametrize("kind", ["none", "progressive", "difficulty"])
@pytest.mark.parametrize("multi", [False, True])
def test_fit_learns_and_records_each_validation_pass(kind, multi):
    torch.set_num_threads(1)
    from speedup.models import build_model
    data = NS(train=_toy_data(192, multi), val=_toy_data(48, multi), multi_label=multi)
    net = build_model("resnet18", 3, width=8, full_size=16)
    dev = torch.device("cpu")
    mean, std = channel_stats(data.train.images, dev)
    order = np.arange(192) if kind == "difficulty" else None
    arm = arm_of(DEFAULTS | {"curriculum": kind, "start_scale": 0.5}, 16)
    hist = fit(net, data, arm, epochs=3, batch_size=32, lr=0.05, momentum=0.9,
               weight_decay=0, label_smoothing=0, seed=0, device=dev, mean=mean, std=std,
               order=order, clock_start=1.5, eval_points=6, work=lambda size: size ** 2)
    # 6 steps per epoch, 18 in all: a validation pass every 3 steps, whatever the arm
    assert [h["step"] for h in hist] == [3, 6, 9, 12, 15, 18]
    assert [h["epoch"] for h in hist] == [0.5, 1, 1.5, 2, 2.5, 3]
    flops = [h["train_flops"] for h in hist]
    assert all(b > a for a, b in zip(flops, flops[1:]))
    if kind == "progressive":  # smaller inputs early: less work than 3 x 16^2 per example
        assert flops[-1] < 3 * 16 ** 2 * 192 * 3
    else:
        assert flops[-1] == 3 * 16 ** 2 * 192 * 3
    assert hist[0]["train_time_s"] > 1.5  # the scoring time is charged up front
    assert all(b["train_time_s"] > a["train_time_s"] for a, b in zip(hist, hist[1:]))
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    if kind == "progressive":
        assert hist[0]["mean_input_size"] < 16 == hist[-1]["mean_input_size"]
    else:
        assert all(h["mean_input_size"] == 16 for h in hist)
    if kind == "difficulty":
        assert hist[0]["pool_fraction"] < 1
    assert hist[-1]["val_primary"] > 0.5


def test_run_id_is_stable_and_changes_with_any_setting_of_its_arm():
    p = DEFAULTS | {"dataset": "voc2012", "version": "1MB", "arch": "vgg11_bn",
                    "curriculum": "none", "seed": 0}
    assert run_id(p) == run_id(dict(p))
    assert run_id(p).startswith("voc2012-1MB-vgg11_bn-none-s0-")
    assert run_id(p | {"lr": 2}) != run_id(p)
    assert "-b0.5-" in run_id(p | {"budget": 0.5})
    # another arm's knob does not make the baseline a new run; its own arm's does
    assert run_id(p | {"start_scale": 0.25}) == run_id(p)
    prog = p | {"curriculum": "progressive"}
    assert run_id(prog | {"start_scale": 0.25}) != run_id(prog)
    assert run_id(prog | {"num_threads": 3, "output_dir": "elsewhere"}) == run_id(prog)


def test_the_run_configuration_is_the_parameters_cell():
    """One definition of a run's settings: the parameters cell's names are RunConfig's
    fields, and the result key is every field but the machine's."""
    assert set(DEFAULTS) == {f.name for f in dataclasses.fields(RunConfig)}
    assert set(RESULT_KEYS) == set(DEFAULTS) - {"num_threads", "checkpoint_every_s",
                                                "output_dir", "run_name"}
    with pytest.raises(ValueError, match="unknown \\['speed'\\]"):
        RunConfig.from_params(DEFAULTS | {"speed": 2})


@pytest.mark.parametrize("key,value", [("curriculum", "random"), ("start_scale", 0),
                                       ("ramp_fraction", 1.5), ("epochs", 0), ("lr", -1),
                                       ("precision", "fp8"), ("checkpoint_every_s", -1),
                                       ("budget", 0), ("budget", 1.5), ("eval_points", 0),
                                       ("start_competence", 0), ("resize_mode", "bicubic")])
def test_bad_training_parameters_are_named(key, value):
    curriculum = "difficulty" if key == "start_competence" else "progressive"
    with pytest.raises(ValueError, match=f"'{key}'"):
        RunConfig.from_params(DEFAULTS | {"curriculum": curriculum, key: value}).check()


def _loop(batch_loss, arm, n=64, **kw):
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2)
    settings = dict(primary="accuracy", epochs=4, batch_size=16, optimizer="sgd", lr=0.1,
                    momentum=0.9, weight_decay=0.0, seed=0, device=torch.device("cpu"),
                    eval_points=4) | kw
    return train_loop(net, n, lambda idx, size: batch_loss(net, idx, size),
                      lambda: {"accuracy": float(net.weight.detach().sum())}, arm, **settings)


def _linear_loss(x, y):
    def batch_loss(net, idx, size):
        return torch.nn.functional.cross_entropy(net(x[idx] * size / 16), y[idx]), len(idx)
    return batch_loss


def test_warm_up_runs_every_input_size_outside_the_clock_and_changes_nothing(monkeypatch):
    """Each input size's first pass is slow (cuDNN's kernel search, allocations): the
    warm-up pays it before the clock starts, and training is as if it never happened."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 2, (64,), generator=g)
    arm = arm_of(DEFAULTS | {"curriculum": "progressive", "start_scale": 0.5,
                             "delay_fraction": 0.0, "ramp_fraction": 1.0}, 16)
    seen, plain = [], _linear_loss(x, y)

    def slow_first_time(net, idx, size):
        if size not in seen:
            seen.append(size)
            time.sleep(0.4)
        return plain(net, idx, size)

    hist = _loop(slow_first_time, arm)
    assert sorted(seen) == [8, 12, 16]  # every size of the schedule, before training
    assert hist[-1]["train_time_s"] < 0.4
    monkeypatch.setattr("speedup.method.warm_up", lambda *a, **k: None)
    unwarmed = _loop(plain, arm)
    assert [h["train_loss"] for h in hist] == [h["train_loss"] for h in unwarmed]
    assert [h["val_primary"] for h in hist] == [h["val_primary"] for h in unwarmed]


def test_a_budget_trains_a_fraction_of_the_steps_with_a_complete_schedule():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 2, (64,), generator=g)
    arm = arm_of(DEFAULTS | {"curriculum": "progressive", "start_scale": 0.5,
                             "delay_fraction": 0.0, "ramp_fraction": 1.0}, 16)
    full, half = _loop(_linear_loss(x, y), arm), _loop(_linear_loss(x, y), arm, budget=0.5)
    # 16 steps, a validation pass every 4 (the full budget's interval) for both
    assert [h["step"] for h in full] == [4, 8, 12, 16]
    assert [h["step"] for h in half] == [4, 8]
    # the half budget's curriculum reaches full size by its own end
    assert half[-1]["mean_input_size"] > full[1]["mean_input_size"]


def test_warm_up_covers_the_epochs_short_last_batch_and_a_small_early_pool():
    base = arm_of(DEFAULTS | {"curriculum": "none"}, 16)
    assert batch_shapes(base, 70, 16, 10) == {(16, 16), (16, 6)}  # 70 = 4 x 16 + 6
    paced = arm_of(DEFAULTS | {"curriculum": "difficulty", "start_competence": 0.1,
                               "competence_fraction": 0.5}, 16)
    counts = {count for _, count in batch_shapes(paced, 70, 16, 20)}
    assert {7, 16, 6} <= counts  # 10% of 70 examples at the start, then the short last batch


def _vocevalcls_ap(out, gt):
    """The VOC devkit's classification AP, transcribed line by line from VOCevalcls.m and
    VOCap.m (gt: 1 positive, -1 negative, 0 difficult), with MATLAB's 1-based loops."""
    si = sorted(range(len(out)), key=lambda i: -out[i])  # [so,si]=sort(-out): stable
    tp = [1.0 if gt[i] > 0 else 0.0 for i in si]
    fp = [1.0 if gt[i] < 0 else 0.0 for i in si]
    for i in range(1, len(si)):  # fp=cumsum(fp); tp=cumsum(tp);
        fp[i] += fp[i - 1]
        tp[i] += tp[i - 1]
    npos = sum(1 for g in gt if g > 0)
    rec = [t / npos for t in tp]
    prec = [t / (f + t) if f + t else float("nan") for t, f in zip(tp, fp)]
    mrec, mpre = [0.0] + rec + [1.0], [0.0] + prec + [0.0]
    for i in range(len(mpre) - 2, -1, -1):  # for i=numel(mpre)-1:-1:1
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = [i for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]]
    return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in idx)


@pytest.mark.parametrize("case", ["random", "ties", "difficult", "one-positive", "perfect"])
def test_voc_ap_equals_the_devkits_vocevalcls(case):
    from speedup.method import voc_ap
    rng = np.random.default_rng(len(case))
    n = 200
    gt = rng.choice([1, -1], size=n, p=[0.3, 0.7])
    out = rng.random(n)
    if case == "ties":
        out = np.round(out * 5) / 5  # six distinct scores, long runs of ties
    if case == "difficult":
        gt[rng.random(n) < 0.2] = 0  # difficult: ignored, neither hit nor miss
    if case == "one-positive":
        gt[:] = -1
        gt[17] = 1
    if case == "perfect":
        out = np.where(gt > 0, 0.9, 0.1)
    keep = gt != 0
    ours = voc_ap((gt[keep] > 0).astype(float), out[keep])
    assert ours == pytest.approx(_vocevalcls_ap(list(out), list(gt)), abs=1e-9)
    if case == "perfect":
        assert ours == 1.0


def test_multi_label_metrics_name_both_aps_and_use_sklearns_macro_f1():
    rng = np.random.default_rng(3)
    y = (rng.random((60, 4)) < 0.3).astype(float)
    y[:, 3] = 0  # a class with no positive: no AP, F1 = 0 as in scikit-learn
    s = rng.random((60, 4))
    m = classification_metrics(y, s, multi_label=True)
    assert m["classes_scored"] == 3
    assert m["mAP"] == pytest.approx(np.mean([_vocevalcls_ap(list(s[:, c]),
                                                             list(2 * y[:, c] - 1))
                                              for c in range(3)]), abs=1e-9)
    assert m["mAP_sklearn"] == pytest.approx(
        np.mean([average_precision_score(y[:, c], s[:, c]) for c in range(3)]))
    assert m["mAP"] != pytest.approx(m["mAP_sklearn"], abs=1e-4)  # two different measures
    assert m["f1"] == pytest.approx(f1_score(y, s >= 0.5, average="macro", zero_division=0))


def test_the_three_resize_modes_do_what_their_sources_do():
    from speedup.method import RESIZE_MODES, shrink
    assert RESIZE_MODES == ("antialias", "nearest", "crop")
    board = (torch.arange(16).view(1, 16) + torch.arange(16).view(16, 1)) % 2
    x = board.float().expand(2, 3, 16, 16).contiguous()  # a 1-pixel checkerboard
    smooth = shrink(x, 8, "antialias")
    assert smooth.shape == (2, 3, 8, 8)  # every output pixel averages the pattern: grey
    assert torch.allclose(smooth, torch.full_like(smooth, .5), atol=0.02)
    aliased = shrink(x, 8, "nearest")  # keeps one pixel in four: the pattern aliases away
    assert set(aliased.unique().tolist()) <= {0.0, 1.0} and aliased.std() == 0
    torch.manual_seed(0)
    crop = shrink(x + torch.arange(16.0).view(1, 1, 1, 16), 8, "crop")
    assert crop.shape == (2, 3, 8, 8)
    # a crop is an exact sub-block of the batch, the same one for every image
    found = [(t, l) for t in range(9) for l in range(9)
             if torch.equal((x + torch.arange(16.0).view(1, 1, 1, 16))[:, :, t:t + 8, l:l + 8],
                            crop)]
    assert len(found) >= 1


def test_the_anti_curriculum_paces_the_same_pool_from_the_hardest_end():
    settings = DEFAULTS | {"start_competence": 0.25, "competence_fraction": 0.5}
    easy = arm_of(settings | {"curriculum": "difficulty"}, 16)
    hard = arm_of(settings | {"curriculum": "anti"}, 16)
    scores = np.array([0.3, 0.9, 0.1, 0.5])
    assert easy.example_order(lambda: scores).tolist() == [2, 0, 3, 1]
    assert hard.example_order(lambda: scores).tolist() == [1, 3, 0, 2]
    assert [hard.pool(p, 100) for p in (0, 0.25, 1)] == [easy.pool(p, 100) for p in (0, 0.25, 1)]
    assert hard.label_for("nlp") != hard.label_for("cv")


# ------------------------------------------------- per-example records (the difficulty check)

import json  # noqa: E402
from pathlib import Path  # noqa: E402

from scipy.stats import spearmanr  # noqa: E402

import speedup.method as method  # noqa: E402
from speedup.method import (
    EXAMPLES_SUFFIX, example_records, image_example_losses, per_example_loss, rank_correlation,
    ranks_examples, text_example_losses,
)


@pytest.fixture(scope="module")
def tiny_version(tmp_path_factory):
    """The 40KB sample version of Caltech-256 at 16 px."""
    from speedup.prepare import prepare_dataset
    out = tmp_path_factory.mktemp("records")
    prepare_dataset("caltech256", "sample", {"40KB": 40_000}, {"40KB": 16}, 85,
                    [0.7, 0.15, 0.15], False, 0, out, out / "cache", show=False)
    return out


def _tiny_run(out, **changes):
    return DEFAULTS | {"dataset": "caltech256", "version": "40KB", "arch": "vgg11_bn",
                       "width": 8, "epochs": 2, "batch_size": 32, "num_threads": 1,
                       "checkpoint_every_s": 0.0, "output_dir": str(out), **changes}


def test_ranking_runs_and_the_full_budget_baseline_keep_aligned_records(tiny_version,
                                                                         monkeypatch):
    """A difficulty run keeps its scores, the full-budget baseline its losses after
    training, both with the known difficulty, in the training split's order, written
    before the result; the result notes their rank correlation with the known one."""
    load_version = method.load_version
    known = {}

    def with_known(*args):  # a made-up known difficulty (the sample's own may be None)
        data = load_version(*args)
        known["train"] = np.random.default_rng(0).random(len(data.train)).astype(np.float32)
        data.train.difficulty = known["train"]
        known["data"] = data
        return data

    written = []

    def write_json(path, result):  # the records must be on disk before the result
        if Path(path).parent.name == "results":
            written.append(Path(path).with_name(Path(path).stem + EXAMPLES_SUFFIX).exists())
        return json_writer(path, result)

    json_writer = method.write_json
    monkeypatch.setattr(method, "load_version", with_known)
    monkeypatch.setattr(method, "write_json", write_json)
    results = {arm: method.run_training(**_tiny_run(tiny_version, curriculum=arm))
               for arm in ("difficulty", "none")}
    assert written == [True, True]
    records = {}
    for arm, result in results.items():
        path = tiny_version / "results" / result["examples_file"]
        assert path.name == result["run_name"] + EXAMPLES_SUFFIX
        with np.load(path) as z:
            records[arm] = {k: z[k] for k in z.files}
        assert all(a.dtype == np.float32 and len(a) == result["train_examples"]
                   for a in records[arm].values())
        np.testing.assert_array_equal(records[arm]["known"], known["train"])
    assert set(records["difficulty"]) == {"score", "known"}
    assert set(records["none"]) == {"loss", "known"}
    # the scores are the run's own ranking, example by example
    data = known["data"]
    np.testing.assert_allclose(records["difficulty"]["score"], difficulty_scores(
        data.train.images, data.train.targets, len(data.classes), data.train.mask, 0),
        rtol=1e-5)
    loss = records["none"]["loss"]
    assert np.isfinite(loss).all() and (loss > 0).all() and np.ptp(loss) > 0
    assert results["difficulty"]["difficulty_known_spearman"] == pytest.approx(
        spearmanr(records["difficulty"]["score"], known["train"]).statistic)
    assert results["none"]["loss_known_spearman"] == pytest.approx(
        spearmanr(loss, known["train"]).statistic)
    assert "loss_known_spearman" not in results["difficulty"]
    # a reused result still has its records
    again = method.run_training(**_tiny_run(tiny_version, curriculum="none"))
    assert again == results["none"] and (tiny_version / "results" / again["examples_file"]
                                         ).exists()


def test_only_ranking_arms_and_the_full_budget_baseline_keep_records():
    known = np.linspace(0, 1, 5)

    def scores():
        return known[::-1]

    def losses():
        raise AssertionError("a run that keeps no losses must not compute them")
    assert ranks_examples("difficulty") and ranks_examples("anti")
    assert not ranks_examples("none") and not ranks_examples("progressive")
    for curriculum, budget in (("progressive", 1.0), ("none", 0.5)):
        assert example_records({"curriculum": curriculum, "budget": budget},
                               ranks_examples(curriculum), scores, losses, known) == {}
    assert example_records({"curriculum": "anti", "budget": 1.0}, True, scores, losses,
                           None).keys() == {"score"}
    rho, n = rank_correlation([1, 2, np.nan, 4, 3], [1, 2, 3, 4, 5])
    assert n == 4 and rho == pytest.approx(spearmanr([1, 2, 4, 3], [1, 2, 4, 5]).statistic)
    assert np.isnan(rank_correlation([1, 1, 1], [1, 2, 3])[0])


def test_the_trained_baselines_losses_rank_a_constructed_difficulty():
    """Hard by construction: the class colour fades with the known difficulty, and the
    hardest fifth carry a wrong label; after training, the per-example losses (eval mode,
    full size, the split's order) must rank them."""
    torch.set_num_threads(1)
    from speedup.models import build_model
    g = torch.Generator().manual_seed(2)
    n = 192
    known = torch.rand(n, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randint(0, 50, (n, 3, 16, 16), dtype=torch.uint8, generator=g)
    for c in range(3):
        x[y == c, c] += (150 * (1 - known[y == c])).to(torch.uint8).view(-1, 1, 1)
    noisy = known > 0.8
    y[noisy] = (y[noisy] + 1) % 3
    train = NS(images=x, targets=y, mask=None)
    data = NS(train=train, val=_toy_data(48), multi_label=False)
    net = build_model("resnet18", 3, width=8, full_size=16)
    dev = torch.device("cpu")
    mean, std = channel_stats(x, dev)
    arm = arm_of(DEFAULTS | {"curriculum": "none"}, 16)
    fit(net, data, arm, epochs=4, batch_size=32, lr=0.05, momentum=0.9, weight_decay=0,
        label_smoothing=0, seed=0, device=dev, mean=mean, std=std, eval_points=2)
    loss = image_example_losses(net, train, 16, mean, std, dev, False, batch_size=50)
    assert loss.dtype == np.float32 and loss.shape == (n,)
    # example by example, the same as the network's loss on that example alone
    for i in (0, 77, 191):
        with torch.no_grad():
            one = torch.nn.functional.cross_entropy(
                net(method.to_input(x[i:i + 1], 16, mean, std, dev)), y[i:i + 1])
        assert loss[i] == pytest.approx(float(one), rel=1e-4, abs=1e-6)
    assert loss[noisy.numpy()].mean() > 3 * loss[(known < 0.5).numpy()].mean()
    assert spearmanr(loss, known).statistic > 0.4


def test_a_multi_label_examples_loss_averages_its_scored_classes():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    loss = per_example_loss(logits, targets, mask, multi_label=True)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    assert float(loss[0]) == pytest.approx(float(bce(logits[0, :2], targets[0, :2])))
    assert torch.isnan(loss[1])  # no scored class: no loss, never a 0


def _text_task(objective, arch, n=12, length=16):
    from speedup.models import build_text_model
    from speedup.textdata import train_tokenizer
    from transformers import DataCollatorForLanguageModeling
    words = "the cat sat on a mat while dogs ran far away from home".split()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, 24)) for _ in range(40)]
    tok = train_tokenizer(texts, arch, vocab_size=120)
    if tok.pad_token is None:
        tok.add_special_tokens({"pad_token": "<pad>"})
    g = torch.Generator().manual_seed(0)
    if objective == "lm":
        ids = {"train": torch.randint(5, len(tok), (n, length), generator=g)}
        labels = {"train": None}
    else:
        ids = {"train": [torch.randint(5, len(tok), (int(k),), generator=g).tolist()
                         for k in torch.randint(3, length + 4, (n,), generator=g)]}
        labels = {"train": torch.randint(0, 3, (n,), generator=g)}
    task = method.TextTask(objective, arch, length, tok.pad_token_id, len(tok),
                           ["a", "b", "c"], ids, labels,
                           special_ids=torch.tensor(tok.all_special_ids))
    if objective == "lm" and arch == "bert":
        task.masker = DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
    torch.manual_seed(0)
    net = build_text_model(arch, objective, "micro", len(tok), num_labels=3,
                           pad_token_id=tok.pad_token_id)
    return task, net


@pytest.mark.parametrize("objective,arch", [("classify", "gpt1"), ("lm", "gpt1"),
                                            ("lm", "bert")])
def test_text_example_losses_are_each_examples_loss_as_the_model_is_scored(objective, arch):
    torch.set_num_threads(1)
    task, net = _text_task(objective, arch)
    dev = torch.device("cpu")
    before = getattr(task.masker, "generator", None)
    loss = text_example_losses(net, task, dev, batch_size=5)
    assert loss.dtype == np.float32 and loss.shape == (len(task),)
    if arch == "bert":  # masked with a fixed seed: the same losses every time
        assert task.masker.generator is before
        np.testing.assert_array_equal(text_example_losses(net, task, dev, batch_size=5), loss)
        masks, want = torch.Generator().manual_seed(method.EVAL_MASK_SEED + 1), []
        for i in range(0, len(task), 5):
            inputs, labels = method.mask_tokens(task, task.ids["train"][i:i + 5], masks)
            with torch.no_grad():
                logits = net(input_ids=inputs).logits
            for row, lab in zip(logits, labels):
                want.append(float(torch.nn.functional.cross_entropy(row[lab != -100],
                                                                    lab[lab != -100]))
                            if (lab != -100).any() else float("nan"))
        # a row with no masked token has no loss (NaN: left out of every correlation)
        np.testing.assert_allclose(loss, want, rtol=1e-4)
        assert np.isfinite(loss).sum() >= len(task) - 2
        return
    assert np.isfinite(loss).all() and (loss > 0).all()
    for i in (0, 7, len(task) - 1):  # alone, as evaluate_text would score it
        with torch.no_grad():
            if objective == "classify":
                ids, attention = method.pad_rows(task.ids["train"][i:i + 1], 16, task.pad_id)
                logits, wanted = method.text_forward(net, task, ids, attention,
                                                     task.labels["train"][i:i + 1])
            else:
                logits, wanted = method.text_forward(net, task, task.ids["train"][i:i + 1],
                                                     None, None)
            one = torch.nn.functional.cross_entropy(logits.flatten(0, -2), wanted.flatten())
        assert loss[i] == pytest.approx(float(one), rel=1e-4)


def test_an_error_in_a_training_step_names_its_module_and_chapter_cell(tiny_version,
                                                                       monkeypatch):
    """The library runs from speedup/: a traceback points into a generated module, and
    its notes lead to the chapter cell that explains the failing line."""
    import re
    import traceback

    def broken_step(self, loss, opt):
        raise RuntimeError("a broken training step")

    monkeypatch.setattr(method.MixedPrecision, "backward_step", broken_step)
    with pytest.raises(RuntimeError, match="a broken training step") as info:
        method.run_training(**_tiny_run(tiny_version, curriculum="none", run_name="broken"))
    text = "".join(traceback.format_exception(info.value))
    assert f"speedup{os.sep}method.py" in text          # the frames of the package
    assert re.search(r"speedup/method\.py:\d+ train_loop <- chapters/03_method\.ipynb, "
                     r"cell 03-016d", text), text[-2000:]
