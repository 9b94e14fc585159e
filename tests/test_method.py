"""Unit tests of chapter 3's definitions: schedules, metrics, scoring, the loop."""
import math
from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score

from speedup.method import (CURRICULA, RESULT_KEYS, Curriculum, channel_stats,
                            check_training_params, classification_metrics, competence,
                            difficulty_scores, fit, progressive_size, run_id)


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


def test_curriculum_hooks_only_change_their_own_axis():
    base, prog, diff = (Curriculum(k, 32) for k in CURRICULA)
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
    assert m["mAP"] == pytest.approx(np.mean(aps))
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


@pytest.mark.parametrize("kind", CURRICULA)
@pytest.mark.parametrize("multi", [False, True])
def test_fit_learns_and_records_each_epoch(kind, multi):
    torch.set_num_threads(1)
    from speedup.architectures import build_model
    data = NS(train=_toy_data(192, multi), val=_toy_data(48, multi), multi_label=multi)
    net = build_model("resnet18", 3, width=8, full_size=16)
    dev = torch.device("cpu")
    mean, std = channel_stats(data.train.images, dev)
    order = np.arange(192) if kind == "difficulty" else None
    hist = fit(net, data, Curriculum(kind, 16, start_scale=0.5), epochs=3, batch_size=32,
               lr=0.05, momentum=0.9, weight_decay=0, label_smoothing=0, seed=0, device=dev,
               mean=mean, std=std, order=order, clock_start=1.5)
    assert [h["epoch"] for h in hist] == [1, 2, 3]
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


def test_run_id_is_stable_and_changes_with_any_setting():
    p = {k: 1 for k in RESULT_KEYS} | {"dataset": "voc2012", "version": "1MB",
                                      "arch": "vgg11_bn", "curriculum": "none", "seed": 0}
    assert run_id(p) == run_id(dict(p))
    assert run_id(p).startswith("voc2012-1MB-vgg11_bn-none-s0-")
    assert run_id(p | {"lr": 2}) != run_id(p)


@pytest.mark.parametrize("key,value", [("curriculum", "random"), ("start_scale", 0),
                                       ("ramp_fraction", 1.5), ("epochs", 0), ("lr", -1),
                                       ("precision", "fp8"), ("checkpoint_every_s", -1)])
def test_bad_training_parameters_are_named(key, value):
    p = {"task": "cv", "curriculum": "progressive", "start_scale": .5,
         "start_competence": .25, "delay_fraction": .2, "ramp_fraction": .5,
         "competence_fraction": .5, "epochs": 2, "batch_size": 8, "size_step": 4, "width": 8,
         "lr": .1, "optimizer": "sgd", "preset": "micro", "mlm_probability": .15,
         "seq_length": 64, "start_length": 8, "length_step": 8, "vocab_size": 100,
         "precision": "auto", "checkpoint_every_s": 0.0}
    with pytest.raises(ValueError, match=f"'{key}'"):
        check_training_params(p | {key: value})
