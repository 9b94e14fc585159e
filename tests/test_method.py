"""Unit tests of chapter 3's definitions: schedules, arms, metrics, tasks, the loop."""
import math
import os
import time
from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score

from speedup.arms import (ARMS, SettingError, arm_class, competence, make_arm,
                          progressive_size)
from speedup.metrics import classification_metrics
from speedup.tasks import ImageTask, probe_difficulty
from speedup.train import MACHINE_SETTINGS, RunConfig, batch_shapes, train_loop


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
    base, prog, diff = (make_arm(k, "cv") for k in ("baseline", "progressive", "difficulty"))
    assert base.size(0, 32) == 32 and base.pool(0, 100) == 100
    assert prog.size(0, 32) == 16 and prog.pool(0, 100) == 100
    assert diff.size(0, 32) == 32 and diff.pool(0, 100) == 25 and diff.pool(1, 100) == 100


def test_the_flagship_is_one_name_with_a_class_per_task_each_with_its_own_knobs():
    images, text = arm_class("progressive", "cv"), arm_class("progressive", "nlp")
    assert images is not text and {"cv", "nlp"} == set(ARMS["progressive"])
    assert "start_scale" in images.defaults() and "start_scale" not in text.defaults()
    assert "start_length" in text.defaults() and "start_length" not in images.defaults()
    assert make_arm("progressive", "nlp", {"start_length": 16}).size(0, 64) == 16
    with pytest.raises(SettingError, match="'start_scale'.*not a setting of arm"):
        make_arm("progressive", "nlp", {"start_scale": 0.5})
    with pytest.raises(SettingError, match="'arm' = 'random'"):
        make_arm("random", "cv")


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
    scores = probe_difficulty(x, y, 2)
    assert set(np.argsort(scores)[-6:]) == set(range(6))


def _toy_split(n, multi=False):
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randint(0, 50, (n, 3, 16, 16), dtype=torch.uint8, generator=g)
    for c in range(3):
        x[y == c, c] += 150
    if multi:
        t = torch.nn.functional.one_hot(y, 3).float()
        return NS(images=x, targets=t, mask=torch.ones_like(t, dtype=torch.bool),
                  difficulty=None)
    return NS(images=x, targets=y, mask=None, difficulty=None)


def _toy_images(multi=False):
    """A 16 px, 3-class version in memory, as ``load_version`` returns one."""
    return NS(train=_toy_split(192, multi), val=_toy_split(48, multi),
              test=_toy_split(48, multi), multi_label=multi, classes=["r", "g", "b"],
              image_size=16, manifest={"source": "toy"})


@pytest.mark.parametrize("kind", ["baseline", "progressive", "difficulty"])
@pytest.mark.parametrize("multi", [False, True])
def test_an_image_task_learns_and_records_each_validation_pass(kind, multi):
    torch.set_num_threads(1)
    config = RunConfig.from_flat({"arm": kind, "arch": "resnet18", "width": 8, "epochs": 3,
                                  "batch_size": 32, "eval_points": 6, "weight_decay": 0,
                                  "start_scale": 0.5} if kind == "progressive" else
                                 {"arm": kind, "arch": "resnet18", "width": 8, "epochs": 3,
                                  "batch_size": 32, "eval_points": 6, "weight_decay": 0})
    task = ImageTask(config, torch.device("cpu"), _toy_images(multi))
    task.item_flops = lambda size: size ** 2     # a simple, checkable cost
    net = task.make_model()
    order = np.arange(192) if kind == "difficulty" else None
    hist = train_loop(net, task, config.arm, config, order=order, clock_start=1.5)
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


def _run(**settings):
    return RunConfig.from_flat({"dataset": "voc2012", "version": "1MB", "arch": "vgg11_bn",
                                "arm": "baseline", "seed": 0, **settings})


def test_run_id_is_stable_and_changes_with_any_setting_of_its_arm():
    run = _run()
    assert run.run_id() == _run().run_id()
    assert run.run_id().startswith("voc2012-1MB-vgg11_bn-baseline-s0-")
    assert _run(lr=2).run_id() != run.run_id()
    assert "-b0.5-" in _run(budget=0.5).run_id()
    # the baseline has no knob of another arm; its own arm's knobs make a new run
    with pytest.raises(SettingError, match="'start_scale'"):
        _run(start_scale=0.25)
    prog = _run(arm="progressive")
    assert _run(arm="progressive", start_scale=0.25).run_id() != prog.run_id()
    assert _run(arm="progressive", num_threads=3, output_dir="else").run_id() == prog.run_id()


