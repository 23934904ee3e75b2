"""The capture process: camera -> ring buffer, and nothing else.

Capture has a process of its own so the camera is read on time whatever the tracker is
doing (no shared GIL, no waiting on inference). It reports to the pipeline over a pipe:
("opened", shape, description), ("ended",) or ("error", one-line message), and
("stalled", one-line reason) / ("resumed",) when a camera stops delivering for a while and
goes on (a Basler camera unplugged and reopened). It stops when told, when the camera
ends, or when the pipeline process is gone.

A video file that ends short of the frame count its container states (cut off, or with corrupted
bytes: ``VideoFileCamera.unreadable_report``) ends the run as an error with that one line, after
its readable frames have gone into the ring, so the run exits non-zero rather than "ended".
"""
from __future__ import annotations

import signal
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

from facestream.camera_adapters.base import CameraError, CameraStalled
from facestream.camera_adapters.registry import CameraOptions, make_camera
from facestream.streamer.parent import parent_alive
from facestream.streamer.ringbuffer import RingBuffer


def capture_main(spec: str, options: CameraOptions, conn: Connection, stop: Event) -> None:
    # Ctrl-C reaches the whole process group; the pipeline decides when capture stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        camera = make_camera(spec, options)
        camera.open()
    except CameraError as e:
        conn.send(("error", str(e)))
        return
    ring = None
    try:
        conn.send(("opened", camera.shape, camera.describe()))
        if not conn.poll(30):
            return
        ring = RingBuffer.attach(conn.recv())
        stalled = None
        while not stop.is_set() and parent_alive():
            try:
                frame = camera.read()
            except CameraStalled as e:
                if str(e) != stalled:
                    stalled = str(e)
                    conn.send(("stalled", stalled))
                continue
            if stalled is not None:
                stalled = None
                conn.send(("resumed",))
            if frame is None:
                short = getattr(camera, "unreadable_report", None)
                if short:  # not marked ended: the pipeline reads this after the frames before it
                    conn.send(("error", short))
                    break
                ring.mark_ended()
                conn.send(("ended",))
                break
            ring.write(frame)
    except CameraError as e:
        conn.send(("error", str(e)))
    except Exception as e:  # reported to the pipeline, which exits non-zero
        conn.send(("error", f"capture failed: {type(e).__name__}: {e}"))
    finally:
        camera.close()
        if ring is not None:
            ring.close()
