"""Download Facemap's base tracker model (state + params) where Facemap and facestream look for it.

Facemap fetches the two files with ``urlretrieve`` the first time ``facemap.pose`` is imported:
no timeout, no retry, written straight to the final name, so a broken transfer leaves a half
file behind that every later load trips over. Here each attempt has a timeout, transient
failures are retried with exponential backoff, both files are downloaded into a temporary
folder inside the destination and checked with ``model_files.load_model`` there, and only then
moved into place with ``os.replace``: the destination never holds a partial or unloadable file.

The two addresses are Facemap's unless given, or unless ``FACESTREAM_FACEMAP_STATE_URL`` /
``FACESTREAM_FACEMAP_PARAMS_URL`` name others (a mirror for a rig behind a proxy, or a local
server in the tests): the environment is how ``--model facemap``, which fetches on first use,
is pointed elsewhere.
"""
from __future__ import annotations

import http.client
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .model_files import PARAMS_NAME, STATE_NAME, ModelFileError, TrackerModel, facemap_models_dir, load_model

STATE_URL = "https://osf.io/download/67f00be8959068ade6cf70f1/"
PARAMS_URL = "https://osf.io/download/67f00beaba4331d9888b7f36/"
STATE_URL_ENV = "FACESTREAM_FACEMAP_STATE_URL"
PARAMS_URL_ENV = "FACESTREAM_FACEMAP_PARAMS_URL"
CHUNK_BYTES = 1 << 16
_PERMANENT_HTTP = range(400, 500)  # client errors: retrying cannot help (except 408 and 429)
_RETRIED_HTTP = (408, 429)


class FetchError(OSError):
    """A download failed for good; the message is one line for the user."""


class _Transient(Exception):
    """One attempt failed in a way that a later attempt may not."""


def fetch_models(
    dest: str | Path | None = None,
    state_url: str | None = None,
    params_url: str | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    backoff: float = 1.0,
    progress: bool = True,
) -> TrackerModel:
    """Download the base model into ``dest`` (default ``~/.facemap/models``) and load it.

    state_url, params_url: the files' addresses; None: ``$FACESTREAM_FACEMAP_STATE_URL`` /
    ``$FACESTREAM_FACEMAP_PARAMS_URL`` if set, else Facemap's own.
    timeout: seconds an attempt may wait for the server (to connect, or for the next bytes).
    retries: further attempts per file after a transient failure (connection lost, timeout,
    HTTP 5xx/408/429), waiting ``backoff``, 2 x ``backoff``, ... seconds in between.
    Raises FetchError (download), ModelFileError (the files are not a Facemap model) or OSError.
    """
    if timeout <= 0 or retries < 0 or backoff < 0:
        raise FetchError(f"need timeout > 0, retries >= 0, backoff >= 0 (got {timeout}, {retries}, {backoff})")
    state_url = state_url or os.environ.get(STATE_URL_ENV) or STATE_URL
    params_url = params_url or os.environ.get(PARAMS_URL_ENV) or PARAMS_URL
    folder = Path(dest).expanduser() if dest is not None else facemap_models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".facestream-fetch-")).resolve()
    sources = {STATE_NAME: state_url, PARAMS_NAME: params_url}
    try:
        for name, url in sources.items():
            _download(url, staging / name, timeout, retries, backoff, progress)
        try:
            load_model(staging / STATE_NAME)
        except ModelFileError as exc:  # name the URL, not the staging file about to be removed
            message = str(exc)
            for name, url in sources.items():
                message = message.replace(str(staging / name), url)
            raise ModelFileError(f"downloaded, but not a Facemap model: {message}") from None
        for name in sources:
            os.replace(staging / name, folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return load_model(folder / STATE_NAME)


def _download(url: str, path: Path, timeout: float, retries: int, backoff: float, progress: bool) -> None:
    """Write ``url``'s body to ``path``, retrying transient failures; FetchError when it gives up.
    A failed attempt may leave a partial ``path``: the caller's staging folder holds it."""
    attempts = retries + 1
    for attempt in range(attempts):
        try:
            _download_once(url, path, timeout, progress)
            return
        except _Transient as exc:
            if attempt + 1 == attempts:
                raise FetchError(f"{url}: download failed after {attempts} attempt(s): {exc}") from None
            time.sleep(backoff * 2**attempt)


def _download_once(url: str, path: Path, timeout: float, progress: bool) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            received = 0
            with open(path, "wb") as out, tqdm(
                total=expected, unit="B", unit_scale=True, desc=path.name, disable=not progress, leave=False
            ) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        message = f"HTTP {exc.code} {exc.reason}"
        if exc.code in _PERMANENT_HTTP and exc.code not in _RETRIED_HTTP:
            raise FetchError(f"{url}: {message}") from None
        raise _Transient(message) from None
    except TimeoutError:
        raise _Transient(f"no answer within the {timeout:g} s timeout") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise _Transient(f"no answer within the {timeout:g} s timeout") from None
        raise _Transient(f"cannot reach the server ({exc.reason})") from None
    except (http.client.HTTPException, ConnectionError) as exc:
        raise _Transient(f"connection lost ({type(exc).__name__}: {exc})") from None
    if expected is not None and received != expected:
        raise _Transient(f"connection closed after {received} of {expected} bytes")