def test_a_runs_key_holds_its_own_arms_and_tasks_settings_and_no_others():
    prog, text = _run(arm="progressive"), RunConfig.from_flat(
        {"task": "nlp", "arch": "gpt1", "arm": "progressive", "dataset": "bookcorpus"})
    assert {"start_scale", "width"} <= set(prog.key())
    assert not {"start_length", "seq_length", "preset"} & set(prog.key())
    assert {"start_length", "seq_length", "preset"} <= set(text.key())
    assert not {"start_scale", "width", "resize_mode"} & set(text.key())
    assert not set(MACHINE_SETTINGS) & set(prog.key())
    assert RunConfig.from_flat(prog.flat()) == prog      # the flat form round-trips
    with pytest.raises(SettingError, match="'speed'.*known:"):
        _run(speed=2)


@pytest.mark.parametrize("key,value", [("arm", "random"), ("start_scale", 0),
                                       ("ramp_fraction", 1.5), ("epochs", 0), ("lr", -1),
                                       ("precision", "fp8"), ("checkpoint_every_s", -1),
                                       ("budget", 0), ("budget", 1.5), ("eval_points", 0),
                                       ("start_competence", 0), ("resize_mode", "bicubic"),
                                       ("epochs", "six"), ("width", 0), ("arch", "bert")])
def test_bad_settings_are_named_before_any_work(key, value):
    arm = "difficulty" if key == "start_competence" else "progressive"
    with pytest.raises(SettingError, match=f"'{key}'"):
        _run(**{"arm": arm, key: value})


class _Linear:
    """A task of 64 points in 4 dimensions (a duck-typed ``ImageTask``): the loop's tests."""
    primary, full_size, n_train, device, generators = "accuracy", 16, 64, \
        torch.device("cpu"), ()

    def __init__(self, slow_first_time=False):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(64, 4, generator=g), torch.randint(0, 2, (64,), generator=g)
        self.slow, self.seen = slow_first_time, []

    def batch_loss(self, net, idx, size):
        if self.slow and size not in self.seen:
            self.seen.append(size)
            time.sleep(0.4)
        loss = torch.nn.functional.cross_entropy(net(self.x[idx] * size / 16), self.y[idx])
        return loss, len(idx), len(idx) * size

    def item_flops(self, size):
        return size

    def evaluate(self, net, split):
        return {"accuracy": float(net.weight.detach().sum())}


def _loop(task, arm, **settings):
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2)
    config = RunConfig.from_flat({"epochs": 4, "batch_size": 16, "lr": 0.1,
                                  "weight_decay": 0.0, "eval_points": 4, **settings})
    return train_loop(net, task, arm, config)


_RAMP = {"start_scale": 0.5, "delay_fraction": 0.0, "ramp_fraction": 1.0}


def test_warm_up_runs_every_input_size_outside_the_clock_and_changes_nothing(monkeypatch):
    """Each input size's first pass is slow (cuDNN's kernel search, allocations): the
    warm-up pays it before the clock starts, and training is as if it never happened."""
    arm, slow = make_arm("progressive", "cv", _RAMP), _Linear(slow_first_time=True)
    hist = _loop(slow, arm)
    assert sorted(slow.seen) == [8, 12, 16]  # every size of the schedule, before training
    assert hist[-1]["train_time_s"] < 0.4
    monkeypatch.setattr("speedup.train.warm_up", lambda *a, **k: None)
    unwarmed = _loop(_Linear(), arm)
    assert [h["train_loss"] for h in hist] == [h["train_loss"] for h in unwarmed]
    assert [h["val_primary"] for h in hist] == [h["val_primary"] for h in unwarmed]


