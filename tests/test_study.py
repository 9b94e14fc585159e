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
from speedup.prepare import prepare_dataset
from speedup.study import (NoGPUError, StudyFailed, check_device, expand_plan, finish,
                           in_this_kernel, parameter_defaults, parse_profile, run_plan)
from speedup.tasks import ImageTask, TextTask
from speedup.train import RunConfig, resolve_precision, run_training, train_loop

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"interval_time_s", "train_time_s", "throughput"}  # wall-clock: differs run to run

# The training process of one run, killed (SIGKILL, as when a Colab VM is recycled) right
# after its checkpoint at validation pass KILL_AFTER is on disk.
KILLED_RUN = """
import json, os, signal, sys
sys.path.insert(0, {root!r})
import speedup.train as train
save = train.Checkpoint.save

def save_then_die(self, state):
    save(self, state)
    if len(json.loads(state["history"])) == {kill_after}:
        os.kill(os.getpid(), signal.SIGKILL)

train.Checkpoint.save = save_then_die
train.run_training(train.RunConfig.from_flat(json.loads(sys.argv[1])))
"""
KILL_AFTER = 2


def _params(out, **changes):
    """A tiny run's flat settings (the rest at their defaults)."""
    image = {} if changes.get("task") == "nlp" else {"width": 8}
    return {"dataset": "caltech256", "version": "40KB", "arch": "vgg11_bn", **image,
            "arm": "difficulty", "epochs": 4, "batch_size": 32, "num_threads": 1,
            "checkpoint_every_s": 0.0, "output_dir": str(out), **changes}


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
    {"task": "nlp", "dataset": "bookcorpus", "arch": "bert", "arm": "progressive",
     "optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.01},  # BERT's masking generator
], ids=["cv-difficulty", "nlp-bert-warmup"])
def test_a_run_killed_mid_training_resumes_to_the_same_history(versions, changes):
    """Tolerance: every recorded number except wall-clock times equal to 1e-6 (relative);
    on one CPU thread they are in fact bit-identical."""
    reference = run_training(RunConfig.from_flat(
        _params(versions, **changes, run_name=f"ref-{len(changes)}")))
    params = _params(versions, **changes)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_RUN.format(root=str(ROOT), kill_after=KILL_AFTER),
         json.dumps(params)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    checkpoints = list(Path(versions, "checkpoints").glob("*.pt"))
    assert len(checkpoints) == 1 and not list(Path(versions, "results").glob(
        f"{checkpoints[0].stem}.json"))
    progress = json.loads(checkpoints[0].with_name(checkpoints[0].name + ".json").read_text())
    resumed = run_training(RunConfig.from_flat(params))
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
    from speedup.train import Checkpoint
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
    return NS(images=x, targets=y, mask=None, difficulty=None)


def _fit(precision, hook=None):
    torch.set_num_threads(1)
    data = NS(train=_toy_images(128), val=_toy_images(32), test=_toy_images(32),
              multi_label=False, classes=["r", "g", "b"], image_size=16, manifest={})
    config = RunConfig.from_flat({"arch": "resnet18", "width": 8, "arm": "progressive",
                                  "epochs": 3, "batch_size": 32, "weight_decay": 0,
                                  "precision": precision})
    task = ImageTask(config, torch.device("cpu"), data)
    torch.manual_seed(0)
    net = task.make_model()
    if hook:
        net.conv1.register_forward_hook(hook)
    return net, train_loop(net, task, config.arm, config)


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
    config = RunConfig.from_flat(_params(versions, task="nlp", dataset="bookcorpus",
                                         arch="gpt1", arm="baseline", seq_length=32,
                                         vocab_size=300, epochs=2, batch_size=16,
                                         optimizer="adamw", lr=3e-3, weight_decay=0.01,
                                         precision="bf16"))
    task = TextTask(config, torch.device("cpu"))
    torch.manual_seed(0)
    net = task.make_model()
    hist = train_loop(net, task, config.arm, config)
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
        "task", "profile", "seeds", "output_dir", "cache_dir", "use_drive", "allow_cpu",
        "presenters"}
    assert max(len(c.source) for c in nb.cells) < 20_000  # no one-line JSON plan


def test_failed_inputs_skip_their_dependants_and_the_study_ends_red(tmp_path):
    """The one runner, as the merged notebook drives it (each job's entry point called in
    this kernel): a failed data job's training job is skipped, naming it, and the study
    ends with the list; the statuses are written as the batch's are."""
    out = str(tmp_path)
    plan = {"task": "cv", "stages": {
        "data_prep": [{"id": f"data-{d}", "stage": "data_prep",
                       "params": {"dataset": d, "output_dir": out}} for d in ("good", "bad")],
        "method": [{"id": f"run-{d}", "stage": "method", "main": True, "frontier": False,
                    "params": {"arch": "resnet18", "dataset": d, "version": "1MB",
                               "output_dir": out}} for d in ("good", "bad")]}}
    calls = []

    def prepare(dataset, output_dir):
        if dataset == "bad":
            raise FileNotFoundError("no mirror delivered bad.tar")

    def train(task, runs, output_dir):
        calls.extend(run["dataset"] for run in runs)

    start = in_this_kernel({"data_prep": prepare, "method": train}, out)
    statuses = run_plan(plan, out, start, stages=["data_prep", "method"])
    assert calls == ["good"]  # the run on the failed data was never started
    assert statuses["resnet18-bad-1MB"]["reason"] == "upstream job data-bad failed"
    assert json.loads((tmp_path / "batch" / "resnet18-bad-1MB.json").read_text())[
        "status"] == "skipped"
    assert not (tmp_path / "batch.lock").exists()       # the runner's lock is released
    with pytest.raises(StudyFailed) as err:
        finish(statuses)
    message = str(err.value)
    assert "2 of 4 jobs did not complete" in message
    assert "FAILED  data-bad: FileNotFoundError: no mirror delivered bad.tar" in message
    assert "skipped resnet18-bad-1MB: upstream job data-bad failed" in message
    finish({"data-good": {"status": "complete"}})  # all clear: no error


def test_check_device_names_the_way_out():
    plan = {"requires_gpu": True, "profile": "full", "task": "nlp"}
    if torch.cuda.is_available():
        pytest.fail("this test runs where there is no CUDA (CI)")
    with pytest.raises(NoGPUError, match=r"(?s)'full' of task 'nlp'.*allow_cpu = True"):
        check_device(plan)
    check_device(plan, allow_cpu=True)
    check_device({**plan, "requires_gpu": False})
