"""scripts/make_storyboard_examples.py draws the two middle panels the storyboard workflow loads."""
import json
import os
import sys

import numpy as np
from PIL import Image

from pack_paths import ROOT


def test_middle_panels_regenerate_and_the_workflow_loads_all_four(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import make_storyboard_examples
    finally:
        sys.path.pop(0)
    paths = make_storyboard_examples.write_all(str(tmp_path))
    for path in paths:
        shipped = os.path.join(ROOT, "example_inputs", os.path.basename(path))
        assert os.path.isfile(shipped) and os.path.getsize(shipped) < 300 * 1024
        with Image.open(path) as a, Image.open(shipped) as b:
            assert a.size == b.size == (512, 256) and a.mode == b.mode
            assert np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).mean() < 1.0
    panels = [np.asarray(Image.open(os.path.join(ROOT, "example_inputs", name)), dtype=np.int16)
              for name in make_storyboard_examples.PANELS]
    for a, b in zip(panels, panels[1:]):  # the girl moves from panel to panel
        assert np.abs(a - b).mean() > 2
    with open(os.path.join(ROOT, "workflows", "api", "anisora_core_storyboard.json")) as f:
        api = json.load(f)
    loaded = [n["inputs"]["image"] for n in api.values() if n["class_type"] == "LoadImage"]
    assert loaded == list(make_storyboard_examples.PANELS)
