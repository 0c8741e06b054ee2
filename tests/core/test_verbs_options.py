"""rpm-ostree's options of the layering verbs on the lab sysroot: dry runs that change nothing, --cache-only
refusing downloads, exit 77 when nothing changed, the history, reset -l, uninstall --install/--all, and the
aliases pkg-add and remove."""

from __future__ import annotations

from strata.sysroot.sysroot import Sysroot
from tests.core.test_client import Lab, lab_sysroot

__all__ = ["lab_sysroot"]


def _deployment_keys(box: Lab) -> list[tuple[str, str]]:
    return [d.key for d in Sysroot.open(box.root).deployments()]


def test_dry_run_cache_only_exit_77_and_history(lab_sysroot: Lab) -> None:
    box = lab_sysroot
    before = _deployment_keys(box)
    dry = box.run("install", "--dry-run", "htop")
    assert "Installing " in dry.stdout and "  htop-3.2.2-2.x86_64 (lab)" in dry.stdout
    assert "Exiting because of '--dry-run' option" in dry.stdout
    refused = box.run("install", "-C", "htop", check=False)
    assert refused.returncode == 1 and "--cache-only" in refused.stderr and "htop" in refused.stderr
    assert _deployment_keys(box) == before

    unchanged = box.run("uninstall", "--idempotent", "--unchanged-exit-77", "htop", check=False)
    assert unchanged.returncode == 77 and "No change." in unchanged.stdout
    assert box.run("kargs", "--append-if-missing=rw", "--unchanged-exit-77", check=False).returncode == 77
    assert box.run("kargs", "--delete-if-present=nothere", "--unchanged-exit-77", check=False).returncode == 77
    no_terminal = box.run("kargs", "--editor", check=False)
    assert no_terminal.returncode == 1 and "needs a terminal" in no_terminal.stderr

    out = box.run("pkg-add", "htop").stdout  # rpm-ostree's old name of install
    assert "Added:\n  htop-3.2.2-2.x86_64" in out and 'Run "strata admin boot --sysroot' in out
    box.run("kargs", "--append-if-missing=quiet")
    history = box.run("ex history", "--limit", "0").stdout
    assert "CreateCommand: strata install htop" in history and "CreateCommand: strata kargs" in history
    assert history.index("kargs") < history.index("install")  # newest first
    box.admin("boot")
    assert "quiet" in box.run("kargs").stdout.split() and "htop" in box.rpm_qa()

    assert "Packages not found" not in box.run("remove", "htop").stdout  # dnf's name of uninstall
    box.admin("boot")
    assert "htop" not in box.rpm_qa()


def test_reset_parts_and_uninstall_all(lab_sysroot: Lab) -> None:
    box = lab_sysroot
    box.run("install", "htop")
    box.run("override remove", "strace")
    box.run("uninstall", "--install=nano", "htop")  # one change: htop out, nano in
    assert box.default_origin().get_list("packages", "requested") == ["nano"]
    out = box.run("reset", "--overlays").stdout
    assert "Removed:\n  strace-" in out and "nano" not in out  # against the booted deployment
    origin = box.default_origin()
    assert origin.get_list("packages", "requested") == [] and origin.get_list("overrides", "remove") == ["strace"]
    assert box.run("uninstall", "--all", "--unchanged-exit-77", check=False).returncode == 77
    box.run("reset")
    assert box.default_origin().get_list("overrides", "remove") == []
