"""Augmentations for the student, the teacher and evaluation (METHOD.md, "Cold start").

Mean Teacher (Tarvainen & Valpola 2017) perturbs the inputs of student and teacher independently.
The method this product follows uses random flip, RandomResizedCrop and random erasing, plus a
colour "random distort" (ColorJitter on brightness, contrast, saturation and hue) that removed
most false positives on made-up lips, eyes and faces.

Which view goes where: :func:`strong_transform` feeds the **student** and :func:`weak_transform`
feeds the **teacher** (``TwoViews(strong_transform(s), weak_transform(s))``). Departure from the
paper: there both networks get the same kind of noise; giving the teacher a lighter view makes its
targets steadier, as later consistency methods do. For plain supervised training use
:func:`strong_transform`; for prediction use :func:`eval_transform`.

All transforms accept a Pillow image or a uint8 tensor (C, H, W) (grayscale is repeated to RGB
when ``grayscale_to_rgb``) and return a float tensor (3, size, size) normalised with the ImageNet
mean and std.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "eval_transform",
    "normalization_stats",
    "strong_transform",
    "view_transform",
    "weak_transform",
]

IMAGENET_MEAN: tuple[float, ...] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, ...] = (0.229, 0.224, 0.225)
# A single-channel mean/std (the average of ImageNet's) for models kept grayscale.
_GRAY_MEAN: tuple[float, ...] = (0.449,)
_GRAY_STD: tuple[float, ...] = (0.226,)


def normalization_stats(
    grayscale_to_rgb: bool = True,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) the transforms normalise with: ImageNet RGB, or one gray channel."""
    return (IMAGENET_MEAN, IMAGENET_STD) if grayscale_to_rgb else (_GRAY_MEAN, _GRAY_STD)


def _to_image(grayscale_to_rgb: bool) -> list[v2.Transform]:
    steps: list[v2.Transform] = [v2.ToImage()]
    if grayscale_to_rgb:
        steps.append(v2.RGB())
    return steps


def _to_normalised_float(grayscale_to_rgb: bool) -> list[v2.Transform]:
    mean, std = normalization_stats(grayscale_to_rgb)
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]


def weak_transform(size: int, *, grayscale_to_rgb: bool = True) -> v2.Compose:
    """The **teacher's** view: resize, random horizontal flip, a small reflected shift.

    Returns a float tensor (3, size, size) ((1, size, size) when ``grayscale_to_rgb=False``).
    """
    return v2.Compose(
        [
            *_to_image(grayscale_to_rgb),
            v2.Resize((size, size), antialias=True),
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomCrop(size, padding=max(1, size // 8), padding_mode="reflect"),
            *_to_normalised_float(grayscale_to_rgb),
        ]
    )


def strong_transform(
    size: int,
    *,
    grayscale_to_rgb: bool = True,
    crop_scale: tuple[float, float] = (0.5, 1.0),
    color_distort: bool = True,
    distort_strength: float = 0.4,
    erasing_p: float = 0.5,
) -> v2.Compose:
    """The **student's** view (and plain supervised training): the METHOD.md augmentations.

    Random horizontal flip, RandomResizedCrop(scale=crop_scale), the colour "random distort"
    (ColorJitter brightness/contrast/saturation = ``distort_strength``, hue = a quarter of it,
    applied with probability 0.8; switch off with ``color_distort=False`` for the ablation) and
    RandomErasing with probability ``erasing_p`` on the normalised tensor.
    Returns a float tensor (3, size, size).
    """
    steps: list[v2.Transform] = [
        *_to_image(grayscale_to_rgb),
        v2.RandomResizedCrop((size, size), scale=crop_scale, antialias=True),
        v2.RandomHorizontalFlip(p=0.5),
    ]
    if color_distort:
        jitter = v2.ColorJitter(
            brightness=distort_strength,
            contrast=distort_strength,
            saturation=distort_strength,
            hue=min(0.5, distort_strength / 4),
        )
        steps.append(v2.RandomApply([jitter], p=0.8))
    steps.extend(_to_normalised_float(grayscale_to_rgb))
    if erasing_p > 0:
        # Erasing after normalisation fills with 0 = the mean colour, as in Zhong et al. 2020.
        steps.append(v2.RandomErasing(p=erasing_p, scale=(0.02, 0.2), value=0))
    return v2.Compose(steps)


def view_transform(size: int, *, grayscale_to_rgb: bool = True) -> v2.Compose:
    """An augmented view whose frozen-trunk output is cached (``mlcore.pipeline``).

    The METHOD.md augmentations that act before the trunk: RandomResizedCrop (scale 0.6-1, milder
    than the student's since the view is reused every epoch), horizontal flip and the colour
    "random distort". No random erasing: a fixed erased patch would be cached with the view.
    """
    jitter = v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05)
    return v2.Compose(
        [
            *_to_image(grayscale_to_rgb),
            v2.RandomResizedCrop((size, size), scale=(0.6, 1.0), antialias=True),
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomApply([jitter], p=0.8),
            *_to_normalised_float(grayscale_to_rgb),
        ]
    )


def eval_transform(size: int, *, grayscale_to_rgb: bool = True) -> v2.Compose:
    """Deterministic view for prediction and validation: resize and normalise only."""
    return v2.Compose(
        [
            *_to_image(grayscale_to_rgb),
            v2.Resize((size, size), antialias=True),
            *_to_normalised_float(grayscale_to_rgb),
        ]
    )
