"""`python -m <package> diagram`: a bot's flow as Mermaid, read from its nodes' annotations.

The bot's README embeds the output between the `flow:begin` / `flow:end` markers; a test fails
when it is out of date, so the flow shown on the repository page is always the code's.
"""

from __future__ import annotations

from typing import Any

from botnodes import FlowGraph

from ..telegram.definition import BotDefinition

BEGIN_MARKER = "<!-- flow:begin (python -m {package} diagram --readme README.md) -->"
END_MARKER = "<!-- flow:end -->"


def flow_graph(definition: BotDefinition[Any, Any]) -> FlowGraph:
    """The flow (needs no settings, Redis or token: only the node classes)."""
    return FlowGraph(definition.nodes_dict, definition.start_node)


def readme_block(package: str, graph: FlowGraph) -> str:
    """What sits between the README's markers, markers included."""
    return "\n".join(
        [
            BEGIN_MARKER.format(package=package),
            "```mermaid",
            graph.mermaid().rstrip("\n"),
            "```",
            END_MARKER,
        ]
    )


def replace_in_readme(text: str, package: str, graph: FlowGraph) -> str:
    """`text` (a README) with the block between the markers brought up to date."""
    begin = text.index(BEGIN_MARKER.format(package=package))
    end = text.index(END_MARKER, begin) + len(END_MARKER)
    return text[:begin] + readme_block(package, graph) + text[end:]
