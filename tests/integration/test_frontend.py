"""The real ComfyUI frontend, in headless Chromium, against the test server: the pack's js/ extension
loads with no console errors and shows a node's ui text on the node.

Needs a Chromium (``chromium``, ``chromium-browser`` or ``google-chrome`` on PATH, or CHROMIUM=path; on
Debian: ``apt-get install chromium``) besides COMFYUI_DIR / COMFYUI_PYTHON; skips without one. Chromium is
driven over its DevTools protocol with websocket-client (a test requirement already).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

EXTENSION = "AnimeVideo.InfoOnNode"  # the name js/animevideo_info.js registers
LOAD_TIMEOUT_S = 120.0
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--remote-debugging-port=0", "--remote-allow-origins=*")


def chromium_path():
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


class Page:
    """One browser tab over the DevTools protocol; console messages and exceptions are collected."""

    def __init__(self, ws_url):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=30)
        self.next_id = 0
        self.events = []

    def send(self, method, **params):
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def evaluate(self, expression):
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression[:200]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.evaluate(expression):
                    return True
            except AssertionError:
                pass
            time.sleep(0.5)
        return False

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads, as readable lines."""
        out = []
        for e in self.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append(f"exception: {d.get('text')} {json.dumps(d.get('exception', {}).get('description'))} "
                           f"at {d.get('url')}:{d.get('lineNumber')}")
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                args = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                frames = p.get("stackTrace", {}).get("callFrames", [])
                out.append(f"console.{p['type']}: {args} at {frames[0]['url'] if frames else '?'}")
            elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out

    def close(self):
        self.ws.close()


@pytest.fixture(scope="module")
def page(comfy, tmp_path_factory):
    browser = chromium_path()
    if not browser:
        pytest.skip("no Chromium on PATH (apt-get install chromium, or set CHROMIUM)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    proc = subprocess.Popen([browser, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Chromium did not start its DevTools server (exit {proc.poll()})")
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        import requests

        tabs = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        tab = next(t for t in tabs if t.get("type") == "page")
        p = Page(tab["webSocketDebuggerUrl"])
        for domain in ("Runtime", "Log", "Page"):
            p.send(f"{domain}.enable")
        p.send("Page.navigate", url=comfy.url + "/")
        loaded = p.wait_for("!!(window.comfyAPI && window.comfyAPI.app && window.comfyAPI.app.app && "
                            "window.comfyAPI.app.app.graph && window.comfyAPI.app.app.extensions && "
                            f"window.comfyAPI.app.app.extensions.some(e => e.name === {json.dumps(EXTENSION)}))",
                            LOAD_TIMEOUT_S)
        assert loaded, (f"the frontend did not register {EXTENSION} within {LOAD_TIMEOUT_S:.0f} s; "
                        f"problems: {p.problems()}")
        yield p
        p.close()
    finally:
        try:
            os.killpg(proc.pid, 15)
        except ProcessLookupError:
            pass
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


def ours(lines):
    return [line for line in lines if "animevideo" in line.lower()]


def test_extension_loads_without_console_errors(page, comfy):
    scripts = page.evaluate("performance.getEntriesByType('resource').map(r => r.name)"
                            ".filter(n => n.includes('/extensions/'))")
    folder = os.path.basename(comfy.pack_link)
    assert any(f"/extensions/{folder}/animevideo_info.js" in s for s in scripts), scripts
    time.sleep(2.0)  # late errors (a failing import, a broken hook) arrive after the registration
    page.evaluate("1")  # drain the events that arrived meanwhile
    problems = page.problems()
    assert not ours(problems), "console errors from the pack's script:\n" + "\n".join(ours(problems))


def test_executed_message_shows_the_info_text_on_the_node(page):
    """A node's 'executed' message with ui text, dispatched the way the server's websocket message is,
    ends up in the read-only box the extension adds to the node."""
    text = "6 distinct drawings in 12 frames, on twos"
    value = page.evaluate(f"""(async () => {{
        const app = window.comfyAPI.app.app;
        const api = window.comfyAPI.api.api;
        const LG = window.LiteGraph || window.comfyAPI.litegraph?.LiteGraph;
        const node = LG.createNode("AnimeVideoInterpolate");
        app.graph.add(node);
        const id = String(node.id);
        api.dispatchCustomEvent("executed", {{node: id, display_node: id, output: {{text: [{json.dumps(text)}]}},
                                              prompt_id: "test"}});
        await new Promise(r => setTimeout(r, 200));
        const w = (node.widgets || []).find(w => w.name === "animevideo_info");
        const out = w ? w.element.value : null;
        app.graph.remove(node);
        return out;
    }})()""")
    assert value == text
    problems = page.problems()
    assert not ours(problems), "\n".join(ours(problems))


WORKFLOWS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "workflows")
UI_FILES = sorted(f for f in os.listdir(WORKFLOWS) if f.endswith(".json"))


@pytest.mark.parametrize("name", UI_FILES)
def test_canvas_loads_the_workflow_and_exports_the_api_copy(page, comfy, name):
    """The frontend loads each shipped UI workflow (every node known, every link kept) and its own
    export (app.graphToPrompt, what Queue sends) is the API copy in workflows/api/, for every input the
    server defines (the frontend also sends display-only widgets, e.g. Preview Any's, that the server
    ignores)."""
    with open(os.path.join(WORKFLOWS, name), encoding="utf-8") as f:
        ui = json.load(f)
    with open(os.path.join(WORKFLOWS, "api", name), encoding="utf-8") as f:
        api = json.load(f)
    before = len(page.problems())
    got = page.evaluate(f"""(async () => {{
        const app = window.comfyAPI.app.app;
        await app.loadGraphData({json.dumps(ui)}, true, true, {json.dumps(name)});
        const nodes = app.graph._nodes || app.graph.nodes;
        const links = Object.keys(app.graph.links instanceof Map ? Object.fromEntries(app.graph.links)
                                                                   : app.graph.links).length;
        const prompt = (await app.graphToPrompt()).output;
        return {{nodes: nodes.map(n => [n.id, n.type]), links, prompt}};
    }})()""")
    assert sorted(tuple(n) for n in got["nodes"]) == sorted((n["id"], n["type"]) for n in ui["nodes"])
    assert got["links"] == len(ui["links"])
    info = comfy.object_info()

    def server_inputs(node):
        spec = info.get(node.get("class_type"), {}).get("input", {})
        known = set(spec.get("required", {})) | set(spec.get("optional", {}))
        return {k: v for k, v in node.get("inputs", {}).items() if k in known}

    exported = {i: {"class_type": n.get("class_type"), "inputs": server_inputs(n)} for i, n in got["prompt"].items()}
    expected = {i: {"class_type": n["class_type"], "inputs": n["inputs"]} for i, n in api.items()}
    assert exported == expected
    problems = page.problems()[before:]
    assert not ours(problems), "\n".join(ours(problems))
