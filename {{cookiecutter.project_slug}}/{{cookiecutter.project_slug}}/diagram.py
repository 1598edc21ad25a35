"""`python -m <package> diagram`: the bot's flow as Mermaid, read from the nodes' annotations.

The README embeds the output between the `flow:begin` / `flow:end` markers; a test fails when
it is out of date, so the flow shown on the repository page is always the code's.
"""

from __future__ import annotations

from botnodes import FlowGraph

from .nodes import Start, nodes_dict

BEGIN_MARKER = "<!-- flow:begin (python -m {package} diagram --readme README.md) -->"
END_MARKER = "<!-- flow:end -->"


def flow_graph() -> FlowGraph:
    return FlowGraph(nodes_dict, Start)


def mermaid() -> str:
    """The flow diagram (needs no settings, Redis or token: only the node classes)."""
    return flow_graph().mermaid()


def readme_block(package: str) -> str:
    """What sits between the README's markers, markers included."""
    return "\n".join(
        [
            BEGIN_MARKER.format(package=package),
            "```mermaid",
            mermaid().rstrip("\n"),
            "```",
            END_MARKER,
        ]
    )


def replace_in_readme(text: str, package: str) -> str:
    """`text` (a README) with the block between the markers brought up to date."""
    begin = text.index(BEGIN_MARKER.format(package=package))
    end = text.index(END_MARKER, begin) + len(END_MARKER)
    return text[:begin] + readme_block(package) + text[end:]
