"""Text pair, first pieces: tokenizers trained offline and the sequence-length schedule."""
import numpy as np
import pytest
import torch

import speedup.data_prep as data_prep
from speedup.data_prep import load_text_version, train_tokenizer, version_tokenizer
from speedup.method import sequence_length, split_to_length


@pytest.fixture(scope="module")
def yahoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("text")
    data_prep.prepare_text_dataset("yahoo_answers", "sample", {"60KB": 60_000},
                                   [0.7, 0.15, 0.15], 0, str(out / "out"), str(out / "cache"))
    return str(out / "out")


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


def test_version_tokenizer_trains_on_the_training_split_only_and_caches(yahoo, monkeypatch):
    seen = []

    def spy(texts, arch, vocab_size=8000):
        seen.append(list(texts))
        return train_tokenizer(texts, arch, vocab_size)

    monkeypatch.setattr(data_prep, "train_tokenizer", spy)
    first = version_tokenizer(yahoo, "yahoo_answers", "60KB", "gpt1", 400, pretrained=False)
    assert seen == [load_text_version(yahoo, "yahoo_answers", "60KB").train.texts]
    again = version_tokenizer(yahoo, "yahoo_answers", "60KB", "gpt1", 400, pretrained=False)
    assert len(seen) == 1, "the cached tokenizer was trained again"
    assert again.get_vocab() == first.get_vocab()


def test_sequence_length_warms_up_linearly_to_full_length():
    lengths = [sequence_length(p, 128, 8, 0.3) for p in np.linspace(0, 1, 101)]
    assert lengths[0] == 8 and lengths[-1] == 128
    assert sequence_length(0.3, 128, 8, 0.3) == 128
    assert sequence_length(0.15, 128, 8, 0.3) == 64
    assert all(b >= a for a, b in zip(lengths, lengths[1:]))
    assert all(n % 8 == 0 for n in lengths)


def test_split_to_length_keeps_every_token():
    ids = torch.arange(2 * 128).view(2, 128)
    for length in (8, 32, 64, 128):
        rows = split_to_length(ids, length)
        assert rows.shape == (2 * 128 // length, length)
        assert torch.equal(rows.flatten(), ids.flatten())
    assert split_to_length(ids, 48).shape == (4, 48)  # 2 x 2 rows; 32 tokens per row unused
