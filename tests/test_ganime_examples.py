"""scripts/make_ganime_examples.py draws the two keyframes the GANime workflow loads."""
import os
import sys

import numpy as np
from PIL import Image

from pack_paths import ROOT


def test_keyframes_regenerate(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import make_ganime_examples
    finally:
        sys.path.pop(0)
    paths = make_ganime_examples.write_all(str(tmp_path))
    assert [os.path.basename(p) for p in paths] == ["animevideo_example_keyframe_first.png",
                                                    "animevideo_example_keyframe_last.png"]
    for path in paths:
        shipped = os.path.join(ROOT, "example_inputs", os.path.basename(path))
        assert os.path.isfile(shipped) and os.path.getsize(shipped) < 300 * 1024
        with Image.open(path) as a, Image.open(shipped) as b:
            assert a.size == b.size == (512, 256) and a.mode == b.mode
            diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
        assert diff.mean() < 1.0
    with Image.open(paths[0]) as a, Image.open(paths[1]) as b:  # the two keyframes differ (the girl moves)
        assert np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).mean() > 5
