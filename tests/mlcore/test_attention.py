import pytest
import torch

from mlcore.attention import CBAM, ChannelAttention, SpatialAttention


@pytest.mark.parametrize(("channels", "size"), [(1, 5), (8, 7), (64, 4)])
def test_cbam_keeps_shapes(channels, size):
    torch.manual_seed(0)
    x = torch.randn(3, channels, size, size + 1)
    assert CBAM(channels)(x).shape == x.shape
    assert ChannelAttention(channels)(x).shape == x.shape
    assert SpatialAttention(3)(x).shape == x.shape


def test_attention_maps_are_gates_of_the_expected_shapes():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 6, 6)
    channel = ChannelAttention(16, reduction=4).attention(x)
    spatial = SpatialAttention().attention(x)
    assert channel.shape == (2, 16, 1, 1) and spatial.shape == (2, 1, 6, 6)
    for gate in (channel, spatial):
        assert gate.min() > 0 and gate.max() < 1


def test_cbam_is_channel_then_spatial_and_trainable():
    torch.manual_seed(0)
    module = CBAM(8, reduction=2, kernel_size=3)
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    expected = module.spatial(module.channel(x))
    output = module(x)
    assert torch.allclose(output, expected)
    output.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="odd"):
        SpatialAttention(4)
    with pytest.raises(ValueError, match=">= 1"):
        ChannelAttention(0)
