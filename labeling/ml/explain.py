"""Grad-CAM for the review page: an Image row and a ModelVersion in, PNG bytes out.

The map is Grad-CAM (Selvaraju et al., ICCV 2017; `mlcore.explain.gradcam`) of the positive
class on the model version's stage 1 (the recall network, the one that decides what reaches
stage 2), at the version's input size, blended over the original image with
`mlcore.explain.overlay`. The image is shrunk to at most DISPLAY_SIZE pixels on its long side
first: the page shows it at that size, and a full-resolution product photo would make a large
PNG for nothing.

The networks come from `load_cascade_cached` (one version per process). Grad-CAM registers hooks
on the network for the duration of one call, so calls on the shared network are serialised with
a lock: two concurrent requests in a threaded server must not see each other's hooks.
"""

from __future__ import annotations

import io
import threading

from django.core.files.storage import default_storage

from labeling.ml.cascade import load_cascade_cached
from labeling.models import Image, ModelVersion
from mlcore.augment import eval_transform
from mlcore.data import decode_image
from mlcore.explain import gradcam, overlay

DISPLAY_SIZE = 384
_LOCK = threading.Lock()


def gradcam_overlay_png(
    *, model_version: ModelVersion, image: Image, device: str = "cpu", alpha: float = 0.45
) -> bytes:
    """PNG bytes: the positive class's Grad-CAM of stage 1 over the image. Raises
    CheckpointError (unreadable version), OSError / ValueError (unreadable image)."""
    cascade = load_cascade_cached(model_version, device=device)
    with default_storage.open(image.file.name, "rb") as handle:
        picture = decode_image(handle.read())
    picture.thumbnail((DISPLAY_SIZE, DISPLAY_SIZE))
    tensor = eval_transform(cascade.input_size)(picture).unsqueeze(0).to(cascade.device)
    with _LOCK:
        heatmap = gradcam(cascade.stage1, tensor, target_class=cascade.positive_index)[0]
    buffer = io.BytesIO()
    overlay(picture, heatmap, alpha=alpha).save(buffer, format="PNG")
    return buffer.getvalue()
