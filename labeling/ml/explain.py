"""Grad-CAM for the review page: Image rows and a ModelVersion in, PNG bytes out.

The map is Grad-CAM (Selvaraju et al., ICCV 2017; `mlcore.explain.gradcam`, through
pytorch-grad-cam) of the positive class on the model version's stage 1 (the recall network, the
one that decides what reaches stage 2), at the version's input size and with the scoring
pipeline's preprocessing (`eval_transform`), blended over the original image with
`mlcore.explain.overlay` (turbo colour map, normalised per image; a flat map comes back grey and
is reported as `focused=False`, "no focus"). The image is shrunk to at most DISPLAY_SIZE pixels
on its long side first: the page shows it at that size, and a full-resolution product photo
would make a large PNG for nothing.

Two callers: the `detect_noise` job renders every flagged image in batches after ranking
(`gradcam_overlays`), and the review page renders one on request when no stored one exists
(`gradcam_overlay`). Both go through `_render`, so a stored heat map and an on-request one are
the same picture.

The networks come from `load_cascade_cached` (one version per process). Grad-CAM registers hooks
on the network for the duration of one call, so calls on the shared network are serialised with
a lock: two concurrent requests in a threaded server must not see each other's hooks.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from django.core.files.storage import Storage, default_storage
from PIL import Image as PILImage

from labeling.ml.cascade import LoadedCascade, load_cascade_cached
from labeling.models import Image, ModelVersion
from mlcore.augment import eval_transform
from mlcore.data import ImageDecodeError, decode_image
from mlcore.explain import gradcam, has_focus, overlay

DISPLAY_SIZE = 384
ALPHA = 0.45
_LOCK = threading.Lock()


@dataclass(frozen=True)
class GradcamPicture:
    """One rendered overlay: PNG bytes, and whether the map singled out a region (False: the
    map was flat and the PNG is the image in grey, "no focus")."""

    png: bytes
    focused: bool


@dataclass
class GradcamBatchOutcome:
    pictures: dict[int, GradcamPicture] = field(default_factory=dict)  # image id -> picture
    errors: list[tuple[int, str]] = field(default_factory=list)  # (image id, error text)


def _decode(image: Image, storage: Storage) -> PILImage.Image:
    with storage.open(image.file.name, "rb") as handle:
        picture = decode_image(handle.read())
    picture.thumbnail((DISPLAY_SIZE, DISPLAY_SIZE))
    return picture


def _render(
    cascade: LoadedCascade, pictures: Sequence[PILImage.Image], *, alpha: float
) -> list[GradcamPicture]:
    transform = eval_transform(cascade.input_size)
    batch = torch.stack([transform(picture) for picture in pictures]).to(cascade.device)
    with _LOCK:
        heatmaps = gradcam(cascade.stage1, batch, target_class=cascade.positive_index)
    rendered = []
    for picture, heatmap in zip(pictures, heatmaps, strict=True):
        buffer = io.BytesIO()
        overlay(picture, heatmap, alpha=alpha, colormap=COLORMAP).save(buffer, format="PNG")
        rendered.append(GradcamPicture(png=buffer.getvalue(), focused=has_focus(heatmap)))
    return rendered


COLORMAP = "turbo"  # mlcore.explain.overlay's default, named here for the legend


def legend_colours(steps: int = 11) -> list[str]:
    """The overlay's colour map as `steps` CSS hex colours from no evidence (0) to the map's
    hottest region (1): the page draws its legend from these, so it matches the picture."""
    from matplotlib import colormaps

    cmap = colormaps[COLORMAP]
    colours = []
    for i in range(steps):
        r, g, b, _a = cmap(i / (steps - 1))
        colours.append(f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}")
    return colours


def gradcam_overlay(
    *, model_version: ModelVersion, image: Image, device: str = "cpu", alpha: float = ALPHA
) -> GradcamPicture:
    """The positive class's Grad-CAM of stage 1 over one image. Raises CheckpointError
    (unreadable version), OSError / ValueError (unreadable image)."""
    cascade = load_cascade_cached(model_version, device=device)
    return _render(cascade, [_decode(image, default_storage)], alpha=alpha)[0]


def gradcam_overlay_png(
    *, model_version: ModelVersion, image: Image, device: str = "cpu", alpha: float = ALPHA
) -> bytes:
    """PNG bytes of :func:`gradcam_overlay`."""
    return gradcam_overlay(model_version=model_version, image=image, device=device, alpha=alpha).png


def gradcam_overlays(
    *,
    model_version: ModelVersion,
    images: Sequence[Image],
    device: str = "cpu",
    batch_size: int = 16,
    alpha: float = ALPHA,
    storage: Storage | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> GradcamBatchOutcome:
    """Overlays of many images, `batch_size` at a time. An image whose file does not decode is
    listed in `errors` and skipped; the others are rendered. Raises CheckpointError when the
    version cannot be loaded. `on_batch(done, total)` runs after each batch (progress; raising
    from it stops the run)."""
    cascade = load_cascade_cached(model_version, device=device)
    storage = storage or default_storage
    outcome = GradcamBatchOutcome()
    done = 0
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        decoded: list[tuple[int, PILImage.Image]] = []
        for image in chunk:
            try:
                decoded.append((image.pk, _decode(image, storage)))
            except (ImageDecodeError, OSError, ValueError) as error:
                outcome.errors.append((image.pk, f"{type(error).__name__}: {error}"))
        if decoded:
            rendered = _render(cascade, [picture for _pk, picture in decoded], alpha=alpha)
            for (pk, _picture), result in zip(decoded, rendered, strict=True):
                outcome.pictures[pk] = result
        done += len(chunk)
        if on_batch is not None:
            on_batch(done, len(images))
    return outcome