def test_a_budget_trains_a_fraction_of_the_steps_with_a_complete_schedule():
    arm = make_arm("progressive", "cv", _RAMP)
    full, half = _loop(_Linear(), arm), _loop(_Linear(), arm, budget=0.5)
    # 16 steps, a validation pass every 4 (the full budget's interval) for both
    assert [h["step"] for h in full] == [4, 8, 12, 16]
    assert [h["step"] for h in half] == [4, 8]
    # the half budget's curriculum reaches full size by its own end
    assert half[-1]["mean_input_size"] > full[1]["mean_input_size"]


def test_the_loop_counts_the_flops_its_task_reports_for_each_batch():
    hist = _loop(_Linear(), make_arm("progressive", "cv", _RAMP))
    # _Linear reports len(idx) x size per batch; the loop adds 3x that (forward + backward)
    sizes = [progressive_size(k / 16, 16, 0.5, 0.0, 1.0, 4) for k in range(16)]
    assert hist[-1]["train_flops"] == 3 * 16 * sum(sizes)


def test_warm_up_covers_the_epochs_short_last_batch_and_a_small_early_pool():
    base = make_arm("baseline", "cv")
    assert batch_shapes(base, 70, 16, 10, 16) == {(16, 16), (16, 6)}  # 70 = 4 x 16 + 6
    paced = make_arm("difficulty", "cv", {"start_competence": 0.1, "competence_fraction": 0.5})
    counts = {count for _, count in batch_shapes(paced, 70, 16, 20, 16)}
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
    from speedup.metrics import voc_ap
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
    from speedup.tasks import shrink
    assert arm_class("progressive", "cv").RESIZE_MODES == ("antialias", "nearest", "crop")
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
    shifted = x + torch.arange(16.0).view(1, 1, 1, 16)
    found = [(t, left) for t in range(9) for left in range(9)
             if torch.equal(shifted[:, :, t:t + 8, left:left + 8], crop)]
    assert len(found) >= 1


def test_the_anti_curriculum_paces_the_same_pool_from_the_hardest_end():
    settings = {"start_competence": 0.25, "competence_fraction": 0.5}
    easy = make_arm("difficulty", "cv", settings)
    hard = make_arm("anti", "cv", settings)
    scores = np.array([0.3, 0.9, 0.1, 0.5])
    assert easy.example_order(lambda: scores).tolist() == [2, 0, 3, 1]
    assert hard.example_order(lambda: scores).tolist() == [1, 3, 0, 2]
    assert [hard.pool(p, 100) for p in (0, 0.25, 1)] == [easy.pool(p, 100) for p in (0, 0.25, 1)]
    assert hard.label_for("nlp") != hard.label_for("cv")


# ------------------------------------------------- per-example records (the difficulty check)

from pathlib import Path  # noqa: E402

from scipy.stats import spearmanr  # noqa: E402

import speedup.tasks as tasks  # noqa: E402
import speedup.train as train  # noqa: E402
from speedup.tasks import EVAL_MASK_SEED, TextTask, Tokenised, pad_rows, per_example_loss  # noqa: E402,E501
from speedup.train import (EXAMPLES_SUFFIX, example_records, rank_correlation,  # noqa: E402
                           ranks_examples, run_training)


@pytest.fixture(scope="module")
def tiny_version(tmp_path_factory):
    """The 40KB sample version of Caltech-256 at 16 px."""
    from speedup.prepare import prepare_dataset
    out = tmp_path_factory.mktemp("records")
    prepare_dataset("caltech256", "sample", {"40KB": 40_000}, {"40KB": 16}, 85,
                    [0.7, 0.15, 0.15], False, 0, out, out / "cache", show=False)
    return out


def _tiny_run(out, **changes):
    return RunConfig.from_flat({"dataset": "caltech256", "version": "40KB", "arch": "vgg11_bn",
                                "width": 8, "epochs": 2, "batch_size": 32, "num_threads": 1,
                                "checkpoint_every_s": 0.0, "output_dir": str(out), **changes})


