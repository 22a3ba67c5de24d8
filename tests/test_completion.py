"""The bash completion, generated from the parser, run by a real bash."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import needs_tool, sh
from tmpl2deb.completion import render


def complete(tmp_path: Path, *words: str) -> list[str]:
    """What bash offers for WORDS (the last one being completed)."""
    needs_tool("bash")
    script = tmp_path / "tmpl2deb.bash"
    script.write_text(render())
    quoted = " ".join(f"'{w}'" for w in ("tmpl2deb", *words))
    out: str = sh("bash", "-c", f"source {script}; COMP_WORDS=({quoted}); "
                  f"COMP_CWORD={len(words)}; _tmpl2deb; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                  cwd=tmp_path).stdout  # fmt: skip
    return [line for line in out.splitlines() if line]


@pytest.mark.parametrize(
    ("words", "offered"),
    [
        (("pu",), ["publish"]),
        (("",), ["derive", "diff", "info", "pack", "publish", "remove", "stage", "--debug"]),
        (("-v", "publish", "--re"), ["--repo", "--retain"]),
        (("unpack", "--with"), ["--with-parent"]),
        (("stage", "--source", "x", "--expect-s"), ["--expect-signature"]),
    ],
)
def test_completes_subcommands_and_options(
    tmp_path: Path, words: tuple[str, ...], offered: list[str]
) -> None:
    got = complete(tmp_path, *words)
    assert set(offered) <= set(got), got
    if words[-1]:
        assert all(w.startswith(words[-1]) for w in got), got


def test_completes_files_after_the_subcommand(tmp_path: Path) -> None:
    (tmp_path / "tmpl-base_1.0_amd64.deb").touch()
    assert complete(tmp_path, "info", "tmpl-b") == ["tmpl-base_1.0_amd64.deb"]
