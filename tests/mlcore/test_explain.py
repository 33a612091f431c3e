"""Invariants of mlcore.explain: Grad-CAM maps of a trained toy model have the input's shape,
lie in [0, 1], are not constant, and point at the evidence, also through frozen layers; overlay
keeps the image size, colours a normalised map with a real colour map, and leaves a flat map
("no focus") untinted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mlcore.backbones import build_backbone
from mlcore.config import BackboneConfig
from mlcore.explain import gradcam, has_focus, overlay

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


def test_gradcam_works_through_frozen_layers(trained_model):
    """A frozen trunk (no parameter needs a gradient) still gets a map: Grad-CAM needs only the
    gradient of the score with respect to the target layer's activations."""
    images, labels, _ = _patch_images(seed=4, n=4)
    expected = gradcam(trained_model, images, target_class=1)
    flags = [p.requires_grad for p in trained_model.parameters()]
    try:
        for parameter in trained_model.parameters():
            parameter.requires_grad_(False)
        frozen = gradcam(trained_model, images, target_class=1)
    finally:
        for parameter, flag in zip(trained_model.parameters(), flags, strict=True):
            parameter.requires_grad_(flag)
    assert np.allclose(frozen, expected, atol=1e-5)
    assert all(p.grad is None for p in trained_model.parameters())
    assert not images.requires_grad  # the caller's tensor is left alone


def test_a_network_with_no_evidence_gives_flat_maps_shown_as_no_focus():
    model = build_backbone(
        BackboneConfig(
            name="small_cnn", num_classes=2, cbam=False, input_size=SIZE, width_mult=0.25
        )
    )
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    torch.nn.init.zeros_(last.weight)  # every class score is the bias: no gradient anywhere
    maps = gradcam(model, _patch_images(seed=5, n=2)[0], target_class=1)
    assert np.all(maps == maps.reshape(2, -1)[:, :1, None])  # each map is one value
    assert not has_focus(maps[0]) and not has_focus(maps[1])
    picture = Image.new("RGB", (30, 20), (200, 40, 10))
    shown = np.asarray(overlay(picture, maps[0]))
    # Grey, not tinted: every channel equal, and the picture's own grey level.
    assert (shown[..., 0] == shown[..., 1]).all() and (shown[..., 1] == shown[..., 2]).all()
    assert np.array_equal(shown[..., 0], np.asarray(picture.convert("L")))


def test_has_focus_separates_flat_from_structured_maps():
    assert not has_focus(np.zeros((4, 4)))
    assert not has_focus(np.full((4, 4), 0.7))
    assert not has_focus(np.array([[0.5, 0.51], [0.5, 0.5]]))  # float noise, not a region
    assert has_focus(np.array([[0.0, 1.0], [0.2, 0.1]]))
    assert not has_focus(np.array([[np.nan, 1.0]]))


def test_overlay_keeps_image_size_and_colours_with_the_colour_map():
    from matplotlib import colormaps

    image = Image.new("RGB", (40, 30), (0, 0, 0))
    heat = np.zeros((SIZE, SIZE), dtype=np.float32)
    heat[:, SIZE // 2 :] = 1.0
    blended = overlay(image, heat, alpha=1.0, colormap="turbo")
    assert blended.size == (40, 30) and blended.mode == "RGB"
    pixels = np.asarray(blended).astype(int)
    # alpha 1 shows the colour map itself: its top on the hot half, its bottom on the cold half.
    top = np.round(np.asarray(colormaps["turbo"](1.0)[:3]) * 255)
    bottom = np.round(np.asarray(colormaps["turbo"](0.0)[:3]) * 255)
    assert np.abs(pixels[:, -5:] - top).max() <= 1
    assert np.abs(pixels[:, :5] - bottom).max() <= 1
    half = np.asarray(overlay(image, heat, alpha=0.5)).astype(int)
    assert half[:, -5:, 0].mean() > half[:, :5, 0].mean() + 30  # hot is redder than cold
    assert np.array_equal(np.asarray(overlay(image, heat, alpha=0.0)), np.asarray(image))
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, heat, alpha=1.5)
    with pytest.raises(ValueError, match="colormap"):
        overlay(image, heat, colormap="no-such-map")


def test_overlay_normalises_each_map_to_its_own_range():
    image = Image.new("RGB", (24, 24), (90, 90, 90))
    rng = np.random.default_rng(0)
    heat = rng.random((SIZE, SIZE)).astype(np.float32)
    faint = 0.2 + 0.1 * heat  # the same shape, in a tenth of the range, shifted
    assert np.array_equal(np.asarray(overlay(image, heat)), np.asarray(overlay(image, faint)))
