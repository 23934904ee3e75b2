"""The monitor page under connection load: hundreds of half-open connections on real loopback
sockets, against a real `facestream monitor` process. Only deadlines, never speed checks."""
import http.client
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil

from facestream.streamer.monitor import MAX_CONNECTIONS, MAX_WAITING, REQUEST_TIMEOUT_S

from helpers import free_port, until

CLI = [sys.executable, "-m", "facestream.streamer.cli"]
HALF_OPEN = 600  # more than MAX_WAITING, so the oldest are pushed out as well
HALF_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow"  # no blank line: never complete


def _get(port: int, path: str = "/") -> int | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", path)
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return None


def _monitor(endpoint: str, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([*CLI, "monitor", endpoint, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    until(lambda: _get(port) == 200 or proc.poll() is not None, timeout=60, what="the monitor page")
    assert proc.poll() is None, proc.communicate()[1]
    return proc


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return err


def _held(pid: int, port: int) -> int:
    """Connections the monitor holds on its page's port."""
    return sum(1 for c in psutil.Process(pid).net_connections(kind="tcp")
               if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def _closed_by_peer(sock: socket.socket) -> bool:
    """The monitor closed ``sock``: it reads as ended (or reset); False while it is still open."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(4096) == b""
    except OSError:
        return True


def _stderr_lines(err: str) -> list[str]:
    """What the monitor printed beyond announcing its page."""
    return [line for line in err.splitlines() if line.strip() and " on http://" not in line]


def test_half_open_connections_by_the_hundred_cost_no_threads_and_time_out(endpoint):
    port = free_port()
    proc = _monitor(endpoint, port)
    monitor = psutil.Process(proc.pid)
    socks: list[socket.socket] = []
    try:
        until(lambda: _held(proc.pid, port) == 0, what="the start-up request to finish")
        threads_before = monitor.num_threads()
        most_threads = threads_before
        opened = threading.Event()
        refused = []

        def load() -> None:  # half a request on each, then nothing
            for k in range(HALF_OPEN):
                s = socket.socket()
                s.settimeout(30)
                try:
                    s.connect(("127.0.0.1", port))
                    s.sendall(HALF_REQUEST)
                except OSError:
                    refused.append(k)
                    s.close()
                    continue
                socks.append(s)
                if k == HALF_OPEN // 2:
                    opened.set()
            opened.set()

        loader = threading.Thread(target=load)
        loader.start()
        assert opened.wait(120)
        # the page is served while the load goes on (the loader is still connecting)
        status = until(lambda: _get(port), timeout=60, what="the page during the load")
        assert status == 200
        held_during = _held(proc.pid, port)
        while loader.is_alive():
            most_threads = max(most_threads, monitor.num_threads())
            time.sleep(0.02)
        loader.join()
        most_threads = max(most_threads, monitor.num_threads())
        assert not refused, f"{len(refused)} connections could not even connect"
        assert held_during > 50, held_during  # there was load when the page was served
        assert _held(proc.pid, port) <= MAX_WAITING  # never more held than the cap
        assert most_threads <= threads_before + 4, (threads_before, most_threads)
        assert _get(port) == 200  # and again once all are connected

        # every half-open connection is closed by the monitor: the oldest pushed out by newer
        # ones, the rest once REQUEST_TIMEOUT_S has passed without their request completing
        pending = list(socks)
        deadline = time.monotonic() + REQUEST_TIMEOUT_S + 60
        while pending and time.monotonic() < deadline:
            pending = [s for s in pending if not _closed_by_peer(s)]
            time.sleep(0.1)
        assert not pending, f"{len(pending)} idle connections still open"
        until(lambda: _held(proc.pid, port) == 0, what="the monitor to hold no connections")

        # an idle connection is not closed before its time: just after connecting it is open
        idle = socket.create_connection(("127.0.0.1", port), timeout=30)
        socks.append(idle)
        time.sleep(min(1.0, REQUEST_TIMEOUT_S / 5))
        assert not _closed_by_peer(idle)
        until(lambda: _closed_by_peer(idle), timeout=REQUEST_TIMEOUT_S + 60, what="the idle connection to close")
    finally:
        for s in socks:
            s.close()
        err = _stop(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert len(_stderr_lines(err)) <= 2, err
    assert all(line.startswith("monitor: ") for line in _stderr_lines(err)), err


def test_requests_beyond_the_cap_are_refused_at_once_and_pages_come_back(endpoint):
    """Complete requests (open pages) beyond MAX_CONNECTIONS are answered 503 and closed; the
    threads stay bounded, and once pages leave the page is served again."""
    port = free_port()
    proc = _monitor(endpoint, port)
    monitor = psutil.Process(proc.pid)
    pages: list[http.client.HTTPConnection] = []
    statuses = []
    try:
        until(lambda: _held(proc.pid, port) == 0, what="the start-up request to finish")
        threads_before = monitor.num_threads()
        for _ in range(MAX_CONNECTIONS + 8):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/events")
            statuses.append(conn.getresponse().status)  # the headers of a stream come at once
            pages.append(conn)
        assert statuses.count(200) == MAX_CONNECTIONS and statuses.count(503) == 8, statuses
        assert monitor.num_threads() <= threads_before + MAX_CONNECTIONS + 4
        for conn in pages:
            conn.close()
        pages.clear()
        until(lambda: _get(port) == 200, timeout=60, what="the page once the streams closed")
    finally:
        for conn in pages:
            conn.close()
        err = _stop(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    lines = _stderr_lines(err)
    assert lines == [f"monitor: connection limit reached ({MAX_CONNECTIONS}), refusing more"], err
