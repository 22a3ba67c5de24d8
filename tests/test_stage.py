"""Template specs: PACKAGE=VERSION as apt-get takes it, or one Debian relation (python-debian)."""

from __future__ import annotations

import pytest

from tmpl2deb.errors import Tmpl2debError
from tmpl2deb.stage import Source, Spec


@pytest.mark.parametrize(
    ("text", "shown", "fits_1_5"),
    [
        ("tmpl-base", "tmpl-base", True),
        ("tmpl-base=1.5", "tmpl-base=1.5", True),
        ("tmpl-base (>= 1.2)", "tmpl-base (>= 1.2)", True),
        ("tmpl-base(>=1:0.1~rc1)", "tmpl-base (>= 1:0.1~rc1)", False),  # the epoch counts
        ("tmpl-base (<< 1.5)", "tmpl-base (<< 1.5)", False),
        ("tmpl-base (= 1.5)", "tmpl-base (= 1.5)", True),
    ],
)
def test_spec_is_a_debian_relation(text: str, shown: str, fits_1_5: bool) -> None:
    spec = Spec.parse(text)
    assert str(spec) == shown and spec.satisfied_by("1.5") is fits_1_5


@pytest.mark.parametrize(
    "text",
    ["a | b", "a, b", "tmpl-base [amd64]", "tmpl-base:any (>= 1)", "tmpl-base (=> 1)",
     "tmpl-base (>= )", "tmpl-base (>= 1) x", "tmpl-base (>= v1)", "tmpl-base=", "Bad"],
)  # fmt: skip
def test_spec_refuses_what_is_not_one_template(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(Tmpl2debError):
        Spec.parse(text)
    assert capsys.readouterr().err == ""  # python-debian's own warning is kept quiet


def test_source_deb822_stanza_to_one_line() -> None:
    stanza = ("Types: deb deb-src\nURIs: http://a.example http://b.example\nSuites: bookworm\n"
              "Components: main contrib\nArchitectures: amd64 arm64\n"
              "Signed-By: /etc/keyrings/p.gpg\n\n"
              "Types: deb\nEnabled: no\nURIs: http://c.example\nSuites: x\n"
              "Components: main\n")  # fmt: skip
    options = "[signed-by=/etc/keyrings/p.gpg arch=amd64,arm64]"
    assert [s.line for s in Source.parse_all(stanza)] == [
        f"deb {options} http://{host}.example bookworm main contrib" for host in "ab"
    ]
    one = Source.parse("Types: deb\nURIs: file:/srv/t\nSuites: bookworm\nComponents: main\n")
    assert (one.uri, one.suite, one.components) == ("file:/srv/t", "bookworm", ("main",))
    for bad in (stanza, "Types: deb\nURIs: http://a\nSuites: s\nFoo: 1\n"):
        with pytest.raises(Tmpl2debError):
            Source.parse(bad)
