"""``python -m facestream.streamer.cli``: the same as the ``facestream`` command."""
from facestream.streamer.cli import main

main()
