"""Text pair, first pieces: tokenizers trained offline and the sequence-length schedule."""
import numpy as np
from pathlib import Path

import pytest
import torch

import speedup.textdata as textdata
from speedup.arms import SettingError, sequence_length
from speedup.tasks import TextTask, pack_rows
from speedup.textdata import load_text_version, train_tokenizer, version_tokenizer
from speedup.train import RunConfig, run_training, train_loop


def _prepared(tmp_path_factory, dataset: str) -> str:
    """An output dir holding the 60KB version of a text sample."""
    out = tmp_path_factory.mktemp(dataset)
    textdata.prepare_text_dataset(dataset, "sample", {"60KB": 60_000},
                                   [0.7, 0.15, 0.15], 0, str(out / "out"), str(out / "cache"))
    return str(out / "out")


@pytest.fixture(scope="module")
def yahoo(tmp_path_factory):
    return _prepared(tmp_path_factory, "yahoo_answers")


@pytest.mark.parametrize("arch", ["bert", "gpt1"])
def test_tokenizers_train_offline_and_round_trip(yahoo, arch):
    texts = load_text_version(yahoo, "yahoo_answers", "60KB").train.texts
    tok = train_tokenizer(texts, arch, vocab_size=500)
    assert 100 < len(tok) <= 500
    ids = tok(texts[0])["input_ids"]
    assert tok.unk_token_id not in ids[:20]
    words = texts[0].lower().split()[:3]
    assert all(w in tok.decode(ids) for w in words if w.isalpha())
    if arch == "bert":
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
        assert tok.mask_token_id is not None


def test_a_trained_bpe_is_numbered_the_same_every_time(yahoo, monkeypatch):
    """The trainer numbers end-of-word symbols in hash-map order (huggingface/tokenizers#1794);
    canonical_bpe renumbers them, so a fresh clone trains GPT-1 the same tokenizer."""
    split = load_text_version(yahoo, "yahoo_answers", "60KB")
    saved = {train_tokenizer(split.train.texts, "gpt1", 400).backend_tokenizer.to_str()
             for _ in range(4)}
    assert len(saved) == 1
    tok = train_tokenizer(split.train.texts, "gpt1", 400)
    vocab = tok.get_vocab()
    assert (vocab["<pad>"], vocab["<unk>"]) == (0, 1) == (tok.pad_token_id, tok.unk_token_id)
    # renumbering changes no tokenization
    monkeypatch.setattr(textdata, "canonical_bpe", lambda trained, special: trained)
    raw = train_tokenizer(split.train.texts, "gpt1", 400)
    for text in split.val.texts[:5]:
        assert (tok.convert_ids_to_tokens(tok(text)["input_ids"])
                == raw.convert_ids_to_tokens(raw(text)["input_ids"]))


def test_version_tokenizer_trains_on_the_training_split_only_and_caches(yahoo, monkeypatch):
    seen = []

    def spy(texts, arch, vocab_size=8000):
        seen.append(list(texts))
        return train_tokenizer(texts, arch, vocab_size)

    monkeypatch.setattr(textdata, "train_tokenizer", spy)
    first = version_tokenizer(yahoo, "yahoo_answers", "60KB", "gpt1", 400, pretrained=False)
    assert seen == [load_text_version(yahoo, "yahoo_answers", "60KB").train.texts]
    again = version_tokenizer(yahoo, "yahoo_answers", "60KB", "gpt1", 400, pretrained=False)
    assert len(seen) == 1, "the cached tokenizer was trained again"
    assert again.get_vocab() == first.get_vocab()
    text = load_text_version(yahoo, "yahoo_answers", "60KB").val.texts[0]
    assert again(text)["input_ids"] == first(text)["input_ids"]
    assert again.all_special_tokens == first.all_special_tokens
    assert again.pad_token_id == first.pad_token_id is not None
    # one file beside the version; a damaged one is set aside and trained again
    cached = Path(yahoo, "data", "yahoo_answers", "60KB", "tokenizer-gpt1-400.json")
    cached.write_text('{"version": "1.0", "mod')
    version_tokenizer(yahoo, "yahoo_answers", "60KB", "gpt1", 400, pretrained=False)
    assert len(seen) == 2 and cached.with_name(cached.name + ".damaged").exists()


def _tokenizer_in_a_process(output_dir, log, queue):
    """A batch job's first call for a version's tokenizer, its training slowed to 1 s and
    logged, so that two such jobs started together overlap; the vocabulary it got."""
    import time

    def slow(texts, arch, vocab_size=8000):
        with open(log, "a") as f:
            f.write("trained\n")
        time.sleep(1.0)
        return train_tokenizer(texts, arch, vocab_size)

    textdata.train_tokenizer = slow
    tok = version_tokenizer(output_dir, "yahoo_answers", "60KB", "bert", 300, pretrained=False)
    queue.put(sorted(tok.get_vocab().items()))


