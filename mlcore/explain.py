"""Grad-CAM heatmaps: which regions of an image drive a class score.

Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017) generalises CAM (Zhou et al., CVPR 2016): weight each channel of a
convolutional layer's activations by the spatial mean of the class score's gradient, sum over
channels, keep the positive part, and upsample to the input. METHOD.md uses it to confirm that
the CBAM-equipped network looks at the disgusting region (a bug, a skin lesion) rather than the
whole image. The computation is delegated to ``pytorch_grad_cam`` (jacobgil/pytorch-grad-cam),
the maintained implementation.

Departures: each map is min-max scaled to [0, 1] per image (the library's scaling), so maps show
*where* the model looks, not how strongly across images; a map that is zero everywhere (no
positive evidence for the class) stays all zeros. :func:`overlay` colours with matplotlib's
"turbo" map (a perceptually smoother "jet") and blends with Pillow instead of the library's
OpenCV helper.

A flat map (every pixel equal, e.g. no positive gradient anywhere, as from an untrained or
saturated network) says "no region stands out", not "everything is cold": colouring it would
tint the whole image one colour, which reads as a heat map that found nothing in particular.
:func:`has_focus` detects it and :func:`overlay` then returns the image in grey, untinted, so
the page can say "no focus" beside it.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

__all__ = ["FLAT_RANGE", "gradcam", "has_focus", "overlay"]

# A [0, 1] map whose values span less than this is flat. Maps out of gradcam() span either the
# full [0, 1] or (when the raw map is constant up to float noise, which the library divides by
# its max + 1e-7) a few hundredths at most.
FLAT_RANGE = 0.05


def gradcam(
    model: nn.Module,
    images: torch.Tensor,
    *,
    target_class: int,
    layer: nn.Module | None = None,
) -> np.ndarray:
    """Grad-CAM maps of ``target_class`` for a batch: float32 (N, H, W) in [0, 1].

    images: (N, C, H, W), preprocessed as the model expects, on any device (moved to the
    model's). layer: the convolutional layer to explain; defaults to ``model.gradcam_layer``
    (``mlcore.backbones.Classifier`` sets it to the last stage, after CBAM). The model runs in
    eval mode (BatchNorm on running statistics) and gets its previous mode back afterwards.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is empty")
    target_layer = layer if layer is not None else getattr(model, "gradcam_layer", None)
    if target_layer is None:
        raise ValueError("give layer=..., or a model with a gradcam_layer attribute")
    num_classes = getattr(getattr(model, "config", None), "num_classes", None)
    if target_class < 0 or (num_classes is not None and target_class >= num_classes):
        raise ValueError(f"target_class {target_class} is outside [0, {num_classes})")
    was_training = model.training
    # The input asks for gradients so the target layer's activations carry them even when the
    # layers up to it are frozen (a fine-tuned head on a frozen pretrained trunk, or a model
    # loaded with requires_grad off): Grad-CAM needs d(score)/d(activations), never parameter
    # gradients.
    images = images.detach().clone().requires_grad_(True)
    try:
        with GradCAM(model=model, target_layers=[target_layer]) as cam:
            maps = cam(
                input_tensor=images,
                targets=[ClassifierOutputTarget(target_class)] * images.shape[0],
            )
    finally:
        model.train(was_training)
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float32), nan=0.0)
    return np.clip(maps, 0.0, 1.0)


def has_focus(heatmap: np.ndarray, *, min_range: float = FLAT_RANGE) -> bool:
    """Whether a (H, W) map in [0, 1] singles out a region: its values span at least
    ``min_range``. False for a flat map (all equal, all zeros)."""
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.size == 0 or not np.isfinite(heat).all():
        return False
    return float(heat.max() - heat.min()) >= min_range


def overlay(
    image: Image.Image,
    heatmap: np.ndarray,
    *,
    alpha: float = 0.45,
    colormap: str = "turbo",
) -> Image.Image:
    """Blend a (H, W) heatmap, coloured with ``colormap``, over ``image``; returns RGB at the
    image's size (the heatmap is resized to it).

    The map is min-max normalised per image first (its own hottest region is the colour map's
    top, its coldest the bottom). alpha: weight of the colour, 0 = image only. A flat map
    (:func:`has_focus` False) is not coloured: the image comes back in grey, so a page can show
    "no focus" instead of a uniform tint.
    """
    from matplotlib import colormaps

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heatmap must have shape (H, W), got {heat.shape}")
    if not np.isfinite(heat).all():
        raise ValueError("heatmap contains NaN or infinity")
    if colormap not in colormaps:
        raise ValueError(f"unknown colormap {colormap!r}")
    base = image.convert("RGB")
    if not has_focus(heat):
        return base.convert("L").convert("RGB")
    low, high = float(heat.min()), float(heat.max())
    scaled = (heat - low) / (high - low)
    # Resize as float32 (Pillow's "F" mode) so the map is not quantised to 256 levels first.
    resized = np.asarray(
        Image.fromarray(scaled.astype(np.float32)).resize(base.size, Image.Resampling.BILINEAR),
        dtype=np.float32,
    )
    coloured = colormaps[colormap](np.clip(resized, 0.0, 1.0))[..., :3]
    heat_image = Image.fromarray((coloured * 255.0).round().astype(np.uint8))
    return Image.blend(base, heat_image, alpha)
