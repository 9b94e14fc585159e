"""Chapter 3's study machinery: a run killed mid-training resumes exactly, mixed precision
on the CPU, the plan shared by run_batch.py and speedup.ipynb, and failures that end red."""
import json
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace as NS

import nbformat
import numpy as np
import pytest
import torch

import run_batch
from speedup.models import build_model, build_text_model
from speedup.prepare import prepare_dataset
from speedup.method import (
    arm_of, NoGPUError, StudyFailed, channel_stats, check_device, expand_plan, finish, fit,
    fit_text, parameter_defaults, parse_profile, prepare_text_task, resolve_precision,
    run_stage, run_training,
)

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"interval_time_s", "train_time_s", "throughput"}  # wall-clock: differs run to run

# The training process of one run, killed (SIGKILL, as when a Colab VM is recycled) right
# after its checkpoint at validation pass KILL_AFTER is on disk.
KILLED_RUN = """
import json, os, signal, sys
sys.path.insert(0, {root!r})
import speedup.method as method
save = method.Checkpoint.save

def save_then_die(self, state):
    save(self, state)
    if len(json.loads(state["history"])) == {kill_after}:
        os.kill(os.getpid(), signal.SIGKILL)

method.Checkpoint.save = save_then_die
method.run_training(**json.loads(sys.argv[1]))
"""
KILL_AFTER = 2


def _params(out, **changes):
    """The method chapter's own defaults, with a tiny run's settings."""
    params = {k: v for k, v in run_batch.chapter_defaults()["method"].items()
              if k != "variants"}
    return {**params, "dataset": "caltech256", "version": "40KB", "arch": "vgg11_bn",
            "width": 8, "curriculum": "difficulty", "epochs": 4, "batch_size": 32,
            "num_threads": 1, "checkpoint_every_s": 0.0, "output_dir": str(out), **changes}


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume")
    prepare_dataset("caltech256", "sample", {"40KB": 40_000}, {"40KB": 16}, 85,
                    [0.7, 0.15, 0.15], False, 0, out, out / "cache", show=False)
    prepare_dataset("bookcorpus", "sample", {"40KB": 40_000}, {}, 85, [0.7, 0.15, 0.15],
                    False, 0, out, out / "cache", show=False)
    return out


def _without_timing(history):
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


