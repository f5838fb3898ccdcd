"""A real ComfyUI server with this pack installed, for tests/integration/.

Runs only when COMFYUI_DIR (a ComfyUI source tree holding main.py) and COMFYUI_PYTHON (a Python whose
environment has ComfyUI's and this pack's requirements) are set; otherwise every test here skips.
``shared/tools/comfyui-harness.sh setup`` makes such a pair and ``... env`` prints the exports.

The session fixture ``comfy`` builds a throwaway ``--base-directory`` (custom_nodes/ holding a symlink
to this checkout, models/ with tiny random-weight models from scripts/make_tiny_models.py, input/ (holding one
picture of the 'user' under an example input's name),
output/, user/), starts ``main.py --cpu`` on a free loopback port, waits for /system_stats and stops
the server at the end of the session, also when a test or the start itself fails.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
SKIP_REASON = ("no ComfyUI to test in: `bash scripts/run_tests.sh` sets one up when ../shared (the ComfyUI "
               "snapshot and harness) lies beside this checkout; otherwise set COMFYUI_DIR (a ComfyUI source "
               "tree) and COMFYUI_PYTHON (its Python, with this pack's requirements) - README, 'Tests'")
# CI sets this: there, a missing ComfyUI is an error, never a quiet skip.
REQUIRE_ENV = "ANIMEVIDEO_REQUIRE_COMFYUI"
LOG_TAIL_LINES = 60
PACK_LINK_NAME = "AnimeVideo"  # the folder name ComfyUI sees in custom_nodes/ (also its module name)
START_TIMEOUT_S = float(os.environ.get("COMFYUI_START_TIMEOUT", "180"))
STOP_TIMEOUT_S = 20.0
# The RAM the pack may plan clips for in the test server (ANIMEVIDEO_MAX_RAM_GB): far above what the small runs
# need, and a fixed figure, so a too-large request is refused the same way on any machine.
SERVER_RAM_CAP_GB = 4


def comfy_env():
    return os.environ.get("COMFYUI_DIR"), os.environ.get("COMFYUI_PYTHON")


def pytest_collection_modifyitems(config, items):
    comfy_dir, comfy_python = comfy_env()
    if comfy_dir and comfy_python:
        return
    if os.environ.get(REQUIRE_ENV) and any(str(item.path).startswith(HERE + os.sep) for item in items):
        raise pytest.UsageError(f"{REQUIRE_ENV} is set but COMFYUI_DIR / COMFYUI_PYTHON are not: {SKIP_REASON}")
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if str(item.path).startswith(HERE + os.sep):
            item.add_marker(skip)


_running_servers = []  # the session's ComfyServer while it runs (for the failure report)
_outcomes = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}


def _is_integration(item) -> bool:
    return str(item.path).startswith(HERE + os.sep)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing real-ComfyUI test shows what a person needs to fix it: the workflow it ran and the
    server log's last lines (the node and its error are in the assertion message, RunResult.describe)."""
    outcome = yield
    report = outcome.get_result()
    if not _is_integration(item):
        return
    if report.when == "call":
        _outcomes[report.outcome] += 1
    elif report.skipped:  # skipped in setup (no ComfyUI, a missing client library)
        _outcomes["skipped"] += 1
    elif report.failed:  # a setup/teardown error (the server did not start, say)
        _outcomes["errors"] += 1
    if report.failed and _running_servers:
        params = getattr(getattr(item, "callspec", None), "params", {})
        workflow = params.get("path")
        if workflow:
            report.sections.append(("workflow", os.path.relpath(workflow, ROOT)))
        report.sections.append((f"ComfyUI server log, last {LOG_TAIL_LINES} lines",
                                _running_servers[-1].log_tail(LOG_TAIL_LINES)))


def pytest_terminal_summary(terminalreporter):
    if any(_outcomes.values()):
        comfy_dir, _ = comfy_env()
        terminalreporter.write_line(
            f"real-ComfyUI integration tests ({comfy_dir or 'no ComfyUI'}): {_outcomes['passed']} passed, "
            f"{_outcomes['failed']} failed, {_outcomes['errors']} errors, {_outcomes['skipped']} skipped")