def test_parallel_jobs_share_one_trained_tokenizer(tmp_path_factory, tmp_path):
    """tokenizers' trainers are not deterministic (huggingface/tokenizers#1794), so two jobs
    that each trained one would train on different vocabularies: one trains, one waits."""
    import multiprocessing
    out, log = _prepared(tmp_path_factory, "yahoo_answers"), tmp_path / "trainings.log"
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    jobs = [ctx.Process(target=_tokenizer_in_a_process, args=(out, log, queue))
            for _ in range(2)]
    for job in jobs:
        job.start()
    vocabs = [queue.get(timeout=120) for _ in jobs]
    for job in jobs:
        job.join(timeout=30)
    assert [job.exitcode for job in jobs] == [0, 0]
    assert log.read_text().splitlines() == ["trained"], "both jobs trained a tokenizer"
    assert vocabs[0] == vocabs[1]


def test_sequence_length_warms_up_linearly_to_full_length():
    lengths = [sequence_length(p, 128, 8, 0.3) for p in np.linspace(0, 1, 101)]
    assert lengths[0] == 8 and lengths[-1] == 128
    assert sequence_length(0.3, 128, 8, 0.3) == 128
    assert sequence_length(0.15, 128, 8, 0.3) == 64
    assert all(b >= a for a, b in zip(lengths, lengths[1:]))
    assert all(n % 8 == 0 for n in lengths)


def test_packing_keeps_every_token_at_every_length():
    ids = torch.arange(1, 2 * 128 + 1).view(2, 128)
    for length in (8, 32, 48, 64, 100, 128):
        rows, attention = pack_rows(ids, length, pad_id=0)
        assert rows.shape == (-(-2 * 128 // length), length)
        assert torch.equal(rows[attention == 1], ids.flatten())   # every token, in order
        assert (rows[attention == 0] == 0).all()                  # only the last row padded
        assert (attention[:-1] == 1).all()


# ---------------------------------------------------------------- training the text pair

import math  # noqa: E402

from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score  # noqa: E402

from speedup.metrics import lm_metrics, token_stats  # noqa: E402
from speedup.tasks import pad_rows  # noqa: E402


@pytest.fixture(scope="module")
def books(tmp_path_factory):
    return _prepared(tmp_path_factory, "bookcorpus")


def _config(root, dataset, arch, length=32, **settings):
    return RunConfig.from_flat({"task": "nlp", "dataset": dataset, "version": "60KB",
                                "arch": arch, "seq_length": length, "vocab_size": 300,
                                "output_dir": root, **settings})


def _task(root, dataset, arch, length=32):
    return TextTask(_config(root, dataset, arch, length), torch.device("cpu"))


def test_masking_follows_bert_80_10_10_and_spares_special_tokens(books):
    task = _task(books, "bookcorpus", "bert")
    rows = torch.randint(5, task.vocab_size, (400, 64))
    rows[:, 0] = 2  # [CLS], a special token: never masked
    inputs, labels = task.mask(rows, torch.Generator().manual_seed(0))
    picked = labels != -100
    assert not picked[:, 0].any()
    assert torch.equal(labels[picked], rows[picked])
    rate = picked[:, 1:].float().mean().item()
    assert abs(rate - 0.15) < 0.01
    mask_id = task.masker.tokenizer.mask_token_id
    as_mask = (inputs[picked] == mask_id).float().mean().item()
    kept = (inputs[picked] == rows[picked]).float().mean().item()
    assert abs(as_mask - 0.8) < 0.02
    assert abs(kept - 0.1) < 0.02  # (a random replacement may draw the same token: rare)
    assert abs(1 - as_mask - kept - 0.1) < 0.02
    assert torch.equal(inputs[~picked], rows[~picked])
    # validation and test are masked once, the same way every time
    again = _task(books, "bookcorpus", "bert")
    assert torch.equal(task.ids["val"], again.ids["val"])
    assert torch.equal(task.labels["val"], again.labels["val"])
    assert (task.labels["val"] != -100).any()


def test_perplexity_matches_a_hand_computation():
    probs = torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]])
    targets = torch.tensor([[0, 1, -100]])  # the last position is not scored
    metrics = lm_metrics(*token_stats(torch.log(probs), targets))
    by_hand = math.exp(-(math.log(0.5) + math.log(0.8)) / 2)
    assert metrics["perplexity"] == pytest.approx(by_hand)
    assert metrics["loss"] == pytest.approx(math.log(by_hand))
    assert metrics["token_accuracy"] == 1.0 and metrics["tokens"] == 2


def test_text_classification_metrics_match_scikit_learn(yahoo):
    torch.manual_seed(0)
    task = _task(yahoo, "yahoo_answers", "gpt1")
    net = task.make_model()
    metrics = task.evaluate(net, "val")
    rows, attention = pad_rows(task.ids["val"], task.full_size, task.pad_id)
    with torch.no_grad():
        pred = task.forward(net.eval(), rows, attention, None)[0].argmax(-1).numpy()
    y = task.labels["val"].numpy()
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y, pred))
    for name, fn in (("precision", precision_score), ("recall", recall_score),
                     ("f1", f1_score)):
        assert metrics[name] == pytest.approx(fn(y, pred, average="macro", zero_division=0))


