"""Overrides from a repository (`override replace --experimental --from repo=NAME`, `--freeze`), override
remove --replace, install --force-replacefiles, apply-live --target/--reset and db diff --base/--changelogs,
on the lab sysroot (the lab's disabled `lab-updates` repository has the newer demo-engine family)."""

from __future__ import annotations

from strata.sysroot.sysroot import Sysroot
from tests.core.test_client import Lab, lab_sysroot

__all__ = ["lab_sysroot"]
FAMILY = ("demo-engine", "demo-engine-common", "demo-engine-plugin")


def test_replace_from_repo_follows_it_and_freeze_pins(lab_sysroot: Lab) -> None:
    box = lab_sysroot
    refused = box.run("override replace", "--from=repo=lab-updates", *FAMILY, check=False)
    assert refused.returncode == 1 and "--experimental" in refused.stderr
    out = box.run("override replace", "--experimental", "--from", "repo=lab-updates", *FAMILY).stdout
    assert "demo-engine 1.13.1-21 -> 1.13.1-22" in out and 'Use "strata override reset"' in out
    origin = box.default_origin()
    assert origin.get_list("overrides", "replace") == ["repo=lab-updates," + ",".join(FAMILY)]
    assert origin.get_list("overrides", "replace-local") == []

    base_diff = box.run("db diff", "--sysroot", str(box.root), "--base").stdout
    assert "demo-engine" not in base_diff  # same base: the replacement is in the layer
    layered = box.run("db diff", "--sysroot", str(box.root), "--changelogs").stdout
    assert "Upgraded:\n  demo-engine 1.13.1-21 -> 1.13.1-22" in layered

    again = box.run("override replace", "--experimental", "--from=repo=lab-updates", "demo-engine", check=False)
    assert again.returncode == 1 and "Override already exists for package 'demo-engine'" in again.stderr
    box.run("override reset", "--all")
    assert box.default_origin().get_list("overrides", "replace") == []

    box.run("override replace", "--experimental", "--freeze", "--from=repo=lab-updates", *FAMILY)
    origin = box.default_origin()
    assert origin.get_list("overrides", "replace") == []
    assert sorted(e.split(":", 1)[1] for e in origin.get_list("overrides", "replace-local")) == [
        "demo-engine-1.13.1-22.x86_64", "demo-engine-common-1.13.1-22.noarch", "demo-engine-plugin-1.13.1-22.x86_64"]
    box.admin("boot")
    assert "demo-engine 1.13.1-22" in box.inside("demo-engine")
    missing = box.run("override replace", "--experimental", "--from=repo=lab-updates", "htop", check=False)
    assert missing.returncode == 1 and 'Package "htop" not found in the base' in missing.stderr


def test_remove_with_replace_force_replacefiles_and_apply_live_reset(lab_sysroot: Lab) -> None:
    box = lab_sysroot
    updates = [str(p) for p in sorted((box.distro / "lab-updates" / "Packages").glob("*.rpm"))]
    replace_args = [f"--replace={path}" for path in updates]
    out = box.run("override remove", "strace", *replace_args).stdout
    assert "Removed:\n  strace-" in out and "demo-engine 1.13.1-21 -> 1.13.1-22" in out
    origin = box.default_origin()
    assert origin.get_list("overrides", "remove") == ["strace"]
    assert len(origin.get_list("overrides", "replace-local")) == 3
    box.run("reset", "--overrides")
    assert box.default_origin().get_list("overrides", "remove") == []

    local = str(sorted((box.distro / "lab" / "Packages").glob("tree-*.rpm"))[0])
    box.run("install", "--force-replacefiles", local)
    origin = box.default_origin()
    assert [e.split(":", 1)[1] for e in origin.get_list("packages", "requested-local-fileoverride")] == [
        "tree-2.1.0-1.x86_64"]
    assert origin.get_list("packages", "requested-local") == []

    sysroot = Sysroot.open(box.root)
    booted = sysroot.booted()
    assert booted is not None
    tree = sysroot.deployment_dir(booted) / "usr" / "bin" / "tree"
    assert "Successfully updated running filesystem tree." in box.run("apply-live").stdout
    assert tree.exists()
    reset = box.run("apply-live", "--reset").stdout
    assert "Removed:\n  tree-2.1.0-1.x86_64" in reset and not tree.exists()
    pending = Sysroot.open(box.root).deployments()[0]
    box.run("apply-live", f"--target={pending.csum}")
    assert tree.exists()
    both = box.run("apply-live", "--reset", "--target", pending.csum, check=False)
    assert both.returncode == 1 and "Cannot specify both --target and --reset" in both.stderr