def test_ranking_runs_and_the_full_budget_baseline_keep_aligned_records(tiny_version,
                                                                         monkeypatch):
    """A difficulty run keeps its scores, the full-budget baseline its losses after
    training, both with the known difficulty, in the training split's order, written
    before the result; the result notes their rank correlation with the known one."""
    load_version = tasks.load_version
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

    json_writer = train.write_json
    monkeypatch.setattr(tasks, "load_version", with_known)
    monkeypatch.setattr(train, "write_json", write_json)
    results = {arm: run_training(_tiny_run(tiny_version, arm=arm))
               for arm in ("difficulty", "baseline")}
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
    assert set(records["baseline"]) == {"loss", "known"}
    # the scores are the run's own ranking, example by example
    data = known["data"]
    np.testing.assert_allclose(records["difficulty"]["score"], probe_difficulty(
        data.train.images, data.train.targets, len(data.classes), data.train.mask, 0),
        rtol=1e-5)
    loss = records["baseline"]["loss"]
    assert np.isfinite(loss).all() and (loss > 0).all() and np.ptp(loss) > 0
    assert results["difficulty"]["difficulty_known_spearman"] == pytest.approx(
        spearmanr(records["difficulty"]["score"], known["train"]).statistic)
    assert results["baseline"]["loss_known_spearman"] == pytest.approx(
        spearmanr(loss, known["train"]).statistic)
    assert "loss_known_spearman" not in results["difficulty"]
    # a reused result still has its records
    again = run_training(_tiny_run(tiny_version, arm="baseline"))
    assert again == results["baseline"] and (tiny_version / "results" / again["examples_file"]
                                             ).exists()


def test_only_ranking_arms_and_the_full_budget_baseline_keep_records():
    known = np.linspace(0, 1, 5)

    def scores():
        return known[::-1]

    def losses():
        raise AssertionError("a run that keeps no losses must not compute them")
    assert ranks_examples(make_arm("difficulty", "cv")) and ranks_examples(make_arm("anti", "cv"))
    assert not ranks_examples(make_arm("baseline", "cv"))
    assert not ranks_examples(make_arm("progressive", "cv"))
    for arm, budget in (("progressive", 1.0), ("baseline", 0.5)):
        assert example_records(NS(arm=make_arm(arm, "cv"), budget=budget), scores, losses,
                               known) == {}
    assert example_records(NS(arm=make_arm("anti", "cv"), budget=1.0), scores, losses,
                           None).keys() == {"score"}
    rho, n = rank_correlation([1, 2, np.nan, 4, 3], [1, 2, 3, 4, 5])
    assert n == 4 and rho == pytest.approx(spearmanr([1, 2, 4, 3], [1, 2, 4, 5]).statistic)
    assert np.isnan(rank_correlation([1, 1, 1], [1, 2, 3])[0])


