"""Decoding a large JPEG for its thumbnail (labeling/services/imports.py decode_image): Pillow's
draft mode decodes it at a reduced DCT scale, which must neither weaken validation (a truncated
file is still refused) nor change what is stored (the full width and height, turned by the EXIF
orientation), and must keep the decoded raster small (bench/memory.py's import peak)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image as PILImage

from labeling.services.imports import RejectedFile, decode_image

ROOT = Path(__file__).resolve().parents[2]


def large_jpeg(width: int, height: int, exif_orientation: int | None = None) -> bytes:
    """A gradient with a little texture: a JPEG of a few hundred KB whose decoder reads many
    MCUs (draft mode applies from 1024 px on each side with 256 px thumbnails)."""
    img = PILImage.linear_gradient("L").resize((width, height)).convert("RGB")
    img.paste((200, 40, 40), (width // 3, height // 3, width // 2, height // 2))
    buf = io.BytesIO()
    kwargs = {}
    if exif_orientation:
        exif = PILImage.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    img.save(buf, format="JPEG", quality=90, **kwargs)
    return buf.getvalue()


def test_large_jpeg_keeps_its_full_size_and_orientation(settings):
    settings.IMAGECLEAN_THUMBNAIL_SIZE = 256
    assert decode_image(large_jpeg(4096, 3072))[:3] == ("JPEG", 4096, 3072)
    fmt, width, height, thumbnail = decode_image(large_jpeg(4096, 3072, exif_orientation=6))
    assert (fmt, width, height) == ("JPEG", 3072, 4096)  # displayed turned by 90 degrees
    with PILImage.open(io.BytesIO(thumbnail)) as thumb:
        assert thumb.size == (192, 256)  # the turned image's proportions, at thumbnail size
        assert thumb.mode == "RGB"


@pytest.mark.parametrize("keep", [0.5, 0.99, -2])
def test_truncated_large_jpeg_is_still_refused(settings, keep):
    settings.IMAGECLEAN_THUMBNAIL_SIZE = 256
    data = large_jpeg(4096, 3072)
    cut = data[:keep] if isinstance(keep, int) else data[: int(len(data) * keep)]
    with pytest.raises(RejectedFile, match="truncated"):
        decode_image(cut)


MEASURE = """
import resource, sys
import django
django.setup()
from labeling.services.imports import decode_image

def hwm_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

data = open(sys.argv[1], "rb").read()
before = hwm_kib()
result = decode_image(data)
print("GROWTH_KIB", hwm_kib() - before, result[:3])
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_large_jpeg_decode_does_not_hold_the_full_raster(tmp_path):
    """A 4600 x 4600 JPEG is 63.5 MB decoded; decoding it for its thumbnail raises the process's
    resident high-water mark by well under half of that (a full decode plus the copies it made
    took about 190 MB)."""
    path = tmp_path / "large.jpg"
    path.write_bytes(large_jpeg(4600, 4600))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        IMAGECLEAN_VAR_DIR=str(tmp_path / "var"),
        PYTHONPATH=str(ROOT),
    )
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(row for row in result.stdout.splitlines() if row.startswith("GROWTH_KIB"))
    growth_mb = int(line.split()[1]) * 1024 / 1e6
    assert "('JPEG', 4600, 4600)" in line, line
    assert growth_mb < 30, line
