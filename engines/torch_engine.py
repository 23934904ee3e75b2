"""The PyTorch engines: FMnet with Facemap's pre-processing and decoding on one device.

"torch" runs it on the CPU in float32 (the reference the other engines are checked against).
"cuda" runs it on an NVIDIA GPU the way a high-frame-rate rig needs: frames go from a pinned
host buffer to the GPU in one asynchronous copy; pre-processing, the network in half precision
and decoding run on the GPU, recorded once per frame shape as a CUDA graph and replayed for every
frame (one launch instead of ~60 kernel launches from Python); only the (B, 15, 3) keypoints come
back. Half precision changes the network's arithmetic, not the pre-processing or decoding.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from . import torch_ops
from .model_files import TrackerModel
from .preprocess import Geometry

_WARMUP_RUNS = 3


class TorchTracker:
    """Frames (B, H, W) uint8 -> keypoints (B, 15, 3) on ``device``; ``run`` returns them with timings."""

    def __init__(self, model: TrackerModel, device: str, half: bool, graphs: bool, threads: int = 0) -> None:
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        if (half or graphs) and not cuda:
            raise ValueError("half precision and CUDA graphs need a CUDA device")
        if threads > 0 and not cuda:
            torch.set_num_threads(threads)
        self.half, self.graphs, self._cuda = half, graphs, cuda
        precision = "fp16" if half else "fp32"
        where = torch.cuda.get_device_name(self.device) if cuda else "CPU"
        self.runtime = f"torch {torch.__version__} {where} {precision}" + (" CUDA graphs" if graphs else "")
        net = model.build().to(self.device)
        self._net = net.half() if half else net
        self._graphs: dict[tuple, tuple] = {}

    def _forward(self, frames: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        images = torch_ops.preprocess(frames, geometry)
        heatmap, row_offset, col_offset = self._net(images.half() if self.half else images)
        return torch_ops.decode(heatmap, row_offset, col_offset, geometry)

    def run(self, frames: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, dict[str, float]]:
        with torch.inference_mode():
            if not self._cuda:
                t0 = time.perf_counter()
                keypoints = self._forward(torch.from_numpy(frames), geometry).numpy()
                return keypoints, {"preprocess": 0.0, "network": (time.perf_counter() - t0) * 1e3, "decode": 0.0}
            return self._run_cuda(frames, geometry)

    def _run_cuda(self, frames: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, dict[str, float]]:
        """Pinned upload, one graph replay (or eager call), pinned download; timings in ms:
        preprocess = host copy + upload enqueue, network = everything on the GPU, decode = download."""
        key = (frames.shape, geometry)
        if key not in self._graphs:
            self._graphs[key] = self._prepare(frames.shape, geometry)
        host_in, device_in, graph, device_out, host_out = self._graphs[key]
        t0 = time.perf_counter()
        np.copyto(host_in.numpy(), frames)
        device_in.copy_(host_in, non_blocking=True)
        t1 = time.perf_counter()
        if graph is not None:
            graph.replay()
        else:
            device_out.copy_(self._forward(device_in, geometry))
        torch.cuda.current_stream(self.device).synchronize()
        t2 = time.perf_counter()
        host_out.copy_(device_out)
        t3 = time.perf_counter()
        timings = {"preprocess": (t1 - t0) * 1e3, "network": (t2 - t1) * 1e3, "decode": (t3 - t2) * 1e3}
        return host_out.numpy().copy(), timings

    def _prepare(self, shape: tuple[int, ...], geometry: Geometry) -> tuple:
        host_in = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
        device_in = torch.zeros(shape, dtype=torch.uint8, device=self.device)
        host_out = torch.empty((shape[0], 15, 3), dtype=torch.float32, pin_memory=True)
        if not self.graphs:
            return host_in, device_in, None, torch.empty(host_out.shape, device=self.device), host_out
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up outside the graph: allocations, cuDNN choices
            for _ in range(_WARMUP_RUNS):
                self._forward(device_in, geometry)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            device_out = self._forward(device_in, geometry)
        return host_in, device_in, graph, device_out, host_out
