import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from mlcore.attention import CBAM
from mlcore.augment import eval_transform
from mlcore.backbones import (
    BACKBONES,
    IMAGENET_WEIGHTS,
    Classifier,
    build_backbone,
    efficientnet_lite0_weights_path,
    load_state_dict_file,
    register_backbone,
)
from mlcore.config import BackboneConfig
from mlcore.data import load_fashion_mnist


class PicklePayload:
    """An arbitrary object: torch.load(weights_only=True) must refuse to unpickle it."""


EXPECTED_KEYS = {
    "small_cnn",
    "mobilenet_v2",
    "resnet18",
    "resnet50",
    "densenet121",
    "densenet161",
    "efficientnet_lite0",
}


def test_registry_holds_every_contract_key():
    assert set(BACKBONES) >= EXPECTED_KEYS


@pytest.mark.parametrize("name", sorted(EXPECTED_KEYS))
def test_every_backbone_builds_and_runs_at_32_px(name):
    torch.manual_seed(0)
    model = build_backbone(BackboneConfig(name=name, num_classes=3, cbam=True, input_size=32))
    assert isinstance(model, Classifier)
    x = torch.randn(2, 3, 32, 32)
    logits, features = model.forward_with_features(x)
    assert logits.shape == (2, 3)
    assert torch.isfinite(logits).all()
    assert [f.shape[1] for f in features] == model.feature_channels
    assert len(features) >= 3 and all(f.ndim == 4 and f.shape[0] == 2 for f in features)
    if name not in ("efficientnet_lite0", "small_cnn"):
        # The torchvision networks' small-input stem keeps a 4x4 map at the last stage
        # (1x1 without it).
        assert features[-1].shape[-2:] == (4, 4)
    with torch.no_grad():
        assert model.forward_embedding(x).shape == (2, model.embedding_dim)
    assert model.embedding_dim == model.feature_channels[-1]
    assert any(module is model.gradcam_layer for module in model.modules())
    # Every tensor appears once in the state dict (no module registered twice).
    pointers = [tensor.data_ptr() for tensor in model.state_dict().values() if tensor.numel()]
    assert len(pointers) == len(set(pointers))


@pytest.mark.parametrize("name", sorted(EXPECTED_KEYS))
def test_cbam_is_switched_by_the_config(name):
    def count(cbam: bool) -> int:
        model = build_backbone(BackboneConfig(name=name, cbam=cbam, input_size=32))
        return sum(isinstance(module, CBAM) for module in model.modules())

    # "In every block": one CBAM per basic block; efficientnet_lite0 keeps its pretrained
    # blocks untouched and attends once, at the head.
    assert count(True) >= (1 if name == "efficientnet_lite0" else 3)
    assert count(False) == 0


def test_cbam_sits_in_every_residual_block_of_resnet50():
    model = build_backbone(BackboneConfig(name="resnet50", cbam=True))
    assert sum(isinstance(m, CBAM) for m in model.modules()) == 3 + 4 + 6 + 3


def test_grayscale_input_and_width_multiplier():
    model = build_backbone(BackboneConfig(name="small_cnn", in_channels=1, width_mult=0.25))
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 2)
    assert model.feature_channels == [8, 16, 32]
    half = build_backbone(BackboneConfig(name="mobilenet_v2", width_mult=0.5, cbam=False))
    assert half.feature_channels[0] < 24
    with pytest.raises(ValueError, match="width_mult"):
        build_backbone(BackboneConfig(name="resnet18", width_mult=0.5))


def test_unknown_name_and_duplicate_registration_are_refused():
    with pytest.raises(ValueError, match="unknown backbone 'vgg'.*small_cnn"):
        build_backbone(BackboneConfig(name="vgg"))
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("small_cnn")(lambda cfg: build_backbone(cfg))
    with pytest.raises(ValueError, match="no offline ImageNet weights"):
        build_backbone(BackboneConfig(name="resnet18", pretrained_path=IMAGENET_WEIGHTS))


def test_pretrained_path_loads_a_classifier_state_dict(tmp_path):
    torch.manual_seed(0)
    source = build_backbone(BackboneConfig(name="small_cnn", width_mult=0.25)).eval()
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    torch.manual_seed(1)
    config = BackboneConfig(name="small_cnn", width_mult=0.25, pretrained_path=str(path))
    loaded = build_backbone(config).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(source(x), loaded(x))


def test_pretrained_path_loads_torchvision_format_weights_weights_only(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(0)
    reference = resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    config = BackboneConfig(name="resnet18", num_classes=2, pretrained_path=str(path))
    model = build_backbone(config)
    # The adapted 3x3 stem and the 2-class head differ in shape and are skipped; the rest loads.
    block = model.stages[1][0]
    assert torch.equal(block.conv1.weight, reference.layer2[0].conv1.weight)
    assert model.fc.weight.shape == (2, 512)

    pickled = tmp_path / "object.pth"
    torch.save({"state_dict": PicklePayload()}, pickled)
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported"):
        load_state_dict_file(pickled)


def test_efficientnet_lite0_pretrained_embeds_a_flip_closer_than_another_image():
    config = BackboneConfig(
        name="efficientnet_lite0", cbam=False, input_size=224, pretrained_path=IMAGENET_WEIGHTS
    )
    model = build_backbone(config).eval()
    weights = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    assert torch.equal(model.stages[0][0].conv.weight, weights["_conv_stem.weight"])

    images, labels = load_fashion_mnist(split="test")
    # A sandal, a bag and a trouser: real product photos with a visible left/right asymmetry.
    picks = [int(np.flatnonzero(labels == c)[0]) for c in (5, 8, 1)]
    transform = eval_transform(224)
    batch = torch.stack([transform(torch.from_numpy(images[i])[None]) for i in picks])
    with torch.inference_mode():
        embeddings = model.forward_embedding(torch.cat([batch, batch.flip(dims=[3])]))
    assert embeddings.shape == (6, 1280)
    unit = F.normalize(embeddings, dim=1)
    similarity = unit @ unit.T
    for i in range(3):
        flipped = similarity[i, 3 + i]
        others = [similarity[i, j] for j in range(3) if j != i]
        assert flipped > max(others), (i, flipped, others)


def test_classifier_is_a_module_with_the_config_attached():
    config = BackboneConfig(name="small_cnn", num_classes=4, width_mult=0.25)
    model = build_backbone(config)
    assert model.config is config
    assert isinstance(model.gradcam_layer, nn.Module)
