"""Every key rpm-ostree documents is implemented (a test shows its effect) or refused with one message."""

from __future__ import annotations

import importlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from strata.core import composepasswd, layout
from strata.core.compose import compose_postprocess, repo_variables
from strata.core.lockfile import load_lockfiles
from strata.core.packagefilter import lang_wanted
from strata.core.treefile import Treefile, host_basearch, load_treefile
from strata.core.treefile_keys import DOCUMENTED_KEYS, IMPLEMENTED, REFUSED, refusal
from strata.core.version import next_version
from strata.errors import InvalidInputError, StrataError
from strata.packages.rpmmd import parse_repo_files

KEYS = "tests.core.test_compose_keys"
COMPOSE = "tests.core.test_compose"
HERE = "tests.core.test_treefile_keys"
TREEFILE = "tests.core.test_treefile"
# Where the effect of each implemented key is shown: (module, test function).
EFFECTS: dict[str, tuple[str, str]] = {
    "edition": (HERE, "test_edition_and_container_imply_defaults"),
    "ref": (COMPOSE, "test_second_compose_reports_no_changes"),
    "metadata": (HERE, "test_metadata_and_arch_include_and_bootstrap_packages"),
    "gpg-key": (KEYS, "test_gpg_key_signs_the_commit"),
    "gpg_key": (HERE, "test_legacy_spellings"),
    "repos": (COMPOSE, "test_errors_move_no_ref"),
    "selinux": (HERE, "test_restricted_values"),
    "ignore-devices": (HERE, "test_device_nodes_are_dropped"),
    "ima": (HERE, "test_restricted_values"),
    "boot-location": (KEYS, "test_preserve_passwd_and_boot_location_modules"),
    "boot_location": (HERE, "test_legacy_spellings"),
    "etc-group-members": (COMPOSE, "test_postprocessing_keys"),
    "install-langs": (KEYS, "test_install_langs"),
    "mutate-os-release": (COMPOSE, "test_postprocessing_keys"),
    "documentation": (KEYS, "test_documentation_recommends_and_exclude"),
    "packages": (COMPOSE, "test_real_rpm_lists_exactly_the_solved_set"),
    "packages-$basearch": (TREEFILE, "test_includes_merge_lists_sets_maps_and_scalars"),
    "exclude-packages": (KEYS, "test_documentation_recommends_and_exclude"),
    "repo-packages": (KEYS, "test_repo_packages_and_lockfile"),
    "ostree-layers": (KEYS, "test_ostree_layers"),
    "ostree-override-layers": (KEYS, "test_ostree_layers"),
    "container-cmd": (KEYS, "test_commit_metadata_keys"),
    "bootstrap_packages": (HERE, "test_metadata_and_arch_include_and_bootstrap_packages"),
    "recommends": (KEYS, "test_documentation_recommends_and_exclude"),
    "units": (KEYS, "test_units"),
    "default-target": (COMPOSE, "test_postprocessing_keys"),
    "default_target": (HERE, "test_legacy_spellings"),
    "initramfs-args": (KEYS, "test_commit_metadata_keys"),
    "rpmdb": (HERE, "test_restricted_values"),
    "rpmdb-normalize": (HERE, "test_restricted_values"),
    "cliwrap": (HERE, "test_restricted_values"),
    "readonly-executables": (KEYS, "test_readonly_executables"),
    "remove-files": (COMPOSE, "test_postprocessing_keys"),
    "remove-from-packages": (KEYS, "test_remove_from_packages"),
    "preserve-passwd": (KEYS, "test_preserve_passwd_and_boot_location_modules"),
    "check-passwd": (HERE, "test_check_passwd_and_ignore_removed_users"),
    "check-groups": (KEYS, "test_check_groups_refuses_a_missing_group_that_owns_files"),
    "ignore-removed-users": (HERE, "test_check_passwd_and_ignore_removed_users"),
    "ignore-removed-groups": (KEYS, "test_preserve_passwd_and_boot_location_modules"),
    "releasever": (HERE, "test_releasever_and_repovars_reach_repo_files"),
    "automatic-version-prefix": (KEYS, "test_preserve_passwd_and_boot_location_modules"),
    "automatic_version_prefix": (HERE, "test_legacy_spellings"),
    "automatic-version-suffix": (KEYS, "test_preserve_passwd_and_boot_location_modules"),
    "add-commit-metadata": (KEYS, "test_commit_metadata_keys"),
    "postprocess-script": (COMPOSE, "test_postprocessing_keys"),
    "postprocess": (COMPOSE, "test_postprocessing_keys"),
    "include": (TREEFILE, "test_includes_merge_lists_sets_maps_and_scalars"),
    "arch-include": (HERE, "test_metadata_and_arch_include_and_bootstrap_packages"),
    "conditional-include": (HERE, "test_included_file_sees_the_includers_variables"),
    "container": (HERE, "test_postprocess_of_a_container_and_layout_keys"),
    "add-files": (COMPOSE, "test_postprocessing_keys"),
    "tmp-is-dir": (HERE, "test_postprocess_of_a_container_and_layout_keys"),
    "machineid-compat": (HERE, "test_postprocess_of_a_container_and_layout_keys"),
    "variables": (HERE, "test_included_file_sees_the_includers_variables"),
    "repo-metadata": (KEYS, "test_commit_metadata_keys"),
    "advisories-metadata": (HERE, "test_restricted_values"),
    "lockfile-repos": (KEYS, "test_repo_packages_and_lockfile"),
    "repovars": (HERE, "test_releasever_and_repovars_reach_repo_files"),
    "sysusers": (KEYS, "test_sysusers_and_boot_location_new"),
    "opt-usrlocal": (HERE, "test_postprocess_of_a_container_and_layout_keys"),
    "no-initramfs": (HERE, "test_no_initramfs"),
}
SAMPLE_VALUES: dict[str, Any] = {"selinux-label-version": 1, "cliwrap-binaries": ["kernel-install"],
                                 "platform-module": "platform:f40"}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_every_documented_key_is_implemented_or_refused(tmp_path: Path) -> None:
    implemented = {k for k, v in DOCUMENTED_KEYS.items() if v.status == IMPLEMENTED}
    refused = {k for k, v in DOCUMENTED_KEYS.items() if v.status == REFUSED}
    assert implemented | refused == set(DOCUMENTED_KEYS)
    assert set(EFFECTS) == implemented
    for key, (module, name) in EFFECTS.items():
        assert callable(getattr(importlib.import_module(module), name)), (key, module, name)
    for key in sorted(refused):
        path = write(tmp_path / "t.json", json.dumps({"ref": "x", key: SAMPLE_VALUES[key]}))
        with pytest.raises(InvalidInputError) as info:
            load_treefile(path)
        assert str(info.value) == f"{path}: {refusal(key)}"


