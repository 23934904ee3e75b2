"""CURVE keys in ZeroMQ's certificate files (ZPL): making them, reading them, using them.

``NAME.key`` holds a public key, ``NAME.key_secret`` the public and the secret key (as pyzmq's
``zmq.auth.create_certificates`` writes them). The publisher is a CURVE server with its own
secret file and a folder of the public files of the clients it lets in; a client needs the
server's public file and its own secret file. In memory, keys are z85 bytes (40 characters).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class CurveError(ValueError):
    """A key file is missing, malformed or of the wrong kind; the message is one line."""


def _z85_key(key: bytes) -> bool:
    try:
        return len(key) == 40 and len(z85.decode(key)) == 32
    except (ValueError, KeyError):  # KeyError: a byte outside z85's alphabet
        return False


def _load(path: str | os.PathLike) -> tuple[bytes, bytes | None]:
    path = Path(path)
    if not path.is_file():
        raise CurveError(f"key file {path}: {'is a folder' if path.is_dir() else 'not found'}")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError as e:
        raise CurveError(f"cannot read key file {path}: {e.strerror or e}") from None
    except ValueError:
        raise CurveError(f"key file {path} is not a ZeroMQ certificate (no public-key)") from None
    if not _z85_key(public) or (secret is not None and not _z85_key(secret)):
        raise CurveError(f"key file {path} is malformed: a key is not 40 characters of z85")
    if secret is not None and zmq.curve_public(secret) != public:
        raise CurveError(f"key file {path} is malformed: its public key is not its secret key's")
    return public, secret


def public_key(path: str | os.PathLike) -> bytes:
    """The public key of a certificate file (public or secret)."""
    return _load(path)[0]


def keypair(path: str | os.PathLike) -> tuple[bytes, bytes]:
    """(public, secret) from a secret certificate file; a public file is refused by name."""
    public, secret = _load(path)
    if secret is None:
        raise CurveError(f"key file {path} holds no secret key (a public .key file; the secret one is .key_secret)")
    return public, secret


def client_keys(folder: str | os.PathLike) -> set[bytes]:
    """The public keys of the ``*.key`` files in ``folder``: the clients allowed to subscribe."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CurveError(f"clients folder {folder}: {'is a file' if folder.exists() else 'not found'}")
    keys = {public_key(path) for path in sorted(folder.glob("*.key"))}
    if not keys:
        raise CurveError(f"clients folder {folder} holds no public key file (*.key): no client could subscribe")
    return keys


def create(folder: str | os.PathLike, names: list[str]) -> list[tuple[Path, Path]]:
    """Write ``NAME.key`` and ``NAME.key_secret`` (mode 0600) into ``folder`` for each name;
    (public, secret) paths. No file is overwritten: if any exists, none is written.

    Each pair is written into a private temporary folder first, so a secret file is never
    readable by others, and then linked into place, which fails rather than replace a file.
    """
    folder = Path(folder)
    pairs = []
    for name in names:
        if not _NAME.match(name):
            raise CurveError(f"key name {name!r}: use letters, digits, '.', '_' or '-', not starting with '.' or '-'")
        pairs.append((folder / f"{name}.key", folder / f"{name}.key_secret"))
    for target in (path for pair in pairs for path in pair):
        if target.exists():
            raise CurveError(f"{target} exists; it is not overwritten (remove it or choose another folder)")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name, targets in zip(names, pairs):
        staging = tempfile.mkdtemp(dir=folder, prefix=".keys-")
        try:
            made = zmq.auth.create_certificates(staging, name)
            os.chmod(made[1], 0o600)
            for source, target in zip(made, targets):
                os.link(source, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return pairs


def client_options(server: str | os.PathLike | bytes | None, key: str | os.PathLike | bytes | None) -> dict[int, bytes]:
    """The socket options that make a CURVE client: ``server`` the server's public key, ``key``
    this client's secret key, each a certificate file's path or a z85 key (bytes). Neither: {}
    (a plain client). Set them before the socket connects."""
    if server is None and key is None:
        return {}
    if server is None or key is None:
        raise CurveError("a CURVE client needs both the server's public key file and its own secret key file")
    if isinstance(server, bytes):
        if not _z85_key(server):
            raise CurveError("the server's public key is not 40 characters of z85")
    else:
        server = public_key(server)
    if isinstance(key, bytes):
        if not _z85_key(key):
            raise CurveError("the client's secret key is not 40 characters of z85")
        public, secret = zmq.curve_public(key), key
    else:
        public, secret = keypair(key)
    return {zmq.CURVE_SERVERKEY: server, zmq.CURVE_PUBLICKEY: public, zmq.CURVE_SECRETKEY: secret}
