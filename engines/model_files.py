"""Facemap tracker model files: find them, load them safely, check them, name them.

A Facemap model is two files: a state file (``*.pt``, a plain state dict of FMnet) and
``facemap_model_params.pth`` (a dict whose ``["params"]["channels"]`` gives the encoder widths).
Facemap keeps them in ``~/.facemap/models/``; fine-tuned models are other ``*.pt`` files there that
share the base params file. Facemap loads them as full pickles, which can run code; here both are
loaded with ``torch.load(weights_only=True)``, whose unpickler rebuilds only tensors and plain
containers, with exactly numpy's array, scalar and dtype reconstructors added to its allowlist
(a params file may hold numpy values); any other global a file names is refused before it runs.

The name ``facemap`` (``--model facemap``) means Facemap's base model in ``~/.facemap/models/``,
downloaded there first (``fetch.fetch_models``) when its files are missing.

The bundled default (``models/`` beside this module) is in the same two-file format. Its params
file carries ``["facestream"] = {"name": ..., "trained": ..., "data": [...]}``; Facemap ignores
that key. A model whose ``data`` is synthetic faces only (``SYNTHETIC_DATA``) is ``synthetic_only``.

A student (``student.py``: a small network distilled from one of these, with the same outputs)
is one ``*.npz`` file; ``--model student`` names the bundled one (``models/student.npz``).
It loads into the same ``TrackerModel``, with ``student`` (its architecture) and ``teacher``
set, so every engine builds it as it builds Facemap's network.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .bodyparts import N_KEYPOINTS

if TYPE_CHECKING:
    import torch

    from .student_arch import StudentArch

STATE_NAME = "facemap_model_state.pt"
PARAMS_NAME = "facemap_model_params.pth"
BUNDLED_DIR = Path(__file__).resolve().parent / "models"
N_STAGES = 5  # encoder stages that make Facemap's 64x64 output maps from a 256x256 input
FACEMAP_NAME = "facemap"  # --model facemap: Facemap's base model in facemap_models_dir(), fetched on first use
STUDENT_NAME = "student"  # --model student: the bundled student, distilled from the bundled default
BUNDLED_STUDENT = BUNDLED_DIR / "student.npz"
STUDENT_SUFFIX = ".npz"  # a student is one file (student.py's format)
#: training data names that are this project's synthetic faces: the synthetic camera's profiles
#: and the 3D views of synthetic heads (``train-tracker --data``)
SYNTHETIC_DATA = ("synthetic", "views")
CHECKED_VERSION = 2  # part of a checked model's record name: bump when the checks change

_BOILERPLATE = ("Weights only load failed", "Check the documentation", "Please file an issue")


class ModelFileError(Exception):
    """A model file is missing, unreadable, unsafe or not a Facemap tracker; one line for the user."""


@dataclass(frozen=True)
class TrackerModel:
    """A checked Facemap tracker model. Its weights are read when first asked for (``state_dict``):
    an engine already in the cache needs none of them, nor torch."""

    name: str
    state_path: Path
    params_path: Path
    sha256: str  # full hex digest of the state file
    channels: tuple[int, ...]
    trained: bool
    read_weights: Callable[[], dict[str, "torch.Tensor"]] = field(repr=False, compare=False)
    synthetic_only: bool = False  # trained by facestream on synthetic faces only (the bundled default is)
    student: StudentArch | None = None  # a distilled student's architecture; None for Facemap's network
    teacher: dict | None = field(default=None, compare=False)  # a student's teacher: {"name", "sha256"}

    def identity(self) -> dict:
        """Plain-type identity for metadata: name, sha256 (12 hex), channels, trained, path; a
        student also has kind "student" and its teacher's name and full sha256."""
        identity = {
            "name": self.name,
            "sha256": self.sha256[:12],
            "channels": list(self.channels),
            "trained": self.trained,
            "path": str(self.state_path),
            "kind": "facemap" if self.student is None else "student",
        }
        if self.teacher is not None:
            identity["teacher"] = dict(self.teacher)
        return identity

    @cached_property
    def state_dict(self) -> dict[str, "torch.Tensor"]:
        """The weights as torch tensors (read once; torch is imported here)."""
        return self.read_weights()

    def build(self) -> "torch.nn.Module":
        """The network with these weights (FMnet, or a student's), in eval mode, on the CPU."""
        if self.student is not None:
            from .student import build_student

            return build_student(self.student, self.state_dict)
        from .fmnet import FMnet

        net = FMnet(self.channels, img_ch=1, output_ch=N_KEYPOINTS)
        net.load_state_dict(self.state_dict, strict=True)
        return net.eval()


def facemap_models_dir() -> Path:
    """Where Facemap keeps its downloaded and fine-tuned models."""
    return Path.home() / ".facemap" / "models"