def read_bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_rss_kb(pid: int) -> int:
    """VmRSS of a process in KiB, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class RunResult:
    def __init__(self, prompt_id, messages, history):
        self.prompt_id = prompt_id
        self.messages = messages  # [(type, data)] for this prompt, in arrival order
        self.history = history

    def of_type(self, kind):
        return [d for t, d in self.messages if t == kind]

    @property
    def types(self):
        return [t for t, _ in self.messages]

    @property
    def status(self):
        return (self.history or {}).get("status", {}).get("status_str")

    def describe(self):
        errors = self.of_type("execution_error")
        if errors:
            return reporting().describe_execution_error(errors[0])
        return f"events {self.types}, history status {self.status}"


class ComfyServer:
    """One ComfyUI process plus small HTTP / websocket helpers."""

    def __init__(self, comfy_dir, comfy_python, base, models_dir, log_path):
        self.comfy_dir, self.comfy_python = comfy_dir, comfy_python
        self.base, self.models_dir, self.log_path = base, models_dir, log_path
        self.input_dir = os.path.join(base, "input")
        self.output_dir = os.path.join(base, "output")
        self.pack_link = os.path.join(base, "custom_nodes", PACK_LINK_NAME)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.rss_at_start_kb = None
        self._object_info = None

    # -- process ------------------------------------------------------------------------------
    def start(self):
        import requests

        cmd = [self.comfy_python, os.path.join(self.comfy_dir, "main.py"), "--cpu", "--listen", "127.0.0.1",
               "--port", str(self.port), "--disable-auto-launch", "--disable-api-nodes",
               "--base-directory", self.base]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # Test the pack's default in-ComfyUI memory policy, whatever the caller's shell has set; the
        # policy with a cache budget is tested by setting ANIMEVIDEO_TEST_SERVER_CACHE_BUDGET_GB.
        env.pop("ANIMEVIDEO_CACHE_BUDGET_GB", None)
        env["ANIMEVIDEO_MAX_RAM_GB"] = str(SERVER_RAM_CAP_GB)
        if os.environ.get("ANIMEVIDEO_TEST_SERVER_CACHE_BUDGET_GB"):
            env["ANIMEVIDEO_CACHE_BUDGET_GB"] = os.environ["ANIMEVIDEO_TEST_SERVER_CACHE_BUDGET_GB"]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.comfy_dir, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            try:
                if requests.get(self.url + "/system_stats", timeout=2).status_code == 200:
                    self.rss_at_start_kb = read_rss_kb(self.proc.pid)
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"ComfyUI did not answer /system_stats within {START_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: the server and its children
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(STOP_TIMEOUT_S)
        if getattr(self, "_log", None):
            self._log.close()

    def log_text(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_tail(self, n=60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:]) + f"\n(full log: {self.log_path})"

    def rss_kb(self) -> int:
        return read_rss_kb(self.proc.pid)

    # -- HTTP ---------------------------------------------------------------------------------
    def get(self, path, **kw):
        import requests

        r = requests.get(self.url + path, timeout=kw.pop("timeout", 30), **kw)
        r.raise_for_status()
        return r.json()

    def post(self, path, payload=None, **kw):
        import requests

        # json.dumps as Python API clients send it: NaN/Infinity pass as JSON literals, which ComfyUI accepts
        return requests.post(self.url + path, data=json.dumps(payload), headers={"Content-Type": "application/json"},
                             timeout=kw.pop("timeout", 30), **kw)

    def object_info(self, refresh=False) -> dict:
        if self._object_info is None or refresh:
            self._object_info = self.get("/object_info", timeout=60)
        return self._object_info

    def upload_image(self, path) -> dict:
        import requests

        with open(path, "rb") as f:
            r = requests.post(self.url + "/upload/image", files={"image": (os.path.basename(path), f, "image/png")},
                              data={"overwrite": "true", "type": "input"}, timeout=30)
        r.raise_for_status()
        return r.json()

    def free(self, unload_models=True, free_memory=True):
        r = self.post("/free", {"unload_models": unload_models, "free_memory": free_memory})
        r.raise_for_status()

    # -- prompts ------------------------------------------------------------------------------
    def connect(self):
        import websocket

        client_id = uuid.uuid4().hex
        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}", timeout=10)
        return client_id, ws

    def queue(self, prompt, client_id, extra_data=None):
        # core's full-size text / CLIP-vision encoders -> the test-only stand-ins (a no-op for other prompts)
        prompt = fake_encoders_swap().swap_core_encoders(prompt)
        payload = {"prompt": prompt, "client_id": client_id}
        if extra_data:
            payload["extra_data"] = extra_data  # e.g. the frontend's per-prompt "preview_method"
        r = self.post("/prompt", payload)
        try:
            body = r.json()
        except ValueError:
            body = r.text
        assert r.status_code == 200 and isinstance(body, dict) and not body.get("node_errors"), \
            reporting().describe_prompt_rejection(r.status_code, body)
        return body["prompt_id"]

    def run(self, prompt, timeout=300.0, on_message=None, extra_data=None) -> RunResult:
        """Queue ``prompt`` and follow it on the websocket until the server reports it done.

        ``on_message(type, data, prompt_id)`` is called for each of this prompt's text messages.
        """
        client_id, ws = self.connect()
        try:
            prompt_id = self.queue(prompt, client_id, extra_data)
            messages = []
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"prompt {prompt_id} not done after {timeout:.0f} s; "
                                         f"events so far {[t for t, _ in messages]}\n{self.log_tail()}")
                ws.settimeout(min(left, 10.0))
                try:
                    raw = ws.recv()
                except Exception as e:  # websocket timeout: check the server is alive, then keep waiting
                    if type(e).__name__ != "WebSocketTimeoutException":
                        raise
                    if self.proc.poll() is not None:
                        raise AssertionError(f"ComfyUI died during the run:\n{self.log_tail()}") from None
                    continue
                if isinstance(raw, bytes):  # previews: a 4-byte big-endian event type, then the payload
                    event = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
                    messages.append(("binary", {"event": event, "size": len(raw)}))
                    continue
                msg = json.loads(raw)
                kind, data = msg.get("type"), msg.get("data") or {}
                if data.get("prompt_id") != prompt_id:  # queue status and other prompts' events
                    continue
                messages.append((kind, data))
                if on_message is not None:
                    on_message(kind, data, prompt_id)
                if kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                    break
        finally:
            ws.close()
        history = self.get(f"/history/{prompt_id}").get(prompt_id)
        return RunResult(prompt_id, messages, history)


def make_tiny_models(models_dir):
    """scripts/make_tiny_models.py, in a child process (the test process stays free of the models)."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_tiny_models.py"), models_dir,
                        "--with-core-sized"],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"make_tiny_models.py failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")


