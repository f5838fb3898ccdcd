"""The real-ComfyUI tests' failure report (tests/integration/reporting.py) and their CI switch, without a server."""
import importlib.util
import os
import subprocess
import sys

from pack_paths import ROOT

INTEGRATION = os.path.join(ROOT, "tests", "integration")


def reporting():
    spec = importlib.util.spec_from_file_location("reporting_under_test", os.path.join(INTEGRATION, "reporting.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_execution_error_names_node_error_and_innermost_frames():
    frames = [f'  File "frame{i}.py", line {i}, in f{i}\n' for i in range(40)]
    text = reporting().describe_execution_error({
        "node_id": "7", "node_type": "AnimeVideoSVDSampler", "exception_type": "ValueError",
        "exception_message": "width must be a multiple of 8", "traceback": frames})
    first = text.splitlines()[0]
    assert first == "node 7 (AnimeVideoSVDSampler) failed: ValueError: width must be a multiple of 8"
    assert "frame39.py" in text and "frame0.py" not in text  # the innermost frames, not the outermost


def test_prompt_rejection_lists_every_failing_node():
    body = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                      "details": ""},
            "node_errors": {"3": {"class_type": "AnimeVideoLoadSVD",
                                  "errors": [{"message": "Value not in list", "details": "ckpt_name: 'x' not in []"}]},
                            "5": {"class_type": "SaveVideo", "errors": [{"message": "Required input is missing"}]}}}
    text = reporting().describe_prompt_rejection(400, body)
    assert text.splitlines() == [
        "POST /prompt answered 400: Prompt outputs failed validation",
        "  node 3 (AnimeVideoLoadSVD): Value not in list (ckpt_name: 'x' not in [])",
        "  node 5 (SaveVideo): Required input is missing",
    ]
    assert reporting().describe_prompt_rejection(500, "<html>oops").startswith("POST /prompt answered 500: <html>")


def test_without_comfyui_the_integration_tests_skip_saying_how_to_run_them():
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_DIR", "COMFYUI_PYTHON", "ANIMEVIDEO_REQUIRE_COMFYUI")}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", os.path.join("tests", "integration"),
                        "-k", "imports_without_errors or object_info_lists"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 skipped" in r.stdout and "COMFYUI_DIR" in r.stdout and "scripts/run_tests.sh" in r.stdout, r.stdout


def test_ci_switch_turns_a_missing_comfyui_into_an_error():
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_DIR", "COMFYUI_PYTHON")}
    env["ANIMEVIDEO_REQUIRE_COMFYUI"] = "1"
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", os.path.join("tests", "integration"),
                        "-k", "imports_without_errors"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "ANIMEVIDEO_REQUIRE_COMFYUI is set but COMFYUI_DIR" in r.stdout + r.stderr
