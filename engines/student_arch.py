"""A student network's shape (``student.py``), apart from the network itself, so that a checked
student model is described without importing torch."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StudentArch:
    """A student's shape: four widths, depthwise separable blocks or full 3x3, blocks at 128x128."""

    widths: tuple[int, int, int, int] = (16, 32, 64, 128)
    separable: bool = False
    full_res: int = 0

    def check(self) -> str | None:
        """Why no network has this shape, or None."""
        if len(self.widths) != 4 or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in self.widths):
            return f"widths must be 4 positive integers, got {list(self.widths)}"
        if self.full_res not in (0, 1):
            return f"full_res must be 0 or 1, got {self.full_res}"
        return None