def load_local_module(name, filename):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, filename))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def reporting():
    """tests/integration/reporting.py (this folder is no package)."""
    return load_local_module("animevideo_integration_reporting", "reporting.py")


def fake_encoders_swap():
    """tests/integration/fake_encoders/swap.py: the test-only encoder pack's installer and prompt rewriter."""
    return load_local_module("animevideo_fake_encoders_swap", os.path.join("fake_encoders", "swap.py"))


def install_fake_encoders(base_dir, models_dir):
    """Symlink the test-only encoder pack into custom_nodes/ and add placeholder encoder names to models/
    (the AniSora workflows name core's UMT5 / CLIP-vision files; runs swap those nodes for the fakes)."""
    fake_encoders_swap().install(base_dir, models_dir)


# A picture of the user's own under the name of one of the pack's example inputs, in input/ before the server
# starts: the pack copies its example inputs into input/ at load and must leave this one as it is.
USERS_PICTURE = "animevideo_example_first_frame.png"


def write_users_picture(path):
    from PIL import Image

    Image.new("RGB", (96, 64), (200, 40, 90)).save(path)


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    pytest.importorskip("requests")
    pytest.importorskip("websocket", reason="websocket-client is needed for the real-ComfyUI tests")
    comfy_dir, comfy_python = comfy_env()
    if not (comfy_dir and comfy_python):
        pytest.skip(SKIP_REASON)
    if not os.path.isfile(os.path.join(comfy_dir, "main.py")):
        pytest.fail(f"COMFYUI_DIR={comfy_dir} has no main.py")
    if not os.access(comfy_python, os.X_OK):
        pytest.fail(f"COMFYUI_PYTHON={comfy_python} is not an executable")

    work = tmp_path_factory.mktemp("comfyui")
    models_dir = str(work / "models-tiny")
    make_tiny_models(models_dir)
    base = work / "base"
    for sub in ("custom_nodes", "input", "output", "user"):
        (base / sub).mkdir(parents=True)
    os.symlink(ROOT, base / "custom_nodes" / PACK_LINK_NAME)
    os.symlink(models_dir, base / "models")
    install_fake_encoders(str(base), models_dir)
    write_users_picture(str(base / "input" / USERS_PICTURE))
    users_picture = (USERS_PICTURE, read_bytes(str(base / "input" / USERS_PICTURE)))

    server = ComfyServer(comfy_dir, comfy_python, str(base), models_dir, str(work / "server.log"))
    try:
        _running_servers.append(server)
        server.start()
        server.input_files_at_start = {name: read_bytes(os.path.join(server.input_dir, name))
                                       for name in sorted(os.listdir(server.input_dir))
                                       if os.path.isfile(os.path.join(server.input_dir, name))}
        server.users_picture = users_picture
        yield server
    finally:
        server.stop()
        _running_servers.remove(server)
