"""ZeroMQ endpoints checked in full before a socket sees them.

ZeroMQ itself takes a port number modulo 65536 (``tcp://127.0.0.1:99999`` listens on 34463)
and reads port 0 as "any free port", which no subscriber could then find; so an endpoint is
refused here, with the reason, unless it is ``tcp://HOST:PORT`` with a port of 1..65535 and a
host that is ``*``, an IPv4 address, an IPv6 address in brackets or an interface or host name,
or ``ipc://PATH`` with a path that fits a Unix socket address.
"""
from __future__ import annotations

import ipaddress
import re

_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_IPC_PATH_MAX = 107  # bytes of a Unix socket path (sun_path, less its terminating NUL)
FORMS = "tcp://HOST:PORT (port 1..65535) or ipc://PATH"


def endpoint_problem(endpoint: str) -> str | None:
    """Why ``endpoint`` is not one facestream binds or connects to; None when it is good."""
    transport, sep, rest = endpoint.partition("://")
    if not sep or transport not in ("tcp", "ipc"):
        return f"the transport must be tcp:// or ipc://, not {transport + sep if sep else 'missing'}"
    if transport == "ipc":
        if not rest or any(c.isspace() for c in rest):
            return "ipc:// needs a path without spaces"
        if len(rest.encode()) > _IPC_PATH_MAX:
            return f"the ipc path is {len(rest.encode())} bytes long; a Unix socket path holds at most {_IPC_PATH_MAX}"
        return None
    host, colon, port = rest.rpartition(":")
    if not colon or not host:
        return "tcp:// needs HOST:PORT"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"port {port or '(none)'} is not a port number (1..65535)"
    return _host_problem(host)


def _host_problem(host: str) -> str | None:
    if host == "*":
        return None
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"{host} is not an IPv6 address"
        return None
    if re.fullmatch(r"[\d.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{host} is not an IPv4 address"
        return None
    if len(host) > 253 or not _NAME.match(host):
        return f"{host!r} is not an address, an interface or a host name"
    return None


class EndpointError(ValueError):
    """An endpoint that is not tcp://HOST:PORT or ipc://PATH in full; the message is one line."""


def check_endpoint(endpoint: str) -> str:
    """``endpoint`` itself when it is good; EndpointError with a one-line reason when not."""
    problem = endpoint_problem(endpoint)
    if problem is not None:
        raise EndpointError(f"{endpoint}: not a valid endpoint: {problem} (expected {FORMS})")
    return endpoint


def is_open_to_the_network(endpoint: str) -> bool:
    """A tcp endpoint whose host is not loopback: other machines may reach it."""
    transport, _, rest = endpoint.partition("://")
    if transport != "tcp":
        return False
    host = rest.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*" or an interface or host name
        return True