@pytest.mark.parametrize(("key", "value"), [
    ("selinux", True), ("ima", True), ("cliwrap", True), ("rpmdb-normalize", True), ("rpmdb", "host"),
    ("rpmdb", "bdb"), ("advisories-metadata", "inline"), ("boot-location", "kernel-install"),
    ("ignore-devices", False), ("sysusers", "none"), ("edition", "2030"), ("rojig", {"name": "x"}),
])
def test_restricted_values(tmp_path: Path, key: str, value: Any) -> None:
    path = write(tmp_path / "t.json", json.dumps({"ref": "x", key: value}))
    with pytest.raises(InvalidInputError, match="is not supported by strata"):
        load_treefile(path)
    accepted = DOCUMENTED_KEYS[key].values if key in DOCUMENTED_KEYS else None
    if accepted:  # the value strata honours loads
        assert load_treefile(write(tmp_path / "ok.json", json.dumps({key: accepted[0]}))).get(key) == accepted[0]


def test_included_file_sees_the_includers_variables(tmp_path: Path) -> None:
    write(tmp_path / "dev.yaml", "packages: [strace]\n")
    write(tmp_path / "common.yaml", "conditional-include:\n  - if: prod == false\n    include: dev.yaml\n"
                                    "variables: {prod: true, other: 1}\n")
    top = write(tmp_path / "top.yaml", "variables: {prod: false}\ninclude: common.yaml\npackages: [bash]\n")
    treefile = load_treefile(top)
    assert treefile.packages == ["strace", "bash"]  # the includer's prod (false) wins over common's own


