"""Facemap's 15 keypoints, in the order of the tracker network's output channels."""

BODYPARTS: tuple[str, ...] = (
    "eye(back)",
    "eye(bottom)",
    "eye(front)",
    "eye(top)",
    "lowerlip",
    "mouth",
    "nose(bottom)",
    "nose(r)",
    "nose(tip)",
    "nose(top)",
    "nosebridge",
    "paw",
    "whisker(I)",
    "whisker(III)",
    "whisker(II)",
)
N_KEYPOINTS = len(BODYPARTS)