def load_model(path: str | Path | None = None) -> TrackerModel:
    """Load a tracker model.

    ``path`` is a state file (the params file is taken from beside it, else from
    ``~/.facemap/models/``), a folder holding both files, None for the bundled default, or the
    name ``"facemap"``: Facemap's base model in ``~/.facemap/models/``, downloaded there first
    when its files are missing (a file or folder in the working directory called ``facemap`` is
    ``./facemap``).
    """
    if isinstance(path, str) and path == FACEMAP_NAME:
        path = _facemap_base()
    if isinstance(path, str) and path == STUDENT_NAME:
        path = BUNDLED_STUDENT
    if path is not None and is_student_file(Path(path)):
        return load_student(Path(path).expanduser())
    state_path, params_path = _resolve(path)

    def check() -> tuple[dict, dict]:
        params = _torch_load(params_path)
        channels = _channels(params, params_path)
        state = _torch_load(state_path)
        _check_state(state, channels, state_path)
        marker = params.get("facestream") if isinstance(params.get("facestream"), dict) else {}
        data = marker.get("data")
        return {
            "name": str(marker.get("name", state_path.stem)),
            "channels": list(channels),
            "trained": bool(marker.get("trained", True)),
            "synthetic_only": isinstance(data, (list, tuple)) and len(data) > 0 and all(d in SYNTHETIC_DATA for d in data),
        }, state

    sha256, checked, read_weights = _checked_once(state_path, params_path, check)
    return TrackerModel(
        name=checked["name"],
        state_path=state_path,
        params_path=params_path,
        sha256=sha256,
        channels=tuple(checked["channels"]),
        trained=checked["trained"],
        read_weights=read_weights,
        synthetic_only=checked["synthetic_only"],
    )


def is_student_file(path: Path) -> bool:
    """Whether ``path`` is named as a student file; its contents are checked on load."""
    return path.suffix == STUDENT_SUFFIX


# A model that passed the checks once is recorded in the engine cache under the sha256 of its
# files, with what the checks found; the next load of the same files reads that record instead of
# unpickling the files with torch, so a run whose engine is cached starts without importing
# torch (about a second of a warm start on a small CPU). A record that cannot be read or written
# is ignored: the files are then checked again.
def _checked_once(state_path: Path, params_path: Path, check: Callable[[], tuple[dict, dict]]
                  ) -> tuple[str, dict, Callable[[], dict]]:
    """(sha256 of the state file, what ``check()`` found, how to read the weights): from the
    record of an earlier check of the same files, else from ``check()`` (which reads the files,
    raising ModelFileError, and returns what it found and the weights) and recorded. The weights
    of a recorded model are read, and checked again, when first asked for."""
    for file in dict.fromkeys((state_path, params_path)):
        if not file.is_file():
            raise ModelFileError(f"{file}: file not found")
    sha256 = hashlib.sha256(state_path.read_bytes()).hexdigest()
    params_sha256 = sha256 if params_path == state_path else hashlib.sha256(params_path.read_bytes()).hexdigest()
    record = _checked_record(sha256, params_sha256)
    checked = _read_checked(record)
    if checked is not None:
        return sha256, checked, lambda: check()[1]
    checked, weights = check()
    _write_checked(record, checked)
    return sha256, checked, lambda: weights


def _checked_record(state_sha256: str, params_sha256: str) -> Path:
    from .onnx_engine import cache_dir

    return cache_dir() / "checked-models" / f"{state_sha256}-{params_sha256[:16]}-v{CHECKED_VERSION}.json"


def _read_checked(record: Path) -> dict | None:
    try:
        checked = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    fields = {"name": str, "channels": list, "trained": bool, "synthetic_only": bool}
    if not isinstance(checked, dict) or not all(isinstance(checked.get(k), t) for k, t in fields.items()):
        return None
    student = checked.get("student")
    if student is not None:  # a student's: its shape and its teacher
        from .student_arch import StudentArch

        try:
            if StudentArch(tuple(student["widths"]), student["separable"], student["full_res"]).check():
                return None
        except (TypeError, KeyError):
            return None
        if not isinstance(checked.get("teacher"), dict):
            return None
    return checked


def _write_checked(record: Path, checked: dict) -> None:
    from .onnx_engine import ExportError, write_atomic

    try:
        write_atomic(record, json.dumps(checked).encode())
    except ExportError:
        pass


