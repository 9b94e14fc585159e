"""Chapter 2: the torchvision models, adapted to width, input size and classes."""
import pytest
import torch

from speedup.models import build_model, count_flops, count_parameters, model_label


@pytest.mark.parametrize("arch", ["vgg11_bn", "vgg16", "resnet18", "resnet50"])
@pytest.mark.parametrize("size", [8, 16, 24, 32, 64])
def test_one_network_accepts_every_curriculum_size(arch, size):
    net = build_model(arch, num_classes=7, width=8, full_size=32).eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 3, size, size)).shape == (2, 7)


def test_width_scales_the_real_architecture():
    full = count_parameters(build_model("resnet18", 1000, width=64, full_size=224))
    assert full == 11_689_512  # torchvision's resnet18
    quarter = count_parameters(build_model("resnet18", 1000, width=16, full_size=224))
    assert 0.04 * full < quarter < 0.1 * full  # ~1/16 of the conv weights


def test_small_inputs_get_the_cifar_stem():
    small = build_model("resnet18", 10, width=16, full_size=32)
    large = build_model("resnet18", 10, width=16, full_size=224)
    assert small.conv1.stride == (1, 1) and isinstance(small.maxpool, torch.nn.Identity)
    assert large.conv1.stride == (2, 2)


def test_flops_grow_with_pixel_count():
    net = build_model("vgg11_bn", 10, width=16, full_size=32)
    ratio = count_flops(net, 32) / count_flops(net, 16)
    assert 3.5 < ratio < 4.5


def test_unknown_arch_names_the_value():
    with pytest.raises(ValueError, match="'vgg12'"):
        build_model("vgg12", 10)


def test_scaled_down_models_say_so():
    assert "scaled-down" in model_label("vgg11_bn", 16)
    assert model_label("vgg11_bn", 64) == "vgg11_bn"