def test_includer_conditions_see_included_variables(tmp_path: Path) -> None:
    write(tmp_path / "vars.yaml", "variables: {flavor: dev}\n")
    write(tmp_path / "dev.yaml", "packages: [strace]\n")
    top = write(tmp_path / "top.yaml", "include: vars.yaml\nconditional-include:\n"
                                       "  - if: flavor == \"dev\"\n    include: dev.yaml\npackages: [bash]\n")
    assert load_treefile(top).packages == ["strace", "bash"]
    with pytest.raises(InvalidInputError, match="unknown variable in condition: nope"):
        load_treefile(write(tmp_path / "bad.yaml", "conditional-include:\n  - if: nope == 1\n    include: dev.yaml\n"))


def test_edition_and_container_imply_defaults(tmp_path: Path) -> None:
    edition = load_treefile(write(tmp_path / "e.yaml", "edition: '2024'\n"))
    assert edition.get("boot-location") == "modules" and edition.get("tmp-is-dir") is True
    assert load_treefile(write(tmp_path / "o.yaml", "edition: '2024'\nboot-location: new\n")).get(
        "boot-location") == "new"
    container = load_treefile(write(tmp_path / "c.yaml", "container: true\n"))
    assert container.get("preserve-passwd") is False and container.get("check-passwd") == {"type": "none"}


def test_legacy_spellings(tmp_path: Path) -> None:
    treefile = load_treefile(write(tmp_path / "l.yaml", "gpg_key: abc\nboot_location: modules\n"
                                                        "default_target: x.target\nautomatic_version_prefix: '3'\n"))
    assert (treefile.get("gpg-key"), treefile.get("boot-location")) == ("abc", "modules")
    assert (treefile.get("default-target"), treefile.get("automatic-version-prefix")) == ("x.target", "3")


def test_metadata_and_arch_include_and_bootstrap_packages(tmp_path: Path) -> None:
    write(tmp_path / "arch.yaml", "packages: [archpkg]\n")
    top = write(tmp_path / "t.yaml", f"variables: {{v: lab}}\nmetadata: {{m: '${{v}}'}}\n"
                                     f"arch-include: {{{host_basearch()}: arch.yaml, s390x: missing.yaml}}\n"
                                     "bootstrap_packages: [boot]\npackages: [bash]\n")
    treefile = load_treefile(top)
    assert treefile.get("metadata") == {"m": "lab"}
    assert treefile.packages == ["archpkg", "bash", "boot"]


def test_releasever_and_repovars_reach_repo_files(tmp_path: Path) -> None:
    write(tmp_path / "r.repo", "[r]\nbaseurl=http://mirror.invalid/$releasever/$flavor/$basearch/\n")
    treefile = load_treefile(write(tmp_path / "t.yaml", "releasever: 40\nrepovars: {flavor: lab}\n"))
    [config] = parse_repo_files(tmp_path, repo_variables(treefile))
    assert config.baseurl == f"http://mirror.invalid/40/lab/{host_basearch()}/"
    with pytest.raises(InvalidInputError, match='repo var "releasever" invalid'):
        load_treefile(write(tmp_path / "b.yaml", "repovars: {releasever: '1'}\n"))


def _accounts_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/passwd").write_text("bin:x:1:1::/:/sbin/nologin\n")
    owned = root / "usr/lib/owned"
    owned.write_text("")
    os.chown(owned, 4242, 4242)
    return root


