"""What several test files share."""
from __future__ import annotations

import socket
import time
from pathlib import Path

import cv2
import numpy as np

VIDEO_FPS = 25.0
VIDEO_FRAMES = 12
VIDEO_SIZE = (160, 120)  # width, height


class Payload:
    """Unpickling this calls open(marker, "w"): it creates the marker file, proof that a pickle
    ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until(condition, timeout: float = 30.0, what: str = "condition"):
    """Poll until ``condition()`` is truthy; its value. Only a deadline, never a speed check."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def video_frame(k: int) -> np.ndarray:
    """A BGR frame with a gradient, a colour cast and a square that moves with k."""
    w, h = VIDEO_SIZE
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 0] = np.linspace(20, 120, w, dtype=np.uint8)[None, :]
    img[:, :, 1] = 60
    img[:, :, 2] = np.linspace(40, 200, h, dtype=np.uint8)[:, None]
    x = 8 + 10 * k
    img[30:70, x:x + 30] = (240, 250, 255)
    return img


def write_video(path: Path, frames: list[np.ndarray]) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, VIDEO_SIZE, True)
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()


def read_all(cam) -> list:
    """Every frame of a finite camera, opened and closed here."""
    with cam:
        return list(iter(cam.read, None))


def tiny_model(folder: Path) -> Path:
    """A Facemap model with 4 channels at every stage, for tests of the pipeline's mechanics: it
    tracks nothing, but a frame costs little more than its pre-processing on any CPU, so a test
    can run the camera at a fixed rate without depending on how fast the real tracker is. The
    folder holding its two files (pass it as --model)."""
    import torch

    from facestream.engines.bodyparts import N_KEYPOINTS
    from facestream.engines.fmnet import FMnet
    from facestream.engines.model_files import N_STAGES, PARAMS_NAME, STATE_NAME

    channels = [4] * N_STAGES
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(FMnet(channels, output_ch=N_KEYPOINTS).state_dict(), folder / STATE_NAME)
    torch.save({"params": {"channels": channels}, "facestream": {"name": "tiny", "trained": False}}, folder / PARAMS_NAME)
    return folder
