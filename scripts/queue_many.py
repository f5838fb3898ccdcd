#!/usr/bin/env python3
"""Queue many clips of one API workflow on several ComfyUI servers, round-robin, one seed per clip.

    python scripts/queue_many.py workflows/api/anisora_core_keyframe_inbetween.json \\
        --server http://gpu-a:8188 --server http://gpu-b:8188 --count 8 --seed 100 --wait

Clip i goes to server i mod (number of servers) with every seed input of the workflow (``seed``,
``noise_seed``) set to ``--seed`` + i, so no two clips repeat. ``--set NAME=VALUE`` sets every literal input of
that name first (VALUE is read as JSON when it parses, else as text: ``--set steps=8 --set length=49``). With
``--wait`` it follows each clip through ``/history`` and prints the files each server saved.

This is ComfyUI's own HTTP API (POST /prompt, GET /history/<id>), what the web page sends; one server per GPU
(``main.py --cuda-device N --port 8188+N``) is the plain way to render many clips on many GPUs. Standard library
only. Export the workflow with "Export (API)" in ComfyUI, or take one from the pack's workflows/api/.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import urllib.error
import urllib.request
import uuid

SEED_INPUTS = ("seed", "noise_seed")


class QueueError(RuntimeError):
    pass


def is_link(value) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def load_api_workflow(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        prompt = json.load(f)
    if isinstance(prompt, dict) and "nodes" in prompt and "links" in prompt:
        raise QueueError(f"{path}: this is a UI workflow (what the canvas saves); queue_many sends the API format. "
                         "In ComfyUI use Workflow > Export (API), or take the file of that name in workflows/api/.")
    if not isinstance(prompt, dict) or not prompt or not all(
            isinstance(n, dict) and "class_type" in n and isinstance(n.get("inputs"), dict) for n in prompt.values()):
        raise QueueError(f"{path}: not an API workflow (a JSON object of nodes with class_type and inputs).")
    return prompt


def parse_assignment(text: str) -> tuple[str, object]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise QueueError(f"--set {text!r}: expected NAME=VALUE, e.g. --set steps=8")
    try:
        return name, json.loads(raw)
    except ValueError:
        return name, raw


def with_values(prompt: dict, values: dict) -> dict:
    """A copy with every literal input of the given names replaced (links are left alone)."""
    out = copy.deepcopy(prompt)
    for node in out.values():
        for name, value in values.items():
            if name in node["inputs"] and not is_link(node["inputs"][name]):
                node["inputs"][name] = value
    return out


def seed_inputs(prompt: dict) -> list[tuple[str, str]]:
    return [(node_id, name) for node_id, node in prompt.items() for name in SEED_INPUTS
            if name in node["inputs"] and not is_link(node["inputs"][name])]


def plan_clips(prompt: dict, servers: list[str], count: int, first_seed: int) -> list[tuple[str, int, dict]]:
    """(server, seed, prompt) for each clip, round-robin over the servers."""
    if not servers:
        raise QueueError("--server: give at least one ComfyUI server URL, e.g. --server http://127.0.0.1:8188")
    if count < 1:
        raise QueueError(f"--count: {count}; queue at least 1 clip.")
    if not seed_inputs(prompt):
        raise QueueError("the workflow has no literal seed or noise_seed input: every clip would be the same. "
                         "Give its sampler a seed widget (not a linked value).")
    return [(servers[i % len(servers)], first_seed + i, with_values(prompt, {n: first_seed + i for n in SEED_INPUTS}))
            for i in range(count)]


def _request(url: str, payload: dict | None = None, timeout: float = 30.0) -> dict:
    data = None if payload is None else json.dumps(payload).encode("utf-8")
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read().decode("utf-8") or "{}")
    except urllib.error.HTTPError as e:
        body = e.read().decode("utf-8", "replace")
        try:
            detail = json.loads(body)
        except ValueError:
            detail = body[:2000]
        raise QueueError(f"{url}: the server answered {e.code}: {json.dumps(detail)[:2000]}") from None
    except (urllib.error.URLError, OSError) as e:
        raise QueueError(f"{url}: no answer ({getattr(e, 'reason', e)}); is ComfyUI running there?") from None


def queue_clip(server: str, prompt: dict, client_id: str) -> str:
    body = _request(server.rstrip("/") + "/prompt", {"prompt": prompt, "client_id": client_id})
    if body.get("node_errors") or "prompt_id" not in body:
        raise QueueError(f"{server}: the prompt was refused: {json.dumps(body)[:2000]}")
    return body["prompt_id"]


def saved_files(history_entry: dict) -> list[str]:
    files = []
    for ui in history_entry.get("outputs", {}).values():
        for entries in ui.values():
            if isinstance(entries, list):
                files += [f"{e.get('subfolder', '')}/{e['filename']}".lstrip("/") for e in entries
                          if isinstance(e, dict) and "filename" in e and e.get("type") == "output"]
    return files


def wait_for(server: str, prompt_id: str, timeout: float, poll: float = 1.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = _request(f"{server.rstrip('/')}/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            if entry["status"].get("status_str") != "success":
                messages = [m for m in entry["status"].get("messages", []) if m[0] == "execution_error"]
                raise QueueError(f"{server}: prompt {prompt_id} failed: {json.dumps(messages)[:2000]}")
            return entry
        time.sleep(poll)
    raise QueueError(f"{server}: prompt {prompt_id} not done after {timeout:.0f} s")


def queue_many(prompt: dict, servers: list[str], count: int, first_seed: int, wait: bool = False,
               timeout: float = 3600.0, poll: float = 1.0, out=sys.stdout) -> list[dict]:
    client_id = uuid.uuid4().hex
    clips = []
    for server, seed, clip in plan_clips(prompt, servers, count, first_seed):
        prompt_id = queue_clip(server, clip, client_id)
        clips.append({"server": server, "seed": seed, "prompt_id": prompt_id})
        print(f"queued seed {seed} on {server}: prompt {prompt_id}", file=out)
    if wait:
        for c in clips:
            c["files"] = saved_files(wait_for(c["server"], c["prompt_id"], timeout, poll))
            print(f"done seed {c['seed']} on {c['server']}: {', '.join(c['files']) or 'no saved files'}", file=out)
    return clips


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workflow", help="an API-format workflow (workflows/api/*.json or Export (API))")
    ap.add_argument("--server", action="append", default=[], help="a ComfyUI URL; repeat for several servers")
    ap.add_argument("--count", type=int, default=1, help="clips to queue (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the first clip; clip i gets seed + i")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="set every literal input of that name, e.g. --set steps=8")
    ap.add_argument("--wait", action="store_true", help="wait for every clip and print the saved files")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait per clip with --wait")
    args = ap.parse_args(argv)
    try:
        prompt = with_values(load_api_workflow(args.workflow), dict(parse_assignment(s) for s in args.set))
        queue_many(prompt, args.server, args.count, args.seed, args.wait, args.timeout)
    except (QueueError, OSError, ValueError) as e:
        print(f"queue_many: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