def test_the_trained_baselines_losses_rank_a_constructed_difficulty():
    """Hard by construction: the class colour fades with the known difficulty, and the
    hardest fifth carry a wrong label; after training, the per-example losses (eval mode,
    full size, the split's order) must rank them."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(2)
    n = 192
    known = torch.rand(n, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randint(0, 50, (n, 3, 16, 16), dtype=torch.uint8, generator=g)
    for c in range(3):
        x[y == c, c] += (150 * (1 - known[y == c])).to(torch.uint8).view(-1, 1, 1)
    noisy = known > 0.8
    y[noisy] = (y[noisy] + 1) % 3
    data = _toy_images()
    data.train = NS(images=x, targets=y, mask=None, difficulty=None)
    config = RunConfig.from_flat({"arch": "resnet18", "width": 8, "epochs": 4,
                                  "batch_size": 32, "eval_points": 2, "weight_decay": 0})
    task = ImageTask(config, torch.device("cpu"), data)
    net = task.make_model()
    train_loop(net, task, config.arm, config)
    loss = task.example_losses(net, batch_size=50)
    assert loss.dtype == np.float32 and loss.shape == (n,)
    # example by example, the same as the network's loss on that example alone
    for i in (0, 77, 191):
        with torch.no_grad():
            one = torch.nn.functional.cross_entropy(
                net(tasks.to_input(x[i:i + 1], 16, task.stats)), y[i:i + 1])
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
    from speedup.textdata import train_tokenizer
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
    config = RunConfig.from_flat({"task": "nlp", "arch": arch, "seq_length": length,
                                  "dataset": "bookcorpus" if objective == "lm"
                                  else "yahoo_answers"})
    task = TextTask(config, torch.device("cpu"),
                    Tokenised(tok, ids, labels, [] if objective == "lm" else ["a", "b", "c"]))
    torch.manual_seed(0)
    return task, task.make_model()


@pytest.mark.parametrize("objective,arch", [("classify", "gpt1"), ("lm", "gpt1"),
                                            ("lm", "bert")])
def test_text_example_losses_are_each_examples_loss_as_the_model_is_scored(objective, arch):
    torch.set_num_threads(1)
    task, net = _text_task(objective, arch)
    loss = task.example_losses(net, batch_size=5)
    assert loss.dtype == np.float32 and loss.shape == (task.n_train,)
    if arch == "bert":  # masked with a fixed seed: the same losses every time
        np.testing.assert_array_equal(task.example_losses(net, batch_size=5), loss)
        masks, want = torch.Generator().manual_seed(EVAL_MASK_SEED + 1), []
        for i in range(0, task.n_train, 5):
            inputs, labels = task.mask(task.ids["train"][i:i + 5], masks)
            with torch.no_grad():
                logits = net(input_ids=inputs).logits
            for row, lab in zip(logits, labels):
                want.append(float(torch.nn.functional.cross_entropy(row[lab != -100],
                                                                    lab[lab != -100]))
                            if (lab != -100).any() else float("nan"))
        # a row with no masked token has no loss (NaN: left out of every correlation)
        np.testing.assert_allclose(loss, want, rtol=1e-4)
        assert np.isfinite(loss).sum() >= task.n_train - 2
        return
    assert np.isfinite(loss).all() and (loss > 0).all()
    for i in (0, 7, task.n_train - 1):  # alone, as evaluate would score it
        with torch.no_grad():
            if objective == "classify":
                ids, attention = pad_rows(task.ids["train"][i:i + 1], 16, task.pad_id)
                logits, wanted = task.forward(net, ids, attention,
                                              task.labels["train"][i:i + 1])
            else:
                logits, wanted = task.forward(net, task.ids["train"][i:i + 1], None, None)
            one = torch.nn.functional.cross_entropy(logits.flatten(0, -2), wanted.flatten())
        assert loss[i] == pytest.approx(float(one), rel=1e-4)


@pytest.mark.parametrize("objective,arch", [("classify", "bert"), ("lm", "gpt1"),
                                            ("lm", "bert")])
def test_a_text_batch_trains_every_token_and_counts_the_flops_of_what_it_fed(objective, arch):
    """At a length that does not divide the rows, a language model's batch is re-packed,
    never cut: every token is a target (GPT-1: all but each row's first) or maskable
    (BERT); a question batch is padded to its widest row. The FLOPs a batch reports are
    those of the rows it fed the model, counted independently here."""
    from speedup.models import count_text_flops
    torch.set_num_threads(1)
    task, net = _text_task(objective, arch, n=8, length=16)
    idx = torch.arange(8)
    loss, tokens, flops = task.batch_loss(net, idx, 12)     # 12 does not divide 16
    assert torch.isfinite(loss)
    if objective == "lm":
        assert tokens == 8 * 16                             # no token dropped
        rows = -(-8 * 16 // 12)                             # 11 rows of 12, the last padded
        assert flops == pytest.approx(rows * count_text_flops(net, 12), rel=1e-6)
    else:
        width = min(12, max(len(task.ids["train"][i]) for i in range(8)))
        assert tokens == sum(min(len(task.ids["train"][i]), 12) for i in range(8))
        assert flops == pytest.approx(8 * count_text_flops(net, width), rel=1e-6)


def test_an_error_in_a_training_step_names_its_module_and_chapter_cell(tiny_version,
                                                                       monkeypatch):
    """The library runs from speedup/: a traceback points into a generated module, and
    its notes lead to the chapter cell that explains the failing line."""
    import re
    import traceback

    def broken_step(self, loss, opt):
        raise RuntimeError("a broken training step")

    monkeypatch.setattr(train.MixedPrecision, "backward_step", broken_step)
    with pytest.raises(RuntimeError, match="a broken training step") as info:
        run_training(_tiny_run(tiny_version, run_name="broken"))
    text = "".join(traceback.format_exception(info.value))
    assert f"speedup{os.sep}train.py" in text          # the frames of the package
    assert re.search(r"speedup/train\.py:\d+ train_loop <- chapters/03_method\.ipynb, "
                     r"cell 03-016d", text), text[-2000:]
