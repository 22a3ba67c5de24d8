"""The picture in README.md is rendered from its source, and is what the source renders."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import needs_tool, sh

DOC = Path(__file__).resolve().parent.parent / "doc"


def test_flow_picture_renders_from_its_source() -> None:
    needs_tool("dot")
    rendered = sh("dot", "-Tsvg", DOC / "flow.dot").stdout
    assert "<svg" in rendered and "template repository" in rendered
    assert (DOC / "flow.svg").read_text() == rendered, "doc/flow.svg is stale: run make doc"
    readme = (DOC.parent / "README.md").read_text()
    assert "](doc/flow.svg)" in readme
