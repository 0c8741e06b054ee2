"""The lab RPMs are real: the real rpm reads them, strata's reader agrees, libsolv solves them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import rpm_rs

from strata.errors import CorruptionError, NotFoundError, StrataError
from strata.packages.rpmmd import load_metadata, parse_repo_files
from strata.packages.rpmread import RpmPackage, parse_capabilities
from strata.packages.solver import Solver


def rpm_path(lab: Path, prefix: str) -> Path:
    found = sorted((lab / "lab" / "Packages").glob(f"{prefix}-[0-9]*.rpm"))
    assert found, prefix
    return found[0]


def solver_for(lab: Path, tmp_path: Path) -> Solver:
    repos = [r for r in parse_repo_files(lab) if r.id == "lab"]
    return Solver([load_metadata(r, tmp_path / "md", lambda _line: None) for r in repos])


def test_real_rpm_reads_lab_packages(lab: Path) -> None:
    proc = subprocess.run(["rpm", "-qip", str(rpm_path(lab, "htop"))], capture_output=True, text=True, check=True)
    assert "Name        : htop" in proc.stdout


def test_reader_matches_rpm_file_list(lab: Path) -> None:
    path = rpm_path(lab, "test-scripts")
    listing = subprocess.run(["rpm", "-qlp", str(path)], capture_output=True, text=True, check=True).stdout.split()
    pkg = RpmPackage.open(path)
    assert sorted(f.path for f in pkg.files) == sorted(listing)
    payload = {item.path: item for item in pkg.payload()}
    assert set(payload) == set(listing)
    assert pkg.nevra.nevra == "test-scripts-1.0-1.x86_64"
    assert "testsvc" in pkg.scriptlets("pre")[0].body
    assert "post-ran" in pkg.scriptlets("post")[0].body
    assert pkg.header_bytes == path.read_bytes()[:len(pkg.header_bytes)]


def test_payload_content_matches_what_rpm_installs(lab: Path, tmp_path: Path) -> None:
    path = rpm_path(lab, "demo-engine")
    root = tmp_path / "root"
    subprocess.run(["rpm", "--root", str(root), "--dbpath", "/db", "-i", "--force-debian", "--nodeps",
                    "--noscripts", str(path)], check=True, capture_output=True)
    compared = 0
    for item in RpmPackage.open(path).payload():
        if item.mode & 0o170000 == 0o100000:
            assert (root / item.path.lstrip("/")).read_bytes() == item.data
            compared += 1
    assert compared > 0


def test_solver_resolves_base_and_layer(lab: Path, tmp_path: Path) -> None:
    names = [c.nevra.name for c in solver_for(lab, tmp_path).resolve(["bash", "htop"]).install]
    assert {"bash", "htop", "glibc", "ncurses-libs", "libnl-3-200", "filesystem"} <= set(names)
    assert names.index("glibc") < names.index("bash")


def test_solver_explains_problems(lab: Path, tmp_path: Path) -> None:
    with pytest.raises(StrataError, match=r"nothing provides does-not-exist >= 1\.0 needed by test-broken-dep"):
        solver_for(lab, tmp_path).resolve(["test-broken-dep"])
    with pytest.raises(StrataError, match="conflicts with test-conflict"):
        solver_for(lab, tmp_path).resolve(["test-conflict-a", "test-conflict-b"])
    with pytest.raises(NotFoundError, match="Packages not found: nope"):
        solver_for(lab, tmp_path).resolve(["nope"])


def test_solver_provides_recommends_and_versions(lab: Path, tmp_path: Path) -> None:
    names = {c.nevra.name for c in solver_for(lab, tmp_path).resolve(["test-needs-provides"]).install}
    assert "test-provides" in names
    with_rec = {c.nevra.name for c in solver_for(lab, tmp_path).resolve(["test-recommends"]).install}
    without = {c.nevra.name for c in solver_for(lab, tmp_path).resolve(["test-recommends"], recommends=False).install}
    assert "tree" in with_rec and "tree" not in without
    with pytest.raises(NotFoundError):
        solver_for(lab, tmp_path).resolve(["demo-engine > 2.0"])


def test_escaping_payload_path_is_refused(tmp_path: Path) -> None:
    config = rpm_rs.BuildConfig(format=rpm_rs.RpmFormat.V4, compression=rpm_rs.CompressionType.Gzip,
                                compression_level=1, source_date=1700000000)
    builder = rpm_rs.PackageBuilder("evil", "1.0", "MIT", "x86_64", "evil")
    builder.using_config(config)
    builder.release("1")
    builder.description("escapes")
    builder.with_file_contents(b"x", rpm_rs.FileOptions.new("/usr/../../etc/evil", user="root", group="root",
                                                             permissions=0o644))
    path = Path(str(builder.build().write_to(str(tmp_path))))
    with pytest.raises(StrataError, match="escapes the root"):
        list(RpmPackage.open(path).payload())


def test_corrupt_rpm_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.rpm"
    bad.write_bytes(b"\xed\xab\xee\xdb" + b"\0" * 200)
    with pytest.raises(CorruptionError):
        RpmPackage.open(bad)


def test_capabilities_text_to_xattr() -> None:
    assert parse_capabilities("cap_net_raw=ep").hex() == "0100000200200000000000000000000000000000"
