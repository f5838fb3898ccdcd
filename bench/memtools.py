"""Peak-memory measurement shared by the bench scripts (run each case in a fresh subprocess)."""
import os
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_pack():
    """Make this checkout importable as the package ``animevideo`` in a child process."""
    pkg = types.ModuleType("animevideo")
    pkg.__path__ = [ROOT]
    sys.modules.setdefault("animevideo", pkg)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _torch_peak(prof) -> int:
    """Peak of live torch CPU bytes from the profiler's [memory] events, in time order."""
    evs = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
           and str(e.device_type()).endswith("CPU")]
    evs.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in evs:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


# A child prints its measurements as one line "RESULT {json}"; a fresh process per case keeps the peaks apart.
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONWARNINGS": "ignore"}


def child_result(obj) -> str:
    import json

    return "RESULT " + json.dumps(obj)


def run_child(cmd: list[str], what: str) -> dict:
    """Run one measuring child (``cmd``) and return its RESULT dict; exits with its output if it failed."""
    import json
    import os
    import subprocess
    import sys

    cp = subprocess.run(cmd, env=dict(os.environ, **CHILD_ENV), capture_output=True, text=True)
    line = [ln for ln in cp.stdout.splitlines() if ln.startswith("RESULT ")]
    if cp.returncode or not line:
        sys.stderr.write(cp.stdout + cp.stderr)
        raise SystemExit(f"child for {what} failed (rc {cp.returncode})")
    return json.loads(line[0][7:])
