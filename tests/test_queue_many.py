"""scripts/queue_many.py against small local HTTP servers that answer like ComfyUI's /prompt and /history:
clips go round-robin, each with its own seed, the rest of the workflow unchanged; errors name the server.
tests/integration/test_core_workflows_many_servers.py sends shipped workflows to a real ComfyUI server."""
from __future__ import annotations

import io
import json
import os
import sys
from http.server import BaseHTTPRequestHandler

import pytest

from hub_server import LocalServer
from pack_paths import ROOT

sys.path.insert(0, os.path.join(ROOT, "scripts"))
try:
    import queue_many
finally:
    sys.path.pop(0)

WORKFLOW = os.path.join(ROOT, "workflows", "api", "anisora_core_keyframe_inbetween.json")


class FakeComfy(LocalServer):
    """POST /prompt records the prompt and answers a prompt id; GET /history/<id> answers it done, with one saved
    file named after the seed. ``refuse`` answers node_errors as ComfyUI does for an invalid prompt."""

    def __init__(self, refuse=False):
        self.prompts, self.refuse = [], refuse
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/prompt":
                    return self._answer(404, {})
                if fake.refuse:
                    return self._answer(400, {"error": {"type": "prompt_outputs_failed_validation"},
                                              "node_errors": {"15": {"errors": [{"message": "bad"}]}}})
                fake.prompts.append(body)
                return self._answer(200, {"prompt_id": f"p{len(fake.prompts)}", "number": len(fake.prompts),
                                          "node_errors": {}})

            def do_GET(self):
                prompt_id = self.path.rsplit("/", 1)[-1]
                index = int(prompt_id[1:]) - 1
                seed = fake.prompts[index]["prompt"]["15"]["inputs"]["seed"]
                return self._answer(200, {prompt_id: {
                    "status": {"status_str": "success", "completed": True, "messages": []},
                    "outputs": {"18": {"images": [{"filename": f"clip_{seed}.mp4", "subfolder": "AnimeVideo",
                                                   "type": "output"}]}}}})

        super().__init__(Handler)


def test_clips_go_round_robin_with_one_seed_each():
    with FakeComfy() as a, FakeComfy() as b:
        log = io.StringIO()
        rc_clips = queue_many.queue_many(queue_many.load_api_workflow(WORKFLOW), [a.endpoint, b.endpoint], 5, 100,
                                         wait=True, poll=0.01, out=log)
    assert [len(a.prompts), len(b.prompts)] == [3, 2]
    seeds_a = [p["prompt"]["15"]["inputs"]["seed"] for p in a.prompts]
    seeds_b = [p["prompt"]["15"]["inputs"]["seed"] for p in b.prompts]
    assert seeds_a == [100, 102, 104] and seeds_b == [101, 103]
    assert [c["server"] for c in rc_clips] == [a.endpoint, b.endpoint, a.endpoint, b.endpoint, a.endpoint]
    assert [c["files"] for c in rc_clips] == [[f"AnimeVideo/clip_{s}.mp4"] for s in range(100, 105)]
    assert "done seed 104" in log.getvalue()
    # everything but the seed is the shipped workflow, and all clips of a run share one client id
    shipped = queue_many.load_api_workflow(WORKFLOW)
    for p in a.prompts + b.prompts:
        sent = p["prompt"]
        sent["15"]["inputs"]["seed"] = shipped["15"]["inputs"]["seed"]
        assert sent == shipped
    assert len({p["client_id"] for p in a.prompts + b.prompts}) == 1


def test_set_changes_every_literal_of_that_name_and_leaves_links(tmp_path):
    with FakeComfy() as a:
        rc = queue_many.main([WORKFLOW, "--server", a.endpoint, "--count", "2", "--seed", "7", "--set", "steps=3",
                              "--set", "width=64", "--set", "filename_prefix=AnimeVideo/many"])
    assert rc == 0
    sent = a.prompts[1]["prompt"]
    assert sent["15"]["inputs"]["steps"] == 3 and sent["14"]["inputs"]["width"] == 64
    assert sent["18"]["inputs"]["filename_prefix"] == "AnimeVideo/many"
    assert sent["15"]["inputs"]["model"] == ["2", 0] and sent["15"]["inputs"]["seed"] == 8


def test_errors_name_what_to_fix(tmp_path, capsys):
    ui = os.path.join(ROOT, "workflows", "anisora_core_keyframe_inbetween.json")
    assert queue_many.main([ui, "--server", "http://127.0.0.1:9"]) == 2
    assert "UI workflow" in capsys.readouterr().err
    with FakeComfy(refuse=True) as a:
        assert queue_many.main([WORKFLOW, "--server", a.endpoint]) == 2
    err = capsys.readouterr().err
    assert a.endpoint in err and "node_errors" in err
    assert queue_many.main([WORKFLOW, "--server", "http://127.0.0.1:9"]) == 2  # nothing listens on port 9
    assert "no answer" in capsys.readouterr().err
    assert queue_many.main([WORKFLOW]) == 2
    assert "--server" in capsys.readouterr().err
    unseeded = tmp_path / "unseeded.json"
    unseeded.write_text(json.dumps({"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}}))
    with pytest.raises(queue_many.QueueError, match="no literal seed"):
        queue_many.plan_clips(queue_many.load_api_workflow(str(unseeded)), ["http://x"], 2, 0)
