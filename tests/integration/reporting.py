"""What a failing real-ComfyUI run prints: the node, its error and where it came from, readable in a CI log.

Plain functions over the server's own messages (no server needed), so tests/test_integration_reporting.py
checks them without a ComfyUI.
"""
from __future__ import annotations

TRACEBACK_LINES = 25  # the innermost frames are the ones that name the failing code


def describe_execution_error(error: dict) -> str:
    """One ``execution_error`` websocket message -> 'node 7 (AnimeVideoSVDSampler) failed: Type: message' + traceback."""
    tb = "".join(error.get("traceback") or []).rstrip().splitlines()[-TRACEBACK_LINES:]
    head = (f"node {error.get('node_id')} ({error.get('node_type')}) failed: "
            f"{error.get('exception_type')}: {error.get('exception_message')}")
    return head + ("\n" + "\n".join(tb) if tb else "")


def describe_prompt_rejection(status_code: int, body) -> str:
    """POST /prompt's refusal (validation) -> one line per failing node with its errors."""
    if not isinstance(body, dict):
        return f"POST /prompt answered {status_code}: {str(body)[:4000]}"
    lines = [f"POST /prompt answered {status_code}"]
    error = body.get("error")
    if isinstance(error, dict):
        lines[0] += f": {error.get('message')} {error.get('details') or ''}".rstrip()
    for node_id, entry in sorted((body.get("node_errors") or {}).items()):
        for e in entry.get("errors", []):
            detail = f" ({e.get('details')})" if e.get("details") else ""
            lines.append(f"  node {node_id} ({entry.get('class_type')}): {e.get('message')}{detail}")
    return "\n".join(lines)
