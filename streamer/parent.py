"""Whether the process that started this one still lives.

Each child of the pipeline (capture, recorder, video recorder, monitor) ends when the pipeline
is gone. Comparing ``os.getppid()`` with its value at the child's start misses a pipeline killed
while the child was still starting: the child's parent is then already init when it first
looks, and it would run on alone (a recorder holding its file locked). So the child watches the
pipe that multiprocessing keeps open from the parent instead, which closes when the parent
dies, whenever that is.
"""
from __future__ import annotations

import multiprocessing


def parent_alive() -> bool:
    """False once the process that started this one has died; True in a process that no
    multiprocessing parent started."""
    parent = multiprocessing.parent_process()
    return parent is None or parent.is_alive()
