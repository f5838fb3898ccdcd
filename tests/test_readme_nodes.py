"""The README's node table uses the names the canvas shows (NODE_DISPLAY_NAME_MAPPINGS) and lists every node."""
from __future__ import annotations

import os
import re

from pack_paths import ROOT

from animevideo.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

ENTRY = re.compile(r"\*\*([^*]+)\*\*\s*`(AnimeVideo\w+)`")


def node_table() -> list[tuple[str, str]]:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("\n## Nodes", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| **")]
    assert rows, "no node rows in the README's Nodes section"
    entries = []
    for row in rows:
        found = ENTRY.findall(row.split(" | ")[0])
        assert found, f"a node row without '**Display name** `NodeId`': {row[:120]}"
        entries.extend(found)
    return entries


def test_readme_names_are_the_display_names():
    wrong = [(node_id, name, NODE_DISPLAY_NAME_MAPPINGS.get(node_id)) for name, node_id in node_table()
             if NODE_DISPLAY_NAME_MAPPINGS.get(node_id) != name]
    assert not wrong, "README name != display name: " + "; ".join(f"{i}: '{a}' vs '{b}'" for i, a, b in wrong)


def test_readme_lists_every_node_once():
    ids = [node_id for _, node_id in node_table()]
    assert sorted(ids) == sorted(NODE_CLASS_MAPPINGS), (sorted(set(NODE_CLASS_MAPPINGS) - set(ids)),
                                                        sorted(set(ids) - set(NODE_CLASS_MAPPINGS)))
    assert len(ids) == len(set(ids))
