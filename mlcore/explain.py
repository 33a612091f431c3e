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
"jet" map and blends with Pillow instead of the library's OpenCV helper.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

__all__ = ["gradcam", "overlay"]


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


def overlay(image: Image.Image, heatmap: np.ndarray, *, alpha: float = 0.45) -> Image.Image:
    """Blend a (H, W) heatmap in [0, 1], coloured with "jet", over ``image`` (any size; the
    heatmap is resized to it). alpha: weight of the heatmap, 0 = image only. Returns RGB."""
    from matplotlib import colormaps

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heatmap must have shape (H, W), got {heat.shape}")
    if not np.isfinite(heat).all():
        raise ValueError("heatmap contains NaN or infinity")
    base = image.convert("RGB")
    resized = Image.fromarray(np.clip(heat, 0.0, 1.0) * 255.0).resize(
        base.size, Image.Resampling.BILINEAR
    )
    coloured = colormaps["jet"](np.asarray(resized, dtype=np.float32) / 255.0)[..., :3]
    heat_image = Image.fromarray((coloured * 255.0).round().astype(np.uint8), mode="RGB")
    return Image.blend(base, heat_image, alpha)
