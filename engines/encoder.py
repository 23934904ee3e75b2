"""Keypoints -> predicted neural activity, one frame at a time.

Facemap's KeypointsNetwork filters each keypoint trace with a symmetric 201-frame wavelet bank,
so its prediction for frame t uses 100 frames that have not been filmed yet, and it z-scores and
outlier-filters the keypoints with statistics of the whole session. A live encoder has neither
the future nor the session. This module keeps Facemap's layers and parameter names but makes the
temporal filter causal (with an optional, stated look-ahead of L frames), and replaces the
session statistics with normalisation constants and outlier thresholds fixed in the model file.

``encoder_network.KeypointsEncoder`` (torch) is the trainable form and runs on whole sequences.
``StreamingEncoder`` (numpy) runs one frame per call with a fixed-size state and gives the same
numbers as ``KeypointsEncoder.forward`` on the sequence cleaned by ``clean_and_normalise``.

The same file and the same streaming step also hold the causal ridge model
(``lagged_ridge.LaggedRidge``: lagged positions and speeds, a linear readout), the baseline a
network has to beat, and ``RidgePlusNetwork``, the ridge model plus a causal network fitted to
its residuals; ``train-encoder`` keeps whichever predicts held-out data best.

Model files are ``.npz`` archives (read with ``allow_pickle=False``) holding the model's arrays
(a network's under their torch names) plus ``meta``, a 0-d unicode array with a JSON object
whose ``model`` says which model it is (``network`` where absent). An encoder whose
outputs are principal components may also hold the projection from its training population
(``projection.mean``, ``projection.scale``, ``projection.components``: ``NeuralProjection``),
so that its outputs can be turned back into neurons and new recordings into its components.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .bodyparts import BODYPARTS, N_KEYPOINTS
from .lagged_ridge import LaggedFeatureWindow, LaggedRidge, check_bin_edges

if TYPE_CHECKING:  # torch is imported only where a network is built, not on the live path
    from .encoder_network import KeypointsEncoder, RidgePlusNetwork

DEFAULT_MODEL = Path(__file__).parent / "models" / "encoder_default.npz"
N_IN = 2 * N_KEYPOINTS
FORMAT = "facestream-encoder"
FORMAT_VERSION = 1
KINDS = ("pcs", "neurons")
MODELS = ("network", "ridge", "ridge+network")
PROJECTION_ARRAYS = ("projection.mean", "projection.scale", "projection.components")


class EncoderFileError(ValueError):
    """A model file that is missing or does not hold a valid encoder."""


@dataclass(frozen=True, eq=False)
class InputSpec:
    """How raw keypoints become the encoder's 30 inputs (x, y per bodypart, in BODYPARTS order).

    mean, std: (30,) z-scoring constants in pixels, fixed before the session.
    likelihood_threshold: a keypoint below it is not accepted. Facemap's likelihood is
        sigmoid(peak of the ReLU'd heatmap), so it lies in [0.5, 1): 0.5 means no response at
        all, and a detection that matches the training target (a Gaussian of sigma 3 summing to
        10, peak 0.177) gives about 0.544. A threshold meant for [0, 1], such as 0.3, never
        rejects anything, and one at 0.55 or above rejects good detections; 0.52 (a heatmap peak
        of 0.08, under half the trained peak) separates the two.
    jump_threshold_px: a keypoint whose x or y moved more than this (Facemap uses 25 px) from
        both its last accepted position and its previous confident observation is not accepted.
        Needing both lets a keypoint that really moved be accepted on its second frame at the
        new place, instead of being held for ever.
    """

    mean: np.ndarray
    std: np.ndarray
    likelihood_threshold: float
    jump_threshold_px: float

    def __post_init__(self) -> None:
        for field in ("mean", "std"):
            value = np.asarray(getattr(self, field), dtype=np.float64)
            if value.shape != (N_IN,) or not np.isfinite(value).all():
                raise ValueError(f"{field} must be {N_IN} finite numbers, got shape {value.shape}")
            object.__setattr__(self, field, value)
        if not (self.std > 0).all():
            raise ValueError("std must be positive")


class InputCleaner:
    """Per-frame, causal cleaning and z-scoring of raw (15, 3) [x, y, likelihood] keypoints.

    A keypoint that is NaN, below the likelihood threshold or a jump (see InputSpec) is replaced
    by its last accepted position, or by the normalisation mean before any was accepted.
    """

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self.reset()

    def reset(self) -> None:
        self._held = self.spec.mean.reshape(N_KEYPOINTS, 2).copy()
        self._accepted = np.zeros(N_KEYPOINTS, dtype=bool)
        self._seen = np.full((N_KEYPOINTS, 2), np.nan)

    def __call__(self, keypoints: np.ndarray) -> np.ndarray:
        """(15, 3) raw keypoints -> (30,) float32 normalised inputs."""
        keypoints = np.asarray(keypoints)
        if keypoints.shape != (N_KEYPOINTS, 3):
            raise ValueError(f"keypoints must have shape ({N_KEYPOINTS}, 3), got {keypoints.shape}")
        finite = np.isfinite(keypoints[:, :2]).all(axis=1)
        confident = finite & (keypoints[:, 2] >= self.spec.likelihood_threshold)
        # non-finite positions (never accepted) are replaced so that no arithmetic sees them
        xy = np.where(finite[:, None], keypoints[:, :2], self._held)
        limit = self.spec.jump_threshold_px
        near_held = np.abs(xy - self._held).max(axis=1) <= limit
        near_seen = np.abs(xy - self._seen).max(axis=1) <= limit  # False while nothing was seen (NaN)
        accept = confident & (~self._accepted | near_held | near_seen)
        np.copyto(self._held, xy, where=accept[:, None])
        self._accepted |= accept
        np.copyto(self._seen, xy, where=confident[:, None])
        return ((self._held.reshape(N_IN) - self.spec.mean) / self.spec.std).astype(np.float32)


def clean_and_normalise(sequence: np.ndarray, spec: InputSpec) -> np.ndarray:
    """(T, 15, 3) raw keypoints -> (T, 30) float32 inputs, exactly as StreamingEncoder sees them."""
    cleaner = InputCleaner(spec)
    return np.stack([cleaner(frame) for frame in np.asarray(sequence)]).reshape(-1, N_IN)


@dataclass(frozen=True, eq=False)
class NeuralProjection:
    """The principal components an encoder predicts, in terms of the recorded neurons.

    pcs = ((activity - mean) / scale) @ components and activity ~ pcs @ components.T * scale
    + mean, with mean and scale (n_neurons,) each neuron's mean and standard deviation on the
    training part, and components (n_neurons, n_pcs) with orthonormal columns.
    """

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray

    def __post_init__(self) -> None:
        for field in ("mean", "scale", "components"):
            object.__setattr__(self, field, np.asarray(getattr(self, field), dtype=np.float32))
        n = len(self.mean)
        if self.mean.shape != (n,) or self.scale.shape != (n,) or self.components.ndim != 2 or len(self.components) != n:
            raise ValueError("projection: mean and scale must be (n_neurons,) and components (n_neurons, n_pcs)")
        if not all(np.isfinite(a).all() for a in (self.mean, self.scale, self.components)) or not (self.scale > 0).all():
            raise ValueError("projection: arrays must be finite and scale positive")

    @property
    def n_neurons(self) -> int:
        return len(self.mean)

    def to_pcs(self, activity: np.ndarray) -> np.ndarray:
        """(..., n_neurons) activity -> (..., n_pcs) components."""
        return ((np.asarray(activity, np.float32) - self.mean) / self.scale) @ self.components

    def to_neurons(self, pcs: np.ndarray) -> np.ndarray:
        """(..., n_pcs) components -> (..., n_neurons) activity."""
        return np.asarray(pcs, np.float32) @ self.components.T * self.scale + self.mean


def _layer_shapes(meta: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    if meta["model"] != "network":
        n_features = (len(meta["bin_edges"]) - 1) * 2 * meta["n_in"]
        shapes.update({"ridge.weight": (meta["n_out"], n_features), "ridge.bias": (meta["n_out"],)})
    if meta["model"] != "ridge":
        shapes.update(_network_shapes(meta))
    return shapes


def _network_shapes(meta: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    n_in, n_filt, n_med, n_latents = meta["n_in"], meta["n_filt"], meta["n_med"], meta["n_latents"]
    return {
        "core.features.linear0.0.weight": (n_in, n_in),
        "core.features.linear0.0.bias": (n_in,),
        "core.features.wavelet0.weight": (n_filt, 1, meta["kernel_frames"]),
        "core.features.linear1.0.weight": (n_med, n_filt * n_in),
        "core.features.linear1.0.bias": (n_med,),
        "core.features.latent.0.weight": (n_latents, n_med),
        "core.features.latent.0.bias": (n_latents,),
        "readout.features.linear0.weight": (meta["n_out"], n_latents),
        "readout.features.linear0.bias": (meta["n_out"],),
    }


class _NetworkStep:
    """The network on one frame of inputs: a (K, n_in) window of the first layer's outputs,
    kept twice over in a (2K, n_in) ring so that the newest K rows are one contiguous slice."""

    def __init__(self, a: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.kernel_frames: int = meta["kernel_frames"]
        self._w0, self._b0 = a["core.features.linear0.0.weight"], a["core.features.linear0.0.bias"]
        self._wavelets = a["core.features.wavelet0.weight"][:, 0, :]
        self._w1, self._b1 = a["core.features.linear1.0.weight"], a["core.features.linear1.0.bias"]
        self._w2, self._b2 = a["core.features.latent.0.weight"], a["core.features.latent.0.bias"]
        self._wr, self._br = a["readout.features.linear0.weight"], a["readout.features.linear0.bias"]
        self._ring = np.zeros((2 * self.kernel_frames, meta["n_in"]), dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        self._ring[:] = 0
        self._newest = self.kernel_frames - 1

    def __call__(self, x: np.ndarray) -> np.ndarray:
        k = self._newest = (self._newest + 1) % self.kernel_frames
        self._ring[k] = self._ring[k + self.kernel_frames] = self._w0 @ x + self._b0
        filtered = self._wavelets @ self._ring[k + 1:k + 1 + self.kernel_frames]  # (n_filt, n_in), oldest first
        h = np.maximum(filtered.T.reshape(-1), 0)
        h = np.maximum(self._w1 @ h + self._b1, 0)
        h = np.maximum(self._w2 @ h + self._b2, 0)
        return self._wr @ h + self._br


class _RidgeStep:
    """The ridge model on one frame of inputs: its lag window and one matrix product."""

    def __init__(self, a: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self._features = LaggedFeatureWindow(meta["n_in"], tuple(meta["bin_edges"]))
        self._w, self._b = a["ridge.weight"], a["ridge.bias"]

    def reset(self) -> None:
        self._features.reset()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._w @ self._features(x) + self._b


class _SumStep:
    """The ridge model's step plus the network's (a network fitted to the ridge model's residuals)."""

    def __init__(self, a: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self._parts = (_RidgeStep(a, meta), _NetworkStep(a, meta))

    def reset(self) -> None:
        for part in self._parts:
            part.reset()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._parts[0](x) + self._parts[1](x)


_STEPS = {"network": _NetworkStep, "ridge": _RidgeStep, "ridge+network": _SumStep}


class StreamingEncoder:
    """One frame of keypoints in, one prediction out; numpy only, fixed-size state.

    The state is the cleaner's held keypoints and the model's window of recent inputs (the
    network's first-layer outputs, or the ridge model's positions and speeds). With lookahead
    L (networks only), the output of a step refers to the frame L steps before the newest
    input; the first L outputs after reset() precede the first frame.
    """

    def __init__(
        self, arrays: dict[str, np.ndarray], meta: dict[str, Any], path: Path, sha256: str,
        projection: NeuralProjection | None = None,
    ) -> None:
        self.meta, self.path, self.sha256, self.projection = meta, path, sha256, projection
        self.arrays = {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in arrays.items()}
        self.inputs = InputSpec(
            np.array(meta["mean"]), np.array(meta["std"]), meta["likelihood_threshold"], meta["jump_threshold_px"]
        )
        self.model: str = meta["model"]
        self.kernel_frames: int = meta["kernel_frames"]
        self.lookahead_frames: int = meta["lookahead_frames"]
        self.n_out: int = meta["n_out"]
        self._cleaner = InputCleaner(self.inputs)
        self._step = _STEPS[self.model](self.arrays, meta)

    def reset(self) -> None:
        self._cleaner.reset()
        self._step.reset()

    def step(self, keypoints: np.ndarray) -> np.ndarray:
        """(15, 3) [x, y, likelihood] -> (n_out,) float32 prediction for frame t - lookahead."""
        return self._step(self._cleaner(keypoints))

    def offline_model(self) -> KeypointsEncoder | LaggedRidge | RidgePlusNetwork:
        """The whole-sequence form of this encoder, with the same float32 weights."""
        if self.model == "network":
            return self.to_module()
        ridge = LaggedRidge(self.arrays["ridge.weight"], self.arrays["ridge.bias"], self.meta["bin_edges"],
                            self.meta["n_in"])
        if self.model == "ridge":
            return ridge
        from .encoder_network import RidgePlusNetwork

        return RidgePlusNetwork(ridge, self._network())

    def to_module(self) -> KeypointsEncoder:
        """The torch form of this encoder (a network), with the same float32 weights."""
        if self.model != "network":
            raise ValueError(f"encoder {self.path} is a {self.model} model, not a network")
        return self._network()

    def _network(self) -> KeypointsEncoder:
        import torch

        from .encoder_network import KeypointsEncoder

        m = self.meta
        module = KeypointsEncoder(
            m["n_in"], m["n_out"], m["kernel_frames"], m["lookahead_frames"], m["n_filt"], m["n_med"], m["n_latents"]
        )
        module.load_state_dict({name: torch.from_numpy(self.arrays[name].copy()) for name in _network_shapes(m)})
        return module

    @property
    def n_neurons(self) -> int | None:
        """Neurons of the population the outputs describe (None: not recorded in the file)."""
        if self.meta["kind"] == "neurons":
            return self.n_out
        return self.meta.get("n_neurons")

    def output_meta(self, frame_rate_hz: float | None = None) -> dict[str, Any]:
        """What each frame's ``neural`` holds: the stream's ``meta.neural``.

        frame_rate_hz: the camera's rate, for the look-ahead's latency (default: the rate the
        encoder was trained at).
        """
        m = self.meta
        rate = frame_rate_hz or m["frame_rate_hz"]
        lookahead = m["lookahead_frames"]
        if not m["trained"]:
            values = "untrained weights: the values carry no meaning"
        elif m["kind"] == "pcs":
            values = (f"predicted principal components of the activity of {self.n_neurons} neurons (each z-scored), "
                      "largest variance first")
        else:
            values = "predicted activity of each neuron, in the units of the training data"
        return {
            "kind": m["kind"],
            "length": self.n_out,
            "n_neurons": self.n_neurons,
            "lookahead_frames": lookahead,
            "lookahead_ms": None if not rate else 1000.0 * lookahead / rate,
            "trained": m["trained"],
            "test_variance_explained": m.get("training", {}).get("test_variance_explained"),
            "values": values,
        }

    def describe(self) -> dict[str, Any]:
        m = self.meta
        return {
            "name": m["name"],
            "model": self.model,
            "path": str(self.path),
            "sha256": self.sha256,
            "kind": m["kind"],
            "n_out": m["n_out"],
            "n_neurons": self.n_neurons,
            "kernel_frames": m["kernel_frames"],
            "lookahead_frames": m["lookahead_frames"],
            "output_frame": f"each step's output refers to frame t - {m['lookahead_frames']} (t = newest input)",
            "trained": m["trained"],
            "frame_rate_hz": m["frame_rate_hz"],
            "projection": self.projection is not None,
            "test_variance_explained": m.get("training", {}).get("test_variance_explained"),
            "inputs": {
                "bodyparts": list(m["bodyparts"]),
                "features": "x, y of each bodypart (pixels), z-scored with the file's fixed mean and std",
                "likelihood_threshold": m["likelihood_threshold"],
                "jump_threshold_px": m["jump_threshold_px"],
                "rejected_keypoints": "NaN, low-likelihood or jumping keypoints hold their last accepted position",
            },
        }


def save_encoder(
    module: KeypointsEncoder | LaggedRidge,
    path: str | Path,
    *,
    name: str,
    kind: str,
    inputs: InputSpec,
    trained: bool,
    frame_rate_hz: float | None = None,
    projection: NeuralProjection | None = None,
    n_neurons: int | None = None,
    training: dict[str, Any] | None = None,
) -> None:
    """Write a model's weights and metadata to an .npz model file (no pickle).

    module: a network or a ridge model. projection: for kind "pcs", how the outputs relate to the training population's neurons.
    n_neurons: the population's size when there is no projection. training: a JSON-able
    summary of how the weights were fitted (its ``test_variance_explained`` is shown in the
    stream's ``meta``).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if module.n_in != N_IN:
        raise ValueError(f"module must take {N_IN} inputs, has {module.n_in}")
    if projection is not None and (kind != "pcs" or projection.components.shape[1] != module.n_out):
        raise ValueError(f"a projection needs kind 'pcs' and {module.n_out} components")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "kind": kind,
        **module.file_meta(),
        "mean": inputs.mean.tolist(),
        "std": inputs.std.tolist(),
        "likelihood_threshold": float(inputs.likelihood_threshold),
        "jump_threshold_px": float(inputs.jump_threshold_px),
        "trained": bool(trained),
        "bodyparts": list(BODYPARTS),
        "frame_rate_hz": None if frame_rate_hz is None else float(frame_rate_hz),
    }
    if projection is not None or n_neurons is not None:
        meta["n_neurons"] = projection.n_neurons if projection is not None else int(n_neurons)
    if training is not None:
        meta["training"] = training
    arrays = module.file_arrays()
    if projection is not None:
        arrays.update(zip(PROJECTION_ARRAYS, (projection.mean, projection.scale, projection.components)))
    with open(path, "wb") as f:
        np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays)


_META_TYPES: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "kind": str,
    "n_in": int,
    "n_out": int,
    "kernel_frames": int,
    "lookahead_frames": int,
    "mean": list,
    "std": list,
    "likelihood_threshold": (int, float),
    "jump_threshold_px": (int, float),
    "trained": bool,
    "bodyparts": list,
    "frame_rate_hz": (int, float, type(None)),
}
_MODEL_META_TYPES: dict[str, dict[str, type]] = {
    "network": {"n_filt": int, "n_med": int, "n_latents": int},
    "ridge": {"bin_edges": list},
    "ridge+network": {"n_filt": int, "n_med": int, "n_latents": int, "bin_edges": list},
}


def _check_meta(meta: Any) -> str | None:
    """What is wrong with a parsed meta object, or None."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return f"meta is not a {FORMAT} header"
    if meta.get("format_version") != FORMAT_VERSION:
        return f"unsupported format_version {meta.get('format_version')!r} (expected {FORMAT_VERSION})"
    meta.setdefault("model", "network")  # files written before the ridge model existed
    if meta["model"] not in MODELS:
        return f"meta model {meta['model']!r} is not one of {MODELS}"
    for key, kind in {**_META_TYPES, **_MODEL_META_TYPES[meta["model"]]}.items():
        if key not in meta:
            return f"meta lacks {key!r}"
        if not isinstance(meta[key], kind) or (kind is int and isinstance(meta[key], bool)):
            return f"meta {key!r} has the wrong type ({type(meta[key]).__name__})"
    if meta["kind"] not in KINDS:
        return f"meta kind {meta['kind']!r} is not one of {KINDS}"
    if meta["n_in"] != N_IN or meta["bodyparts"] != list(BODYPARTS):
        return f"inputs are not x, y of Facemap's {N_KEYPOINTS} bodyparts in tracker order"
    if meta["n_out"] < 1:
        return "meta n_out must be positive"
    if meta["model"] != "network":
        try:
            edges = check_bin_edges(meta["bin_edges"])
        except (ValueError, TypeError) as exc:
            return f"bad bin_edges: {exc}"
        if meta["model"] == "ridge" and (meta["kernel_frames"], meta["lookahead_frames"]) != (edges[-1], 0):
            return "a ridge model's kernel_frames must be its last bin edge and its lookahead 0"
        if meta["model"] == "ridge+network" and (meta["kernel_frames"] < edges[-1] or meta["lookahead_frames"]):
            return "a ridge+network model's ridge window must fit in its network's filter, with no look-ahead"
    if meta["model"] != "ridge" and min(meta["n_filt"], meta["n_med"], meta["n_latents"]) < 1:
        return "meta layer sizes must be positive"
    if not 0 <= meta["lookahead_frames"] < meta["kernel_frames"]:
        return f"lookahead_frames {meta['lookahead_frames']} not in [0, kernel_frames={meta['kernel_frames']})"
    try:
        InputSpec(np.array(meta["mean"], dtype=float), np.array(meta["std"], dtype=float), 0.0, 0.0)
    except (ValueError, TypeError) as exc:
        return f"bad normalisation: {exc}"
    if not all(math.isfinite(meta[k]) for k in ("likelihood_threshold", "jump_threshold_px")):
        return "thresholds must be finite"
    if "training" in meta and not isinstance(meta["training"], dict):
        return "meta 'training' must be an object"
    n_neurons = meta.get("n_neurons", 1)
    if not isinstance(n_neurons, int) or isinstance(n_neurons, bool) or n_neurons < 1:
        return "meta 'n_neurons' must be a positive integer"
    return None


def load_encoder(path: str | Path | None = None) -> StreamingEncoder:
    """Load an encoder file (None: the bundled default). Raises EncoderFileError."""
    path = Path(DEFAULT_MODEL if path is None else path)

    def fail(problem: str) -> EncoderFileError:
        return EncoderFileError(f"encoder file {path}: {problem}".replace("\n", " "))

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise fail(f"cannot be read ({exc.strerror or exc})") from None
    if not raw.startswith(b"PK\x03\x04"):
        raise fail("is not an .npz archive")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        if "allow_pickle" in str(exc):
            raise fail("holds an object array (pickled data), which is refused") from None
        raise fail(f"is not a readable .npz archive ({exc})") from None

    meta_array = arrays.pop("meta", None)
    if meta_array is None or meta_array.shape != () or meta_array.dtype.kind != "U":
        raise fail("has no 'meta' JSON string (0-d unicode array)")
    try:
        meta = json.loads(str(meta_array))
    except json.JSONDecodeError as exc:
        raise fail(f"'meta' is not valid JSON ({exc})") from None
    problem = _check_meta(meta)
    if problem:
        raise fail(problem)

    projection = _projection(arrays, meta, fail)
    expected = _layer_shapes(meta)
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing:
        raise fail(f"missing arrays {missing}")
    if extra:
        raise fail(f"unexpected arrays {extra}")
    for name, shape in expected.items():
        a = arrays[name]
        if a.shape != shape:
            raise fail(f"array {name!r} has shape {a.shape}, expected {shape}")
        if a.dtype.kind != "f" or not np.isfinite(a).all():
            raise fail(f"array {name!r} is not finite floating point ({a.dtype})")
    return StreamingEncoder(arrays, meta, path, hashlib.sha256(raw).hexdigest(), projection)


def _projection(arrays: dict[str, np.ndarray], meta: dict[str, Any], fail) -> NeuralProjection | None:
    """Take the projection arrays out of ``arrays``: all three or none, consistent with meta."""
    present = [name for name in PROJECTION_ARRAYS if name in arrays]
    if not present:
        return None
    if len(present) != len(PROJECTION_ARRAYS):
        raise fail(f"has only some of the projection arrays {list(PROJECTION_ARRAYS)}")
    mean, scale, components = (arrays.pop(name) for name in PROJECTION_ARRAYS)
    if meta["kind"] != "pcs" or components.ndim != 2 or components.shape[1] != meta["n_out"]:
        raise fail(f"projection.components must be (n_neurons, {meta['n_out']}) for kind 'pcs'")
    if meta.get("n_neurons") != len(components):
        raise fail(f"meta n_neurons {meta.get('n_neurons')} does not match projection.components ({len(components)} rows)")
    if any(a.dtype.kind != "f" for a in (mean, scale, components)):
        raise fail("projection arrays must be floating point")
    try:
        return NeuralProjection(mean, scale, components)
    except ValueError as exc:
        raise fail(str(exc)) from None