def test_check_passwd_and_ignore_removed_users(tmp_path: Path) -> None:
    root = _accounts_root(tmp_path)
    lines: list[str] = []

    def check(spec: dict[str, Any], ignored: list[str]) -> None:
        data = {"check-passwd": {"type": "data", "entries": spec}, "ignore-removed-users": ignored}
        composepasswd.check_accounts(root, Treefile(tmp_path / "t.json", data, "x86_64"), None, None,  # type: ignore[arg-type]
                                     lines.append)

    with pytest.raises(StrataError, match=r"^passwd UID changed: bin \(7 to 1\)$"):
        check({"bin": 7}, [])
    with pytest.raises(StrataError, match=r"^User missing from new passwd file: gone$"):
        check({"bin": [1, 1], "gone": 4242}, [])  # uid 4242 still owns a file
    check({"bin": [1, 1], "gone": 4242}, ["gone"])
    check({"unused": 777}, [])
    assert lines == ["Ignored user missing from new passwd file: gone",
                     "Unused user removed from new passwd file: unused"]


def test_device_nodes_are_dropped(tmp_path: Path) -> None:
    os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (tmp_path / "file").write_text("kept\n")
    lines: list[str] = []
    layout.remove_device_nodes(tmp_path, lines.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"] and lines == ["Ignoring device file /null"]


def _tiny_root(tmp_path: Path, *, initramfs: bool) -> Path:
    root = tmp_path / "rootfs"
    modules = root / "usr/lib/modules/5.0"
    modules.mkdir(parents=True)
    (modules / "vmlinuz").write_text("kernel\n")
    if initramfs:
        (modules / "initramfs.img").write_text("initramfs\n")
    (root / "usr/etc").mkdir()
    (root / "usr/etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nbin:x:1:1::/:/sbin/nologin\n")
    return root


def test_no_initramfs(tmp_path: Path) -> None:
    root = _tiny_root(tmp_path, initramfs=False)
    with pytest.raises(StrataError, match=r"^kernel 5\.0 has no initramfs\.img$"):
        compose_postprocess(root, None, lambda _line: None)
    compose_postprocess(root, write(tmp_path / "t.json", '{"no-initramfs": true}'), lambda _line: None)
    assert [p.name[:12] for p in (root / "usr/lib/ostree-boot").iterdir()] == ["vmlinuz-5.0-"]


def test_postprocess_of_a_container_and_layout_keys(tmp_path: Path) -> None:
    root = _tiny_root(tmp_path, initramfs=False)
    (root / "usr/lib/modules/5.0/vmlinuz").unlink()  # a container needs no kernel
    treefile = write(tmp_path / "t.json", json.dumps({"container": True, "machineid-compat": False,
                                                      "opt-usrlocal": "root"}))
    compose_postprocess(root, treefile, lambda _line: None)
    assert (root / "tmp").is_dir() and not (root / "tmp").is_symlink()  # container implies tmp-is-dir
    assert not (root / "usr/etc/machine-id").exists()
    assert not (root / "opt").is_symlink() and not (root / "usr/local").is_symlink()  # opt-usrlocal: root
    assert "bin:x:1:1:" in (root / "usr/lib/passwd").read_text()


def test_lockfile_and_langs_rules(tmp_path: Path) -> None:
    first = write(tmp_path / "a.json", json.dumps({"packages": {"a": {"evr": "1.0-1"}, "b": {"evra": "2-1.noarch"}}}))
    second = write(tmp_path / "b.yaml", "packages: {a: {evr: '1.1-1', digest: 'sha256:00'}}\nmetadata: {}\n")
    locks = {lock.name: lock for lock in load_lockfiles([first, second])}
    assert (locks["a"].evr, locks["a"].digest, locks["b"].arch) == ("1.1-1", "sha256:00", "noarch")
    with pytest.raises(InvalidInputError, match="Key 'packages' not found"):
        load_lockfiles([write(tmp_path / "c.json", "{}")])
    with pytest.raises(InvalidInputError, match="malformed evra"):
        load_lockfiles([write(tmp_path / "d.json", '{"packages": {"x": {"evra": "nodot"}}}')])
    assert lang_wanted("fr", ("fr_FR",)) and lang_wanted("de|fr", ("fr",)) and lang_wanted("de", ("all",))
    assert not lang_wanted("fr_FR", ("fr",)) and not lang_wanted("de", ("fr",))
    assert next_version("7", "7", suffix="-") == "7-1"


@pytest.mark.parametrize(("text", "message"), [
    ("remove-from-packages: [strace]\n", "treefile key 'remove-from-packages' must be a list of lists of strings"),
    ("remove-from-packages: [[strace]]\n", "entries are \\[package, regex, ...\\]"),
    ("remove-from-packages: [[strace, '(']]\n", "invalid regular expression"),
    ("repo-packages: [bash]\n", "treefile key 'repo-packages' must be a list of maps"),
    ("repo-packages: [{repo: r}]\n", "need 'repo'"),
    ("check-passwd: {type: maybe}\n", "type must be one of none, previous, file, data"),
    ("check-groups: {type: file, filename: /etc/group}\n", "relative to the treefile directory"),
    ("check-passwd: {type: data, entries: {bin: x}}\n", "'entries' must map names"),
    ("variables: {v: [1]}\n", "variable 'v' must be a boolean, a number or a string"),
])
def test_new_keys_are_validated(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        load_treefile(write(tmp_path / "t.yaml", text))


def test_docs_list_every_key() -> None:
    text = (Path(__file__).parents[2] / "docs/treefile.md").read_text()
    for key, support in DOCUMENTED_KEYS.items():
        assert f"| `{key}` | {support.status}" in text, key


def test_kickstart_and_finalize_d_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="kickstart treefiles are not supported by strata"):
        load_treefile(write(tmp_path / "t.ks", "%packages\nbash\n%end\n"))
    (tmp_path / "finalize.d").mkdir()
    top = write(tmp_path / "e.yaml", "edition: '2024'\n")
    with pytest.raises(InvalidInputError, match=r"associated directories \(finalize\.d\) are not supported"):
        load_treefile(top)


def test_layout_writes_never_follow_a_package_link_out_of_the_tree(tmp_path: Path) -> None:
    outside = tmp_path / "host-etc"
    outside.mkdir()
    (outside / "passwd").write_text("host:x:0:0::/:/bin/sh\n")
    root = _tiny_root(tmp_path, initramfs=True)
    (root / "usr/etc/passwd").unlink()
    (root / "usr/etc").rmdir()
    (root / "usr/etc").symlink_to(outside)
    with pytest.raises(StrataError, match="/usr/etc in the tree is not a directory"):
        compose_postprocess(root, None, lambda _line: None)
    assert sorted(p.name for p in outside.iterdir()) == ["passwd"]
    assert (outside / "passwd").read_text() == "host:x:0:0::/:/bin/sh\n"
    boot_root = _tiny_root(tmp_path / "b", initramfs=True)
    (boot_root / "usr/lib/ostree-boot").symlink_to(outside)
    with pytest.raises(StrataError, match="/usr/lib/ostree-boot in the tree is not a directory"):
        layout.copy_kernel_to_ostree_boot(boot_root, "5.0", lambda _line: None)
    assert sorted(p.name for p in outside.iterdir()) == ["passwd"]


def test_container_commit_is_not_bootable(tmp_path: Path) -> None:
    from strata.core.compose import STATE_FILE, BuildState, ComposeOptions, compose_commit
    from strata.image.repo import Repo, RepoMode
    root = _tiny_root(tmp_path, initramfs=False)
    (root / "usr/lib/modules/5.0/vmlinuz").unlink()
    treefile = write(tmp_path / "t.json", json.dumps({"ref": "box", "container": True}))
    compose_postprocess(root, treefile, lambda _line: None)
    BuildState("hash", None, [("bash", "0", "5.2", "1", "x86_64")], {}).save(root.parent / STATE_FILE)
    Repo.init(tmp_path / "repo", RepoMode.ARCHIVE)
    result = compose_commit(treefile, root, ComposeOptions(repo=tmp_path / "repo"), lambda _line: None)
    commit = Repo.open(tmp_path / "repo").load_commit(result.commit)
    assert commit.meta("ostree.bootable") is None and commit.meta("ostree.linux") is None
    assert commit.meta("rpmostree.rpmdb.pkglist") == [("bash", "0", "5.2", "1", "x86_64")]
    assert Repo.open(tmp_path / "repo").read_ref("box") == result.commit


def test_preserve_passwd_seeds_from_the_check_file(tmp_path: Path) -> None:
    root = _tiny_root(tmp_path, initramfs=True)
    (tmp_path / "passwd.ref").write_text("bin:x:1:1::/:/sbin/nologin\nsvc:x:555:555::/:/sbin/nologin\n")
    (tmp_path / "group.ref").write_text("bin:x:1:\nsvc:x:555:\nsvc:x:555:\n")  # listed twice: kept once
    data = {"check-passwd": {"type": "file", "filename": "passwd.ref"},
            "check-groups": {"type": "file", "filename": "group.ref"}}
    lines: list[str] = []
    treefile = Treefile(tmp_path / "t.json", data, "x86_64")
    composepasswd.preserve_accounts(root, treefile, None, None, lines.append)  # type: ignore[arg-type]
    passwd = (root / "usr/etc/passwd").read_text().splitlines()
    assert passwd == ["bin:x:1:1::/:/sbin/nologin", "svc:x:555:555::/:/sbin/nologin", "root:x:0:0::/root:/bin/sh"]
    assert (root / "usr/etc/group").read_text().count("svc:x:555:") == 1
    assert lines == ["Preserving /etc/passwd accounts from the check file",
                     "Preserving /etc/group accounts from the check file"]


def test_sysusers_auto_follows_the_trees_rpm_macro(tmp_path: Path) -> None:
    macros = tmp_path / "usr/lib/rpm/macros.d"
    macros.mkdir(parents=True)
    (macros / "macros.other").write_text("%__other /bin/true\n")
    assert not layout.defines_rpm_macro(tmp_path, "__systemd_sysusers")
    (macros / "macros.systemd").write_text("%__systemd_sysusers /usr/bin/systemd-sysusers\n")
    assert layout.defines_rpm_macro(tmp_path, "__systemd_sysusers")


def test_treefile_edits_never_follow_a_package_link_out_of_the_tree(tmp_path: Path) -> None:
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "keep").write_text("host file\n")
    root = _tiny_root(tmp_path, initramfs=True)
    (root / "usr/share").symlink_to(outside)
    (root / "usr/etc/systemd").symlink_to(outside)
    (root / "usr/bin").mkdir()
    (root / "bin").symlink_to("usr/bin")
    (tmp_path / "motd").write_text("hello\n")
    log: list[str] = []
    with pytest.raises(StrataError, match="/usr/share in the tree is not a directory"):
        layout.add_files(root, tmp_path, [["motd", "/usr/share/motd"]], log.append)
    with pytest.raises(StrataError, match="/usr/share in the tree is not a directory"):
        layout.remove_files(root, ["usr/share/keep"], log.append)
    with pytest.raises(StrataError, match="/usr/etc/systemd in the tree is not a directory"):
        layout.enable_units(root, ["x.service"], log.append)
    assert sorted(p.name for p in outside.iterdir()) == ["keep"]
    layout.add_files(root, tmp_path, [["motd", "/bin/motd"], ["motd", "/etc/motd"]], log.append)
    assert (root / "usr/bin/motd").read_text() == "hello\n" and (root / "usr/etc/motd").read_text() == "hello\n"
    layout.remove_files(root, ["bin/motd", "etc/motd"], log.append)
    assert not (root / "usr/bin/motd").exists() and not (root / "usr/etc/motd").exists()
