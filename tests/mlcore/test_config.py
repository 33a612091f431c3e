import dataclasses

import pytest
import torch

from mlcore.backbones import build_backbone
from mlcore.config import (
    BackboneConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    cpu_cold_start,
    cpu_small_stage1,
    cpu_small_stage2,
    embedding_config,
    full_stage1,
    full_stage2,
    resolve_device,
    seed_everything,
)


def test_resolve_device_auto_picks_cuda_only_when_present():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_resolve_device_refuses_cuda_without_gpu():
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_configs_are_frozen_and_validated():
    config = BackboneConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.name = "resnet50"  # type: ignore[misc]
    with pytest.raises(ValueError, match="num_classes"):
        BackboneConfig(num_classes=0)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0.0)


def test_presets_follow_the_method():
    assert (full_stage1().name, full_stage1().input_size) == ("densenet161", 224)
    assert (full_stage2().name, full_stage2().input_size) == ("resnet50", 224)
    assert cpu_small_stage1().input_size == 32
    assert cpu_small_stage2().input_size == 32
    assert cpu_small_stage1(cbam=False).cbam is False
    assert full_stage1(num_classes=5).num_classes == 5
    assert cpu_cold_start().name == "mobilenet_v2"
    lite = embedding_config()
    assert (lite.name, lite.input_size, lite.cbam) == ("efficientnet_lite0", 224, False)
    # Stage 1 is the larger network of the cascade, on the CPU as on the GPU.
    stage1, stage2 = build_backbone(cpu_small_stage1()), build_backbone(cpu_small_stage2())
    assert sum(p.numel() for p in stage1.parameters()) > sum(p.numel() for p in stage2.parameters())


def test_config_dict_round_trip_ignores_unknown_keys():
    config = BackboneConfig(name="resnet18", num_classes=3, cbam=False)
    values = {**config_to_dict(config), "added_in_a_later_version": 1}
    assert config_from_dict(BackboneConfig, values) == config


def test_seed_everything_is_reproducible():
    first = seed_everything(7)
    a = (torch.randn(3), torch.randperm(10, generator=first))
    second = seed_everything(7)
    b = (torch.randn(3), torch.randperm(10, generator=second))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    seed_everything(8)
    assert not torch.equal(torch.randn(3), a[0])