def load_student(path: Path) -> TrackerModel:
    """A student file (``student.py``'s format) as a TrackerModel; ModelFileError if it is not one."""
    from .student_arch import StudentArch

    def check() -> tuple[dict, dict]:
        from .student import StudentFileError, read_student  # torch: only when the file is read

        try:
            header, state, _ = read_student(path)
        except StudentFileError as exc:
            raise ModelFileError(str(exc)) from None
        arch = header["architecture"]
        teacher = header.get("teacher") if isinstance(header.get("teacher"), dict) else {}
        training = header.get("training") if isinstance(header.get("training"), dict) else {}
        data = training.get("data")
        return {
            "name": str(header.get("name", path.stem)),
            "channels": list(arch["widths"]),
            "trained": True,
            "synthetic_only": isinstance(data, list) and len(data) > 0 and all(d in SYNTHETIC_DATA for d in data),
            "student": {"widths": list(arch["widths"]), "separable": arch["separable"], "full_res": arch["full_res"]},
            "teacher": {"name": str(teacher.get("name")), "sha256": str(teacher.get("sha256"))},
        }, state

    sha256, checked, read_weights = _checked_once(path, path, check)
    spec = checked["student"]
    return TrackerModel(
        name=checked["name"],
        state_path=path.resolve(),
        params_path=path.resolve(),
        sha256=sha256,
        channels=tuple(checked["channels"]),
        trained=True,
        read_weights=read_weights,
        synthetic_only=checked["synthetic_only"],
        student=StudentArch(tuple(spec["widths"]), spec["separable"], spec["full_res"]),
        teacher=checked["teacher"],
    )


def _facemap_base() -> Path:
    """The state file of Facemap's base model, downloading both files first if either is missing."""
    folder = facemap_models_dir()
    if (folder / STATE_NAME).is_file() and (folder / PARAMS_NAME).is_file():
        return folder / STATE_NAME
    from .fetch import fetch_models  # fetch imports this module

    print(f"facestream: Facemap's base model is not in {folder}: downloading it there (once)", file=sys.stderr)
    try:
        fetch_models(folder)
    except OSError as exc:  # FetchError and file-system errors; ModelFileError passes through
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFileError(
            f"--model {FACEMAP_NAME}: Facemap's base model is not in {folder} and the download failed: {message} "
            f"(retry, or put {STATE_NAME} and {PARAMS_NAME} there by hand)"
        ) from None
    return folder / STATE_NAME


def _resolve(path: str | Path | None) -> tuple[Path, Path]:
    """(state file, params file) for a user's model argument."""
    if path is None:
        folder = BUNDLED_DIR
        state_path = folder / STATE_NAME
    else:
        given = Path(path).expanduser()
        if not given.exists():
            raise ModelFileError(f"{given}: no such model file or folder")
        if given.is_dir():
            folder = given
            state_path = given / STATE_NAME
            if not state_path.is_file():
                candidates = sorted(given.glob("*.pt"))
                if len(candidates) != 1:
                    found = ", ".join(c.name for c in candidates) or "none"
                    raise ModelFileError(
                        f"{given}: not a Facemap model folder: expected {STATE_NAME} or exactly one *.pt "
                        f"state file (found: {found})"
                    )
                state_path = candidates[0]
        elif given.name == PARAMS_NAME:
            raise ModelFileError(
                f"{given}: this is Facemap's params file; give the state file (*.pt) or the folder holding both"
            )
        else:
            folder = given.parent
            state_path = given
    facemap_dir = facemap_models_dir()
    for params_path in (folder / PARAMS_NAME, facemap_dir / PARAMS_NAME):
        if params_path.is_file():
            return state_path.resolve(), params_path.resolve()
    raise ModelFileError(f"{state_path}: no {PARAMS_NAME} beside it or in {facemap_dir}")


def _torch_load(path: Path) -> dict:
    """torch.load restricted to tensors and plain containers; a dict or ModelFileError."""
    import torch

    if not path.is_file():
        raise ModelFileError(f"{path}: file not found")
    if not _is_torch_file(path):
        raise ModelFileError(f"{path}: not a plain torch tensor file (empty, truncated or another format)")
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(_numpy_globals()):
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable or unsafe files
        refused = _refused_global(exc)
        if refused is not None:
            raise ModelFileError(
                f"{path}: not a plain torch tensor file (refused global {refused}: only tensors, plain containers "
                "and numpy arrays, scalars and dtypes are loaded)"
            ) from None
        raise ModelFileError(f"{path}: not a plain torch tensor file ({_reason(exc)})") from None
    if not isinstance(obj, dict):
        raise ModelFileError(f"{path}: holds a {type(obj).__name__}, not a dict")
    return obj