def _flat(value, prefix=""):
    """Nested dicts and lists as {path: number}, for comparisons with a tolerance."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items()
                for k, v in _flat(item, f"{prefix}/{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value)
                for k, v in _flat(item, f"{prefix}/{i}").items()}
    return {prefix: value}


@pytest.mark.parametrize("changes", [
    {},  # VGG (dropout), random flips, the difficulty curriculum's order and pool
    {"task": "nlp", "dataset": "bookcorpus", "arch": "bert", "curriculum": "progressive",
     "optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.01},  # BERT's masking generator
], ids=["cv-difficulty", "nlp-bert-warmup"])
def test_a_run_killed_mid_training_resumes_to_the_same_history(versions, changes):
    """Tolerance: every recorded number except wall-clock times equal to 1e-6 (relative);
    on one CPU thread they are in fact bit-identical."""
    reference = run_training(**_params(versions, **changes, run_name=f"ref-{len(changes)}"))
    params = _params(versions, **changes)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_RUN.format(root=str(ROOT), kill_after=KILL_AFTER),
         json.dumps(params)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    checkpoints = list(Path(versions, "checkpoints").glob("*.pt"))
    assert len(checkpoints) == 1 and not list(Path(versions, "results").glob(
        f"{checkpoints[0].stem}.json"))
    progress = json.loads(checkpoints[0].with_name(checkpoints[0].name + ".json").read_text())
    resumed = run_training(**params)
    hist = resumed["history"]
    assert progress["step"] == hist[KILL_AFTER - 1]["step"] < progress["steps"]
    assert progress["steps"] == hist[-1]["step"]
    assert resumed["resumed_after_steps"] == [progress["step"]]
    assert not checkpoints[0].exists()  # the result holds everything now
    assert _flat(_without_timing(resumed["history"])) == pytest.approx(
        _flat(_without_timing(reference["history"])), rel=1e-6)
    assert resumed["test"] == pytest.approx(reference["test"], rel=1e-6)
    # the clock is the killed run's up to the checkpoint, then only the new epochs' time:
    # the restart (loading, tokenising, scoring again) is never counted
    assert hist[KILL_AFTER - 1]["train_time_s"] == pytest.approx(progress["clock"])
    assert hist[-1]["train_time_s"] == pytest.approx(
        progress["clock"] + sum(h["interval_time_s"] for h in hist[KILL_AFTER:]))


def test_a_checkpoint_of_other_settings_is_ignored(versions, capsys):
    from speedup.method import Checkpoint
    cp = Checkpoint(Path(versions, "cp", "x.pt"), {"lr": 0.1})
    cp.save({"step": 1, "steps": 3, "clock": 1.0})
    assert Checkpoint(cp.path, {"lr": 0.2}).load() is None
    assert "other settings" in capsys.readouterr().out
    cp.path.write_bytes(b"not a checkpoint")  # a damaged file: start again, say so
    assert cp.load() is None and "unreadable" in capsys.readouterr().out


def _toy_images(n):
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randint(0, 50, (n, 3, 16, 16), dtype=torch.uint8, generator=g)
    for c in range(3):
        x[y == c, c] += 150
    return NS(images=x, targets=y, mask=None)


def _fit(precision, hook=None):
    torch.set_num_threads(1)
    data = NS(train=_toy_images(128), val=_toy_images(32), multi_label=False)
    torch.manual_seed(0)
    net = build_model("resnet18", 3, width=8, full_size=16)
    if hook:
        net.conv1.register_forward_hook(hook)
    dev = torch.device("cpu")
    mean, std = channel_stats(data.train.images, dev)
    arm = arm_of(_params("nowhere", curriculum="progressive"), 16)
    hist = fit(net, data, arm, epochs=3, batch_size=32, lr=0.05,
               momentum=0.9, weight_decay=0, label_smoothing=0, seed=0, device=dev,
               mean=mean, std=std, precision=precision)
    return net, hist


def test_cpu_runs_stay_fp32_and_bf16_autocast_works_on_the_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    with pytest.raises(ValueError, match="'fp16': needs a CUDA GPU"):
        resolve_precision("fp16", cpu)
    _, auto = _fit("auto")
    _, fp32 = _fit("fp32")
    assert _without_timing(auto) == _without_timing(fp32)  # auto on a CPU is plain fp32
    dtypes = []
    net, bf16 = _fit("bf16", lambda module, inputs, output: dtypes.append(output.dtype))
    assert torch.bfloat16 in dtypes and torch.float32 not in dtypes  # the autocast path ran
    assert all(p.dtype == torch.float32 for p in net.parameters())  # fp32 master weights
    assert bf16[-1]["train_loss"] < bf16[0]["train_loss"] and bf16[-1]["val_primary"] > 0.5
    assert _without_timing(bf16) != _without_timing(fp32)


def test_bf16_autocast_trains_a_text_model_on_the_cpu(versions):
    torch.set_num_threads(1)
    task = prepare_text_task(str(versions), "bookcorpus", "40KB", "gpt1", 32, 300, False, .15)
    torch.manual_seed(0)
    net = build_text_model("gpt1", "lm", "micro", task.vocab_size, 2, task.pad_id)
    arm = arm_of(_params("nowhere", task="nlp", curriculum="none"), 32)
    hist = fit_text(net, task, arm, epochs=2, batch_size=16,
                    optimizer="adamw", lr=3e-3, momentum=0.9, weight_decay=0.01, seed=0,
                    device=torch.device("cpu"), precision="bf16")
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert np.isfinite(hist[-1]["val"]["perplexity"])


# ---------------------------------------------------------------- the plan and failures

def _notebook_namespace() -> dict:
    """The profiles and chapter parameters as speedup.ipynb embeds them, executed."""
    nb = nbformat.read(ROOT / "speedup.ipynb", as_version=4)
    namespace = {}
    for cell in nb.cells:
        if cell.id == "gen-profiles" or cell.id.startswith("gen-profile-") \
                or cell.id == "gen-chapter-parameters":
            exec(cell.source, namespace)
    return namespace


def test_the_notebook_expands_each_profile_as_run_batch_does():
    ns = _notebook_namespace()
    files = sorted(p.stem for p in (ROOT / "params").glob("*.yaml"))
    assert sorted(ns["PROFILES"]) == files and {"cv-colab", "nlp-colab"} <= set(files)
    defaults = {s: parameter_defaults(src) for s, src in ns["CHAPTER_PARAMETERS"].items()}
    assert defaults == run_batch.chapter_defaults()
    for name in files:
        path = ROOT / "params" / f"{name}.yaml"
        assert ns["PROFILES"][name] == path.read_text()  # readable YAML, verbatim
        ours = expand_plan(parse_profile(ns["PROFILES"][name], f"params/{name}.yaml"),
                           defaults, "out", "cache")
        theirs = run_batch.expand_plan(run_batch.load_profile(path), "out", "cache")
        assert {k: v for k, v in ours.items() if k != "source"} == \
            {k: v for k, v in theirs.items() if k != "source"}
    nb = nbformat.read(ROOT / "speedup.ipynb", as_version=4)
    parameters = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert set(parameter_defaults(parameters.source)) == {
        "task", "profile", "seeds", "output_dir", "cache_dir", "use_drive", "allow_cpu"}
    assert max(len(c.source) for c in nb.cells) < 20_000  # no one-line JSON plan


def test_failed_inputs_skip_their_dependants_and_the_study_ends_red(tmp_path):
    plan = {"stages": {
        "data_prep": [{"id": f"data-{d}", "stage": "data_prep",
                       "params": {"dataset": d, "output_dir": str(tmp_path)}}
                      for d in ("good", "bad")],
        "method": [{"id": f"run-{d}", "stage": "method", "main": True,
                    "params": {"dataset": d, "output_dir": str(tmp_path)}}
                   for d in ("good", "bad")]}}
    statuses, calls = {}, []

    def prepare(dataset, output_dir):
        if dataset == "bad":
            raise FileNotFoundError("no mirror delivered bad.tar")
        return dataset

    def train(dataset, output_dir):
        calls.append(dataset)
        return dataset

    assert run_stage(plan, "data_prep", prepare, statuses) == ["good"]
    assert run_stage(plan, "method", train, statuses) == ["good"]
    assert calls == ["good"]  # the run on the failed data was never started
    assert statuses["run-bad"] == {"status": "skipped", "reason": "upstream job data-bad failed"}
    with pytest.raises(StudyFailed) as err:
        finish(statuses)
    message = str(err.value)
    assert "2 of 4 jobs did not complete" in message
    assert "FAILED  data-bad: FileNotFoundError: no mirror delivered bad.tar" in message
    assert "skipped run-bad: upstream job data-bad failed" in message
    finish({"data-good": {"status": "complete"}})  # all clear: no error


def test_check_device_names_the_way_out():
    plan = {"requires_gpu": True, "profile": "full", "task": "nlp"}
    if torch.cuda.is_available():
        pytest.fail("this test runs where there is no CUDA (CI)")
    with pytest.raises(NoGPUError, match=r"(?s)'full' of task 'nlp'.*allow_cpu = True"):
        check_device(plan)
    check_device(plan, allow_cpu=True)
    check_device({**plan, "requires_gpu": False})
