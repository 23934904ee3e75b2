"""The one interface every camera implements, and the frame it delivers."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np


class CameraError(RuntimeError):
    """A camera could not be opened or stopped delivering; the message is one line for the user."""


class CameraStalled(CameraError):
    """``read()`` has no frame now, but the stream goes on (a camera unplugged and being reopened,
    a trigger that has not come): call ``read()`` again. The message says why, in one line."""


@dataclass
class Frame:
    """One camera frame as it reached the host.

    pixels: uint8 array (height, width), grayscale.
    frame_id: the camera's own frame counter (starts at 0 for cameras that have none).
    t_capture_ns: ``time.monotonic_ns()`` when the frame reached the host.
    t_camera_ns: the camera's own timestamp in nanoseconds, or -1 when it has none.
    dropped_before: frames the camera or its driver lost since the previous delivered frame.
    truth: true keypoints (15, 3) as [x, y, visible] for cameras that know them (synthetic), else None.
    """

    pixels: np.ndarray
    frame_id: int
    t_capture_ns: int
    t_camera_ns: int = -1
    dropped_before: int = 0
    truth: np.ndarray | None = field(default=None, repr=False)


class Camera(abc.ABC):
    """A source of frames. Use as a context manager or call open()/close().

    ``read()`` blocks until the next frame is available and returns it, or returns None when
    the source has ended (a video file's last frame, a synthetic camera's frame limit).
    """

    #: a short name for messages and topics ("synthetic", "video", ...)
    name: str = "camera"

    @abc.abstractmethod
    def open(self) -> None:
        """Acquire the device; afterwards ``shape`` and ``fps`` are known."""

    @abc.abstractmethod
    def read(self) -> Frame | None:
        """The next frame, or None at the end of the stream."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device. Safe to call twice."""

    @property
    @abc.abstractmethod
    def shape(self) -> tuple[int, int]:
        """(height, width) of every frame."""

    @property
    @abc.abstractmethod
    def fps(self) -> float:
        """Nominal frame rate; 0 when unknown or unpaced."""

    def describe(self) -> dict:
        """Plain-type description for the stream's ``meta`` message."""
        h, w = self.shape
        return {"name": self.name, "height": h, "width": w, "fps": float(self.fps)}

    def __enter__(self) -> "Camera":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
