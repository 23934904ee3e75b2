"""Camera adapters: turn a device or a file into a stream of grayscale frames.

Every adapter implements :class:`Camera`; :func:`registry.make_camera` builds one from a
``--camera`` spec string.
"""