@pytest.mark.parametrize("arch", ["bert", "gpt1"])
def test_padding_does_not_change_a_classifiers_output(yahoo, arch):
    """BERT reads [CLS] under an attention mask; GPT-1 reads the last real token."""
    torch.manual_seed(0)
    task = _task(yahoo, "yahoo_answers", arch)
    net = task.make_model().eval()
    short = task.ids["val"][0][:10]
    rows, attention = pad_rows([short, task.ids["val"][1]], 32, task.pad_id)
    assert (attention[0] == 0).any()
    with torch.no_grad():
        alone = task.forward(net, *pad_rows([short], 32, task.pad_id), None)[0][0]
        padded = task.forward(net, rows, attention, None)[0][0]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_word_rarity_ranks_rare_words_as_harder(books):
    task = _task(books, "bookcorpus", "gpt1")
    scores = task.difficulty_scores()
    assert len(scores) == task.n_train and np.all(scores > 0)
    counts = torch.bincount(task.ids["train"].flatten())
    rarest = torch.where(counts > 0, counts, counts.max() + 1).argmin()
    task.ids["train"][0] = counts.argmax()   # the commonest token only: easiest
    task.ids["train"][1] = rarest            # the rarest token, repeated: much harder
    scores = task.difficulty_scores()
    assert scores.argmin() == 0 and scores[1] > np.median(scores)


@pytest.mark.parametrize("dataset,arch", [("yahoo_answers", "bert"), ("bookcorpus", "gpt1"),
                                          ("bookcorpus", "bert")])
def test_a_text_task_learns_and_warms_up_the_sequence_length(yahoo, books, dataset, arch):
    torch.set_num_threads(1)
    root = yahoo if dataset == "yahoo_answers" else books
    config = _config(root, dataset, arch, arm="progressive", ramp_fraction=0.5,
                     start_length=8, length_step=8, epochs=6, batch_size=16,
                     optimizer="adamw", lr=3e-3, weight_decay=0.01)
    task = TextTask(config, torch.device("cpu"))
    torch.manual_seed(0)
    net = task.make_model()
    hist = train_loop(net, task, config.arm, config)
    assert hist[0]["mean_input_size"] < 32 == hist[-1]["mean_input_size"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert all(h["throughput"] > 0 for h in hist)
    if task.objective == "lm":
        assert hist[-1]["val"]["perplexity"] < task.vocab_size / 2
        assert hist[-1]["val_primary"] == hist[-1]["val"]["perplexity"]
    else:
        assert set(hist[-1]["val"]) == {"accuracy", "precision", "recall", "f1", "n", "se"}


def _nlp_params(root, **changes):
    """A tiny text run's flat settings (the rest at their defaults)."""
    return {"task": "nlp", "dataset": "bookcorpus", "version": "60KB",
            "arch": "gpt1", "seq_length": 32, "vocab_size": 300, "optimizer": "adamw",
            "epochs": 2, "batch_size": 16, "lr": 3e-3, "weight_decay": 0.01, "num_threads": 1,
            "checkpoint_every_s": 0.0, "output_dir": root, **changes}


def _train(root, **changes):
    return run_training(RunConfig.from_flat(_nlp_params(root, **changes)))


def test_run_training_saves_a_text_run_and_resumes(books, capsys):
    result = _train(books, arm="difficulty")
    assert result["primary_metric"] == "perplexity" and not result["higher_is_better"]
    assert result["best_val"] == min(h["val_primary"] for h in result["history"])
    assert result["model"] == "GPT-1 (scaled-down: micro preset)"
    assert result["input_unit"] == "tokens" and result["throughput_unit"] == "tokens/s"
    assert result["scoring_time_s"] > 0 and result["data_source"] == "sample"
    assert set(result["test"]) >= {"loss", "perplexity", "token_accuracy"}
    capsys.readouterr()
    assert _train(books, arm="difficulty") == result
    assert "already complete" in capsys.readouterr().out
    # the same settings on a rebuilt version of other content: trained anew, not reused
    manifest = Path(books, "data", "bookcorpus", "60KB", "manifest.json")
    original = manifest.read_text()
    try:
        manifest.write_text(original.replace('"seed": 0', '"seed": 0, "rebuilt": 1', 1))
        again = _train(books, arm="difficulty")
        assert "training anew" in capsys.readouterr().out
        assert again["data_fingerprint"] != result["data_fingerprint"] is not None
    finally:
        manifest.write_text(original)


@pytest.mark.parametrize("changes,message", [
    ({"seq_length": 128}, "'seq_length' = 128: preset 'micro' has 64 positions"),
    ({"arch": "resnet18"}, "'arch' = 'resnet18': must be one of"),
    ({"start_scale": 0.5, "arm": "progressive"}, "'start_scale' = 0.5: not a setting"),
    ({"width": 8}, "'width' = 8: not a setting"),
    ({"optimizer": "adam"}, "'optimizer' = 'adam'"),
    ({"preset": "huge"}, "'preset' = 'huge'"),
])
def test_bad_text_settings_are_named_before_any_work(tmp_path, changes, message):
    with pytest.raises(SettingError, match=message.replace("(", r"\(")):
        _train(str(tmp_path / "none"), **changes)
    assert not (tmp_path / "none").exists()
