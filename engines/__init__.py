"""Pixels to keypoints (Facemap's tracker) and keypoints to predicted neural activity (the encoder)."""
