"""Chapter 2, text pair: BERT and GPT-1 from transformers, per objective and preset."""
import pytest
import torch

from speedup.models import (
    TEXT_PRESETS, build_text_model, count_parameters, count_text_flops, text_model_label,
)


@pytest.mark.parametrize("arch", ["bert", "gpt1"])
@pytest.mark.parametrize("objective", ["classify", "lm"])
def test_forward_and_backward_on_a_micro_config(arch, objective):
    torch.manual_seed(0)
    net = build_text_model(arch, objective, "micro", vocab_size=50, num_labels=4)
    ids = torch.randint(1, 50, (3, 12))
    labels = torch.tensor([0, 3, 1]) if objective == "classify" else ids
    out = net(input_ids=ids, labels=labels)
    assert out.logits.shape == ((3, 4) if objective == "classify" else (3, 12, 50))
    out.loss.backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("arch,low,high", [("bert", 105e6, 112e6), ("gpt1", 112e6, 120e6)])
def test_base_preset_is_the_papers_model(arch, low, high):
    net = build_text_model(arch, "lm", "base")
    assert low < count_parameters(net) < high  # BERT-base ~110M, GPT-1 ~117M
    cfg = net.config
    hidden = getattr(cfg, "hidden_size", None) or cfg.n_embd
    assert hidden == TEXT_PRESETS["base"]["hidden"] == 768


def test_text_flops_grow_with_sequence_length():
    net = build_text_model("gpt1", "lm", "micro", vocab_size=100)
    assert 1.9 < count_text_flops(net, 64) / count_text_flops(net, 32) < 2.5


def test_bad_text_model_names_are_rejected():
    with pytest.raises(ValueError, match="'t5'"):
        build_text_model("t5", "lm")


def test_scaled_down_text_models_say_so():
    assert text_model_label("bert", "base") == "BERT-base"
    assert "scaled-down" in text_model_label("gpt1", "small")