def _numpy_globals() -> list:
    """What a pickle of numpy arrays, scalars and dtypes names, for torch's weights-only unpickler:
    ndarray, dtype (and its per-type classes, which numpy 2's dtypes are instances of), and the two
    reconstructors under numpy 2's module name and numpy 1's (files saved by either load)."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1
        from numpy.core import multiarray
    allowed: list = [np.ndarray, np.dtype]
    try:
        import numpy.dtypes as dtypes
    except ImportError:  # numpy < 1.25: no per-type dtype classes
        dtypes = None
    if dtypes is not None:
        allowed += [v for v in vars(dtypes).values() if isinstance(v, type) and issubclass(v, np.dtype)]
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        for name in ("_reconstruct", "scalar"):
            allowed.append((getattr(multiarray, name), f"{module}.{name}"))
    return allowed


_REFUSED = (re.compile(r"GLOBAL ([\w.]+)"), re.compile(r"but got <class '([^']+)'>"))


def _refused_global(exc: Exception) -> str | None:
    """The global or class torch's weights-only unpickler refused, if that is why it failed."""
    for pattern in _REFUSED:
        found = pattern.search(str(exc))
        if found:
            return found.group(1)
    return None


def _is_torch_file(path: Path) -> bool:
    """A torch.save zip archive (complete: its central directory is read) or a legacy pickle."""
    with open(path, "rb") as f:
        return f.read(1) == b"\x80" or zipfile.is_zipfile(f)


def _reason(exc: Exception) -> str:
    """The informative line of a torch.load error, without torch's multi-paragraph advice."""
    for line in str(exc).splitlines():
        line = line.split("WeightsUnpickler error:")[-1].strip()
        if line and not line.startswith(_BOILERPLATE):
            return line[:160]
    return type(exc).__name__


def _channels(params: dict, path: Path) -> tuple[int, ...]:
    inner = params.get("params")
    channels = inner.get("channels") if isinstance(inner, dict) else None
    if isinstance(channels, np.ndarray) and channels.ndim == 1 and channels.dtype.kind in "iu":
        channels = channels.tolist()
    if isinstance(channels, (list, tuple)):  # numpy integers (a params file saved with them) count as ints
        channels = [int(c) if isinstance(c, np.integer) else c for c in channels]
    if not isinstance(channels, (list, tuple)):
        raise ModelFileError(f"{path}: not a Facemap params file (no ['params']['channels'] list)")
    if len(channels) != N_STAGES or not all(
        isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels
    ):
        raise ModelFileError(
            f"{path}: ['params']['channels'] must be {N_STAGES} positive integers, got {channels!r}"
        )
    return tuple(channels)


def _check_state(state: dict, channels: tuple[int, ...], path: Path) -> None:
    """Raise unless ``state`` has exactly FMnet(channels)'s keys, shapes and float weights."""
    import torch

    from .fmnet import FMnet

    reference = FMnet(channels, output_ch=N_KEYPOINTS).state_dict()
    expected = {k: tuple(v.shape) for k, v in reference.items()}
    if not expected.keys() & state.keys():
        found = ", ".join(str(k) for k in list(state)[:3]) or "none"
        raise ModelFileError(f"{path}: not a Facemap tracker state file (no FMnet weight names; its keys: {found})")
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    for key, shape in expected.items():
        value = state.get(key)
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            problems.append(f"{key} is a {type(value).__name__}, not a tensor")
        elif tuple(value.shape) != shape:
            problems.append(f"{key} has shape {list(value.shape)}, expected {list(shape)}")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ModelFileError(
            f"{path}: not a Facemap tracker state for channels {list(channels)}: {problems[0]}{more}"
        )


def available_models() -> list[dict]:
    """The bundled default, the bundled student and every model in Facemap's folder (state files,
    student files and model folders).

    Each entry: name, state, params, trained, channels, sha256 (12 hex), default, kind ("facemap"
    or "student"; a student also has teacher_sha256, its teacher's full sha256); a file that does
    not load as a tracker model is listed with its path and an ``error`` instead.
    """
    entries = [_entry(None, default=True)]
    if BUNDLED_STUDENT.is_file():
        entries.append(_entry(BUNDLED_STUDENT, default=False))
    folder = facemap_models_dir()
    if folder.is_dir():
        candidates = sorted(folder.glob("*.pt")) + sorted(folder.glob("*.npz"))
        candidates += sorted(p for p in folder.iterdir() if (p / STATE_NAME).is_file())
        entries += [_entry(path, default=False) for path in candidates]
    return entries


def _entry(path: Path | None, default: bool) -> dict:
    try:
        model = load_model(path)
    except ModelFileError as exc:
        return {"state": str(path), "error": str(exc), "default": default}
    return {
        "name": model.name,
        "state": str(model.state_path),
        "params": str(model.params_path),
        "trained": model.trained,
        "channels": list(model.channels),
        "sha256": model.sha256[:12],
        "default": default,
        "kind": "facemap" if model.student is None else "student",
        **({"teacher_sha256": model.teacher["sha256"]} if model.teacher else {}),
    }
