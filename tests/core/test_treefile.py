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
    # rpm-ostree's order: of several includes the later one's lists come first, the includer's last
    assert tf.packages == ["htop", "bash", "coreutils", "nano", "demo-engine >= 1.13", "strace"]
    assert tf.get("postprocess") == ["echo extra", "echo base", "echo top"]
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


@pytest.mark.parametrize(("text", "message"), [
    ('packages: "bash"\n', "treefile key 'packages' must be a list of strings"),
    ('repos: "lab"\n', "treefile key 'repos' must be a list of strings"),
    ("ref: 123\n", "treefile key 'ref' must be a string"),
    ("packages: [bash, 3]\n", "treefile key 'packages' must be a list of strings"),
    ('recommends: "no"\n', "treefile key 'recommends' must be a boolean"),
    ("add-commit-metadata: [a]\n", "treefile key 'add-commit-metadata' must be a map"),
    ('packages-x86_64: "bash"\n', "treefile key 'packages-x86_64' must be a list of strings"),
    ("conditional-include: [x]\n", "treefile key 'conditional-include' must be a list of maps"),
])
def test_types_are_checked(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        load_treefile(write(tmp_path / "t.yaml", text))


@pytest.mark.parametrize(("name", "text"), [
    ("t.yaml", "packages: " + "[" * 100_000 + "]" * 100_000 + "\n"),
    ("t.json", '{"packages": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    ("t.yaml", "packages: " + "[" * 70 + "]" * 70 + "\n"),
    ("t.yaml", "add-commit-metadata:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 200)) + " " * 200 + "x\n"),
])
def test_deep_nesting_is_one_line_error(tmp_path: Path, name: str, text: str) -> None:
    with pytest.raises(InvalidInputError, match="nested more than 64 levels") as info:
        load_treefile(write(tmp_path / name, text))
    assert "\n" not in str(info.value)


def test_alias_expansion_is_bounded(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    text = "add-commit-metadata:\n" + "".join(f"  {line}\n" for line in lines)
    with pytest.raises(InvalidInputError, match="holds more than 1,000,000 values"):
        load_treefile(write(tmp_path / "t.yaml", text))


def test_binary_treefile(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(InvalidInputError, match="not UTF-8 text"):
        load_treefile(path)


def test_dry_run_refuses_a_numeric_ref(tmp_path: Path) -> None:
    import subprocess
    import sys
    treefile = write(tmp_path / "t.json", '{"ref": 123, "packages": ["bash"]}')
    proc = subprocess.run([sys.executable, "-m", "strata.cli.main", "compose", "tree", "--dry-run", "--repo",
                           str(tmp_path / "repo"), str(treefile)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [f"error: {treefile}: treefile key 'ref' must be a string"]
