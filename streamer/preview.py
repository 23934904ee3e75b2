"""The ``preview`` topic: a downscaled JPEG of the newest processed frame, for monitors.

At most ``fps`` a second, and only while some subscription names the topic (a subscriber to
everything does not count), so a pipeline nobody watches spends nothing on pictures. The
JPEG travels base64-encoded, a plain string, so the payload stays plain types in msgpack and
JSON alike and a browser can show it as a ``data:`` address without decoding.
"""
from __future__ import annotations

import base64
import time

import cv2
import numpy as np

from facestream.streamer import protocol
from facestream.streamer.publisher import Publisher

JPEG_QUALITY = 80


def encode_preview(pixels: np.ndarray, width: int) -> tuple[str, int, int]:
    """``pixels`` shrunk to ``width`` columns (never enlarged) as base64 JPEG; its (w, h)."""
    h, w = pixels.shape[:2]
    if width < w:
        size = (width, max(1, round(h * width / w)))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError(f"cannot encode a {pixels.shape} frame as JPEG")
    return base64.b64encode(jpeg.tobytes()).decode("ascii"), pixels.shape[1], pixels.shape[0]


class Previews:
    """Decides, frame by frame, whether a preview is due and wanted, and publishes it."""

    def __init__(self, publisher: Publisher, fps: float, width: int):
        self.publisher = publisher
        self.period_s = 1.0 / fps if fps > 0 else None
        self.width = width
        self._next = 0.0
        self.sent = 0

    def offer(self, pixels: np.ndarray, frame_id: int, t_capture_ns: int, camera: str, keypoints: list) -> None:
        if self.period_s is None:
            return
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.period_s
        if not self.publisher.subscribers(protocol.TOPIC_PREVIEW, named=True):
            return
        jpeg, w, h = encode_preview(pixels, self.width)
        self.publisher.publish_preview({
            "frame_id": frame_id,
            "t_capture_ns": t_capture_ns,
            "camera": camera,
            "width": w,
            "height": h,
            "frame_width": pixels.shape[1],
            "frame_height": pixels.shape[0],
            "keypoints": keypoints,
            "jpeg": jpeg,
        })
        self.sent += 1
