"""scripts/mutation_check.py stays in step with the code: every deliberate break still finds its pattern (a
refactor that moves the code must update the break, not silently un-match it), names existing tests, and the
list covers every mechanism family. Fast: nothing is run."""
import os
import re
import sys

import pytest

from pack_paths import ROOT

sys.path.insert(0, os.path.join(ROOT, "scripts"))
try:
    import mutation_check as mc
finally:
    sys.path.pop(0)


@pytest.mark.parametrize("brk", mc.BREAKS, ids=[b.id for b in mc.BREAKS])
def test_every_break_matches_the_current_code(brk):
    assert mc.drift(brk) is None, f"{brk.id}: {mc.drift(brk)}"
    with open(os.path.join(ROOT, brk.file), encoding="utf-8") as fh:
        text = fh.read()
    changed = re.sub(brk.pattern, brk.replacement, text, flags=re.MULTILINE)
    assert changed != text
    compile(changed, brk.file, "exec")  # the broken code is still valid Python


def test_break_ids_are_unique_and_every_method_is_covered():
    ids = [b.id for b in mc.BREAKS]
    assert len(ids) == len(set(ids))
    families = {i.split(".")[0] for i in ids}
    assert {"lvcd", "svd", "guide", "anisora", "animesr", "upscale", "interp", "ganime"} <= families
    # the four breaks the issue found unguarded
    assert {"lvcd.skip_residuals_dropped", "lvcd.overlap_blend_last_step_only", "interp.correlation_scale",
            "guide.last_step_only"} <= set(ids)


def test_drift_is_reported(tmp_path):
    brk = mc.Break("x.y", "nothing", "pipelines/svd/sampler.py", r"this text is not in the file", "", ("tests",))
    assert "matches 0 time" in mc.drift(brk)
    missing = mc.Break("x.z", "nothing", "pipelines/svd/sampler.py", r"def karras_sigmas", "",
                       ("tests/test_svd_parity.py::test_that_does_not_exist",))
    assert "not found" in mc.drift(missing)
