"""The synthetic mouse face: a simulator of its behaviour, shape and infrared image, and the
camera that shows it. It makes labelled training frames and lets the pipeline run with no
hardware; the live path reaches it only through the camera registry, when asked for."""
