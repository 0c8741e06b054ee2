"""Treefile parsing: includes, merge rules, variables, package entries, errors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from strata.core.treefile import host_basearch, load_treefile, split_package_entries
from strata.core.version import next_version
from strata.errors import InvalidInputError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_includes_merge_lists_sets_maps_and_scalars(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", """
ref: base/ref
packages: [bash, coreutils]
postprocess: ["echo base"]
add-commit-metadata: {a: base, b: base}
variables: {flavor: lab}
""")
    write(tmp_path / "extra.yaml", """
packages: [htop]
postprocess: ["echo extra"]
""")
    top = write(tmp_path / "top.yaml", """
include: [base.yaml, extra.yaml]
ref: lab/${basearch}/${flavor}
packages: ["nano 'demo-engine >= 1.13'", bash]
packages-ARCH: [strace]
packages-nosucharch: [tree]
postprocess: ["echo top"]
add-commit-metadata: {b: top}
""".replace("ARCH", host_basearch()))
    tf = load_treefile(top)
    assert tf.ref == f"lab/{host_basearch()}/lab"
    assert tf.packages == ["bash", "coreutils", "htop", "nano", "demo-engine >= 1.13", "strace"]
    assert tf.get("postprocess") == ["echo base", "echo extra", "echo top"]
    assert tf.get("add-commit-metadata") == {"a": "base", "b": "top"}
    assert [p.name for p in tf.sources] == ["top.yaml", "base.yaml", "extra.yaml"]


def test_conditional_include(tmp_path: Path) -> None:
    write(tmp_path / "docs.yaml", "packages: [man-db]\n")
    top = write(tmp_path / "t.yaml", """
variables: {docs: true, level: 3}
conditional-include:
  - if: docs == true
    include: docs.yaml
  - if: ["level >= 5"]
    include: {packages: [never]}
packages: [bash]
""")
    assert load_treefile(top).packages == ["man-db", "bash"]


@pytest.mark.parametrize(("text", "message"), [
    ("ref: x\nfrobnicate: 1\n", "Unknown fields: frobnicate"),
    ("variables: {basearch: x}\n", "cannot define reserved variable 'basearch'"),
    ("packages: [\"'unterminated\"]\n", "Missing terminating quote"),
    ("packages: [a]\nexclude-packages: [a]\n", "both in packages and exclude-packages"),
    ("add-files: [[a, /usr/local/a]]\n", "Unsupported path in add-files"),
    ("override-remove: [a]\n", "derivation fields are not supported"),
    ("include: missing.yaml\n", "treefile not found"),
    ("ref: [\n", "cannot parse treefile"),
])
def test_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        load_treefile(write(tmp_path / "t.yaml", text))


def test_json_unknown_key_is_error_too(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="Unknown fields: nope"):
        load_treefile(write(tmp_path / "t.json", '{"ref": "x", "nope": 1}'))


def test_include_cycle_refused(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "include: b.yaml\n")
    write(tmp_path / "b.yaml", "include: a.yaml\n")
    with pytest.raises(InvalidInputError, match="included more than once"):
        load_treefile(tmp_path / "a.yaml")


def test_split_package_entries() -> None:
    assert split_package_entries(["a b  c", "'d >= 1.0'"]) == ["a", "b", "c", "d >= 1.0"]


@pytest.mark.parametrize(("prefix", "last", "expected"), [
    ("22", None, "22"), ("22", "22", "22.1"), ("22", "22.1", "22.2"), ("22", "21.5", "22"),
    ("22.1", "22.1", "22.1.1"),
    ("22.<date:%Y>", None, "22.2019.0"), ("22.<date:%Y>", "22.2019.0", "22.2019.1"),
    ("22.<date:%Y>", "22.2018.7", "22.2019.0"),
])
def test_automatic_versions(prefix: str, last: str | None, expected: str) -> None:
    assert next_version(prefix, last, now=datetime(2019, 5, 1, tzinfo=UTC)) == expected
