"""Invariants of mlcore.explain: Grad-CAM maps of a trained toy model have the input's shape,
lie in [0, 1], are not constant, and point at the evidence; overlay keeps the image size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mlcore.backbones import build_backbone
from mlcore.config import BackboneConfig
from mlcore.explain import gradcam, overlay

SIZE = 24
PATCH = 6


def _patch_images(seed: int, n: int):
    """Noise images; class 1 carries a bright square at a random place, class 0 does not."""
    generator = torch.Generator().manual_seed(seed)
    images = 0.3 * torch.randn(n, 3, SIZE, SIZE, generator=generator)
    labels = torch.arange(n) % 2
    corners = torch.randint(0, SIZE - PATCH, (n, 2), generator=generator)
    for i in range(n):
        if labels[i] == 1:
            row, col = corners[i].tolist()
            images[i, :, row : row + PATCH, col : col + PATCH] += 2.5
    return images, labels, corners


@pytest.fixture(scope="module")
def trained_model():
    torch.manual_seed(0)
    # CBAM off: the plain network learns the patch in a few full-batch steps on a busy CPU.
    model = build_backbone(
        BackboneConfig(
            name="small_cnn", num_classes=2, cbam=False, input_size=SIZE, width_mult=0.25
        )
    )
    images, labels, _ = _patch_images(seed=0, n=64)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(12):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        held_out, held_out_labels, _ = _patch_images(seed=9, n=32)
        accuracy = (model(held_out).argmax(1) == held_out_labels).float().mean().item()
    assert accuracy > 0.95, "the toy model did not learn the patch; the Grad-CAM checks need it"
    return model


def test_gradcam_maps_have_input_shape_lie_in_unit_range_and_are_not_constant(trained_model):
    images, labels, _ = _patch_images(seed=1, n=8)
    maps = gradcam(trained_model, images, target_class=1)
    assert maps.shape == (8, SIZE, SIZE)
    assert maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    positives = maps[labels.numpy() == 1]
    assert all(heat.std() > 0.05 for heat in positives)
    assert not trained_model.training  # the fixture's eval mode is kept


def test_gradcam_points_at_the_patch(trained_model):
    images, labels, corners = _patch_images(seed=2, n=16)
    maps = gradcam(trained_model, images, target_class=1, layer=trained_model.gradcam_layer)
    inside_higher = 0
    for heat, label, (row, col) in zip(maps, labels, corners.tolist(), strict=True):
        if label != 1:
            continue
        mask = np.zeros((SIZE, SIZE), dtype=bool)
        mask[row : row + PATCH, col : col + PATCH] = True
        inside_higher += heat[mask].mean() > heat[~mask].mean()
    assert inside_higher >= 7  # of 8 positives


def test_gradcam_restores_training_mode_and_rejects_bad_input(trained_model):
    trained_model.train()
    try:
        gradcam(trained_model, _patch_images(seed=3, n=2)[0], target_class=0)
        assert trained_model.training
    finally:
        trained_model.eval()
    with pytest.raises(ValueError, match="N, C, H, W"):
        gradcam(trained_model, torch.zeros(3, SIZE, SIZE), target_class=1)
    with pytest.raises(ValueError, match="target_class"):
        gradcam(trained_model, torch.zeros(1, 3, SIZE, SIZE), target_class=2)


def test_overlay_keeps_image_size_and_blends():
    image = Image.new("RGB", (40, 30), (0, 0, 0))
    heat = np.zeros((SIZE, SIZE), dtype=np.float32)
    heat[:, SIZE // 2 :] = 1.0
    blended = overlay(image, heat, alpha=0.5)
    assert blended.size == (40, 30) and blended.mode == "RGB"
    pixels = np.asarray(blended).astype(int)
    # jet is dark blue at 0 and dark red at 1: the hot half is redder than the cold half.
    assert pixels[:, -5:, 0].mean() > pixels[:, :5, 0].mean() + 40
    assert np.array_equal(np.asarray(overlay(image, heat, alpha=0.0)), np.asarray(image))
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, heat, alpha=1.5)
