"""Constant-memory running statistics for hours-long runs.

Latencies go into a log-spaced histogram (1 % wide bins from 1 us to 100 s), so percentiles
over any length of run cost the same memory and are exact to 1 %.
"""
from __future__ import annotations

import numpy as np

_LO_MS, _HI_MS, _STEP = 1e-3, 1e5, 1.01
_EDGES = _LO_MS * _STEP ** np.arange(int(np.ceil(np.log(_HI_MS / _LO_MS) / np.log(_STEP))) + 1)


class LatencyHistogram:
    def __init__(self) -> None:
        self.counts = np.zeros(len(_EDGES) + 1, dtype=np.int64)
        self.count = 0
        self.max_ms = 0.0
        self.sum_ms = 0.0

    def add(self, ms: float) -> None:
        ms = float(ms)
        self.counts[np.searchsorted(_EDGES, ms)] += 1
        self.count += 1
        self.sum_ms += ms
        self.max_ms = max(self.max_ms, ms)

    def percentile(self, q: float) -> float | None:
        """The q-th percentile in ms (upper edge of its bin, capped at the maximum seen)."""
        if self.count == 0:
            return None
        rank = int(np.ceil(q / 100 * self.count))
        i = int(np.searchsorted(np.cumsum(self.counts), max(rank, 1)))
        upper = _EDGES[min(i, len(_EDGES) - 1)]
        return float(min(upper, self.max_ms))

    @property
    def mean_ms(self) -> float | None:
        return self.sum_ms / self.count if self.count else None

    def summary(self) -> dict:
        """Plain-type p50/p99/max/mean in ms, None when empty."""
        return {
            "p50": self.percentile(50),
            "p99": self.percentile(99),
            "max": self.max_ms if self.count else None,
            "mean": self.mean_ms,
            "n": self.count,
        }


class StageTimes:
    """Time per pipeline stage, in ms: mean and percentiles, in constant memory per stage."""

    def __init__(self) -> None:
        self.stages: dict[str, LatencyHistogram] = {}

    def add(self, times_ms: dict[str, float]) -> None:
        for k, v in times_ms.items():
            self.stages.setdefault(k, LatencyHistogram()).add(max(v, 0.0))

    def means(self) -> dict[str, float]:
        return {k: round(h.mean_ms, 3) for k, h in self.stages.items()}

    def p99s(self) -> dict[str, float]:
        return {k: round(h.percentile(99), 3) for k, h in self.stages.items()}
