"""The embedded lab distribution: a small runnable set of RPMs, made from the Debian packages installed on
this machine, plus synthetic packages that exercise scriptlets, conflicts, versions and provides.

    python -m strata.packages.labdistro OUT

writes OUT/lab and OUT/lab-updates (RPMs and rpm-md metadata, via createrepo_c), OUT/strata-lab.repo and
OUT/lab.yaml (a treefile for `strata compose tree`). Same machine, same output: build times are fixed."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import rpm_rs

from strata.errors import StrataError

SOURCE_DATE = 1700000000
ARCH = "x86_64"
KERNEL_VERSION = "6.1.0-1.lab.x86_64"
LIBDIR = "/usr/lib/x86_64-linux-gnu"
FAMILY_VERSION = "1.13.1"
DPKG_INFO = Path("/var/lib/dpkg/info")
SKIPPED_PREFIXES = ("/usr/share/doc/", "/usr/share/man/", "/usr/share/info/", "/usr/share/locale/",
                    "/usr/share/lintian/", "/usr/share/bug/", "/usr/share/bash-completion/", "/usr/share/menu/",
                    "/usr/share/applications/", "/usr/share/icons/", "/usr/share/pixmaps/")
MERGED = {"/bin": "/usr/bin", "/sbin": "/usr/sbin", "/lib": "/usr/lib", "/lib64": "/usr/lib64"}
# Debian package(s) -> RPM name, and the RPMs whose contents come from Debian.
DEB_GROUPS: dict[str, list[str]] = {
    "glibc": ["libc6"], "glibc-common": ["libc-bin"], "bash": ["bash"], "coreutils": ["coreutils"],
    "grep": ["grep"], "sed": ["sed"], "ncurses-libs": ["libncursesw6", "libtinfo6"], "ncurses-base": ["ncurses-base"],
    "htop": ["htop"], "nano": ["nano"], "strace": ["strace"], "tree": ["tree"],
}
BASE_PACKAGES = ["filesystem", "setup", "strata-release", "kernel", "glibc", "glibc-common", "bash", "coreutils",
                 "grep", "sed", "ncurses-libs", "ncurses-base"]
LAYERABLE = ["htop", "nano", "strace", "tree"]
EXTRA_REQUIRES = {"glibc": ["filesystem"], "bash": ["setup"], "setup": ["filesystem"],
                  "strata-release": ["filesystem"]}
APT_PACKAGES = [deb for name in ("glibc", "glibc-common", "bash", "coreutils", "grep", "sed", "ncurses-libs",
                                 "ncurses-base", *LAYERABLE) for deb in DEB_GROUPS[name]]


@dataclass
class Entry:
    path: str
    kind: str  # file, dir, symlink
    mode: int = 0o644
    source: Path | None = None
    data: bytes | None = None
    target: str = ""
    user: str = "root"
    group: str = "root"
    config: bool = False


@dataclass
class Package:
    name: str
    version: str
    release: str = "1"
    epoch: int = 0
    arch: str = ARCH
    summary: str = ""
    entries: dict[str, Entry] = field(default_factory=dict)
    requires: set[str] = field(default_factory=set)
    provides: set[str] = field(default_factory=set)
    conflicts: set[str] = field(default_factory=set)
    recommends: set[str] = field(default_factory=set)
    pre: str = ""
    post: str = ""
    file_triggers: list[tuple[str, str]] = field(default_factory=list)  # %transfiletriggerin (prefix, script)

    def add(self, entry: Entry) -> None:
        self.entries.setdefault(entry.path, entry)

    def add_file(self, path: str, data: bytes, mode: int = 0o644, *, config: bool = False) -> None:
        self.add(Entry(path, "file", mode, data=data, config=config))


# ---------------------------------------------------------------- Debian packages


def _dpkg_file(deb: str, suffix: str) -> Path | None:
    for name in (f"{deb}:amd64.{suffix}", f"{deb}.{suffix}"):
        if (DPKG_INFO / name).exists():
            return DPKG_INFO / name
    return None


def deb_version(deb: str) -> tuple[int, str, str]:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", deb], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise StrataError(f"Debian package {deb} is not installed (run tools/setup.sh)")
    text = proc.stdout.strip()
    epoch, _, rest = text.rpartition(":") if ":" in text else ("0", "", text)
    upstream, dash, revision = rest.rpartition("-")
    if not dash:
        upstream, revision = rest, "1"
    clean = str.maketrans({"-": "_", ":": "_"})
    return int(epoch or 0), upstream.translate(clean), revision.translate(clean)


def merged_usr(path: str) -> str:
    for old, new in MERGED.items():
        if path == old or path.startswith(old + "/"):
            return new + path[len(old):]
    return path


def deb_entries(deb: str) -> list[Entry]:
    listing = _dpkg_file(deb, "list")
    if listing is None:
        raise StrataError(f"Debian package {deb} is not installed (run tools/setup.sh)")
    conffiles_path = _dpkg_file(deb, "conffiles")
    conffiles = set(conffiles_path.read_text().split()) if conffiles_path else set()
    entries = []
    for raw in listing.read_text().splitlines():
        if raw in ("/.", "") or raw.startswith(SKIPPED_PREFIXES):
            continue
        path = merged_usr(raw)
        host = Path(path)  # on a merged-/usr host, /lib itself is a symlink: look at the real place
        if not (host.exists() or host.is_symlink()):
            continue
        st = host.lstat()
        if host.is_symlink():
            entries.append(Entry(path, "symlink", target=os.readlink(host)))
        elif host.is_dir():
            entries.append(Entry(path, "dir", st.st_mode & 0o7777))
        elif host.is_file():
            entries.append(Entry(path, "file", st.st_mode & 0o7777, source=host, config=raw in conffiles))
    return entries


def elf_sonames(path: Path) -> tuple[list[str], list[str]]:
    """(NEEDED, SONAME) of an ELF file, empty for anything else."""
    with open(path, "rb") as f:
        if f.read(4) != b"\x7fELF":
            return [], []
    proc = subprocess.run(["readelf", "-d", "-W", str(path)], capture_output=True, text=True, check=False)
    needed: list[str] = []
    soname: list[str] = []
    for line in proc.stdout.splitlines():
        if "(NEEDED)" in line or "(SONAME)" in line:
            value = line.split("[", 1)[1].rstrip("]")
            (needed if "(NEEDED)" in line else soname).append(value)
    return needed, soname


def _soname_dep(soname: str) -> str:
    return f"{soname}()(64bit)"


def add_elf_dependencies(pkg: Package) -> None:
    for entry in pkg.entries.values():
        if entry.kind != "file" or entry.source is None:
            continue
        needed, sonames = elf_sonames(entry.source)
        pkg.requires.update(_soname_dep(n) for n in needed)
        pkg.provides.update(_soname_dep(s) for s in sonames)
    pkg.requires -= pkg.provides


def package_from_debs(name: str, debs: list[str]) -> Package:
    epoch, version, release = deb_version(debs[0])
    pkg = Package(name, version, release, epoch, summary=f"{name} (repackaged from Debian {', '.join(debs)})")
    for deb in debs:
        for entry in deb_entries(deb):
            pkg.add(entry)
    add_elf_dependencies(pkg)
    return pkg


def library_closure(packages: dict[str, Package]) -> None:
    """Add one package per Debian library package needed (by soname) and not provided yet."""
    while True:
        provided = {p for pkg in packages.values() for p in pkg.provides}
        missing = sorted({r for pkg in packages.values() for r in pkg.requires
                          if r.endswith("()(64bit)") and r not in provided})
        added = False
        for dep in missing:
            soname = dep[: -len("()(64bit)")]
            deb = _deb_owning_library(soname)
            if deb is None or deb in packages:
                continue
            packages[deb] = package_from_debs(deb, [deb])
            added = True
        if not added:
            return


def _deb_owning_library(soname: str) -> str | None:
    for directory in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"):
        proc = subprocess.run(["dpkg-query", "-S", f"{directory}/{soname}"], capture_output=True, text=True,
                              check=False)
        if proc.returncode == 0:
            return proc.stdout.split(":", 1)[0].strip()
    return None


# ---------------------------------------------------------------- generated packages


def filesystem_package() -> Package:
    pkg = Package("filesystem", "3.18", summary="The basic directory layout")
    for path in ("/usr", "/usr/bin", "/usr/sbin", "/usr/lib", "/usr/lib64", LIBDIR, "/usr/share", "/usr/libexec",
                 "/usr/lib/modules", "/usr/local", "/etc", "/etc/yum.repos.d", "/var", "/home", "/srv", "/mnt",
                 "/media", "/opt", "/proc", "/sys", "/dev", "/run", "/boot"):
        pkg.add(Entry(path, "dir", 0o755))
    pkg.add(Entry("/root", "dir", 0o550))
    pkg.add(Entry("/tmp", "dir", 0o1777))
    for link, target in (("/bin", "usr/bin"), ("/sbin", "usr/sbin"), ("/lib", "usr/lib"), ("/lib64", "usr/lib64")):
        pkg.add(Entry(link, "symlink", target=target))
    pkg.provides.update({"/bin", "/sbin"})
    return pkg


ACCOUNTS = [("root", 0, "/root", "/bin/bash"), ("bin", 1, "/bin", "/sbin/nologin"),
            ("daemon", 2, "/sbin", "/sbin/nologin"), ("adm", 3, "/var/adm", "/sbin/nologin"),
            ("nobody", 65534, "/", "/sbin/nologin")]


def setup_package() -> Package:
    pkg = Package("setup", "2.14.3", summary="System configuration files: accounts, hosts, shells")
    passwd = "".join(f"{n}:x:{i}:{i}:{n}:{home}:{shell}\n" for n, i, home, shell in ACCOUNTS)
    group = "".join(f"{n}:x:{i}:\n" for n, i, _home, _shell in ACCOUNTS)
    shadow = "".join(f"{n}:*:19000:0:99999:7:::\n" for n, *_ in ACCOUNTS)
    gshadow = "".join(f"{n}:::\n" for n, *_ in ACCOUNTS)
    pkg.add_file("/etc/passwd", passwd.encode(), config=True)
    pkg.add_file("/etc/group", group.encode(), config=True)
    pkg.add_file("/etc/shadow", shadow.encode(), 0o000, config=True)
    pkg.add_file("/etc/gshadow", gshadow.encode(), 0o000, config=True)
    pkg.add_file("/etc/nsswitch.conf", b"passwd: files\ngroup: files\nshadow: files\nhosts: files\n", config=True)
    pkg.add_file("/etc/hosts", b"127.0.0.1 localhost\n::1 localhost\n", config=True)
    pkg.add_file("/etc/shells", b"/bin/sh\n/bin/bash\n/usr/bin/sh\n/usr/bin/bash\n", config=True)
    pkg.add_file("/etc/profile", b'export PATH=/usr/local/bin:/usr/bin:/usr/sbin\nexport PS1="[\\u@lab \\W]\\$ "\n',
                 config=True)
    pkg.provides.update({f"user({n})" for n, *_ in ACCOUNTS} | {f"group({n})" for n, *_ in ACCOUNTS})
    return pkg


def release_package() -> Package:
    pkg = Package("strata-release", "1.0", summary="strata lab release files")
    text = ('NAME="Strata Lab"\nID=strata-lab\nVERSION="1 (Lab)"\nVERSION_ID=1\n'
            'PRETTY_NAME="Strata Lab 1 (Lab)"\nHOME_URL="https://example.invalid/strata"\n')
    pkg.add_file("/usr/lib/os-release", text.encode())
    pkg.add(Entry("/etc/os-release", "symlink", target="../usr/lib/os-release"))
    pkg.provides.add("system-release")
    return pkg


def kernel_package() -> Package:
    version, release = KERNEL_VERSION.removesuffix(".x86_64").split("-", 1)
    pkg = Package("kernel", version, release, summary="A stand-in kernel for the lab (not bootable)")
    base = f"/usr/lib/modules/{KERNEL_VERSION}"
    pkg.add(Entry(base, "dir", 0o755))
    pkg.add_file(f"{base}/vmlinuz", f"strata lab stand-in kernel {KERNEL_VERSION}\n".encode() * 64, 0o755)
    pkg.add_file(f"{base}/initramfs.img", f"strata lab stand-in initramfs {KERNEL_VERSION}\n".encode() * 64)
    pkg.add_file(f"{base}/modules.dep", b"")
    return pkg


# The lab's dracut is a stand-in, as its kernel is: `dracut [OPTION...] IMAGE KVER` writes IMAGE as a newc cpio
# (what the kernel unpacks) holding one file whose text (shell-expanded when dracut runs) records what it saw.
_NEWC_WRITER = r"""pad() { [ "$1" -eq 0 ] || head -c $(( 4 - $1 )) /dev/zero; }
member() {
  local namesize=$(( ${#1} + 1 ))
  printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' 1 "$3" 0 0 1 0 "${#2}" 0 0 0 0 "$namesize" 0
  printf '%s\0' "$1"
  pad $(( (110 + namesize) % 4 ))
  printf '%s' "$2"
  pad $(( ${#2} % 4 ))
}
"""


def stand_in_dracut(member: str, body: str) -> str:
    """A dracut stand-in script writing one cpio member named member with body (a shell double-quoted text)."""
    return ('#!/bin/bash\nset -e\nout="${@: -2:1}"\n' f'body="{body}"\n' + _NEWC_WRITER
            + f"{{ member {member} \"$body\" 33188; member 'TRAILER!!!' '' 0; }} > \"$out\"\n")


_LAB_DRACUT = stand_in_dracut("strata-lab-initramfs", "strata lab stand-in initramfs made by dracut\nargs: $*\n"
                              "hostname: $(cat /etc/hostname 2>/dev/null || echo none)\n")


def dracut_package() -> Package:
    """In the lab repository, not in the base: `strata install dracut` then `strata initramfs --enable`."""
    pkg = Package("dracut", "059", "1.lab", summary="A stand-in dracut for the lab (its kernel is a stand-in too)")
    pkg.add_file("/usr/bin/dracut", _LAB_DRACUT.encode(), 0o755)
    pkg.requires.update({"/bin/bash", "coreutils"})
    return pkg


def nss_altfiles_entry(workdir: Path) -> Entry:
    """Compile the lab's altfiles NSS module (see labdata/nss_altfiles.c)."""
    source = Path(__file__).parent / "labdata" / "nss_altfiles.c"
    output = workdir / "libnss_altfiles.so.2"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise StrataError("a C compiler is needed to build the lab's nss_altfiles module (apt-get install gcc)")
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wl,-soname,libnss_altfiles.so.2", "-o", str(output),
                    str(source)], check=True)
    os.utime(output, (SOURCE_DATE, SOURCE_DATE))
    return Entry(f"{LIBDIR}/libnss_altfiles.so.2", "file", 0o755, source=output)


def family_packages(release: str) -> list[Package]:
    evr = f"{FAMILY_VERSION}-{release}"
    engine = Package("demo-engine", FAMILY_VERSION, release, summary="Demo engine (a package family)")
    engine.add_file("/usr/bin/demo-engine",
                    f"#!/bin/sh\necho \"demo-engine {evr}\"\ncat /usr/share/demo-engine/VERSION\n".encode(), 0o755)
    common = Package("demo-engine-common", FAMILY_VERSION, release, arch="noarch", summary="Demo engine data")
    common.add_file("/usr/share/demo-engine/VERSION", f"{evr}\n".encode())
    plugin = Package("demo-engine-plugin", FAMILY_VERSION, release, summary="Demo engine plugin")
    plugin.add_file("/usr/lib/demo-engine/plugin.conf", f"plugin-version={evr}\n".encode())
    engine.requires.update({f"demo-engine-common = {evr}", f"demo-engine-plugin = {evr}"})
    plugin.requires.add(f"demo-engine = {evr}")
    common.requires.add(f"demo-engine = {evr}")
    return [engine, common, plugin]


def test_packages() -> list[Package]:
    scripts = Package("test-scripts", "1.0", summary="Scriptlets: %pre adds a user, %post writes a file")
    scripts.add(Entry("/usr/share/test-scripts", "dir", 0o755))
    scripts.add_file("/usr/share/test-scripts/README", b"test-scripts\n")
    scripts.pre = ("grep -q '^testsvc:' /etc/group || echo 'testsvc:x:990:' >> /etc/group\n"
                   "grep -q '^testsvc:' /etc/passwd || "
                   "echo 'testsvc:x:990:990:test service:/var/lib/testsvc:/sbin/nologin' >> /etc/passwd\n")
    scripts.post = "echo \"post ran with argument $1\" > /usr/share/test-scripts/post-ran\n"
    config = Package("test-config", "1.0", summary="A %config(noreplace) file and a /var directory")
    config.add_file("/etc/test-config/test.conf", b"setting=default\n", config=True)
    config.add(Entry("/var/lib/test-config", "dir", 0o750))
    broken = Package("test-broken-dep", "1.0", summary="Requires something nobody provides")
    broken.requires.add("does-not-exist >= 1.0")
    conflict_a = Package("test-conflict-a", "1.0", summary="Conflicts with test-conflict-b")
    conflict_a.conflicts.add("test-conflict-b")
    conflict_b = Package("test-conflict-b", "1.0", summary="Conflicts with test-conflict-a")
    conflict_b.conflicts.add("test-conflict-a")
    collision = Package("test-file-collision", "1.0", summary="Ships /usr/lib/os-release, like strata-release")
    collision.add_file("/usr/lib/os-release", b'NAME="Collision"\n')
    recommends = Package("test-recommends", "1.0", summary="Recommends tree")
    recommends.add_file("/usr/share/test-recommends/README", b"recommends tree\n")
    recommends.recommends.add("tree")
    noarch = Package("test-noarch", "1.0", arch="noarch", summary="A noarch shell script")
    noarch.add_file("/usr/bin/test-noarch", b"#!/bin/sh\necho test-noarch works\n", 0o755)
    provides = Package("test-provides", "1.0", summary="Provides a virtual name and a file")
    provides.add_file("/usr/libexec/test-provides/helper", b"#!/bin/sh\necho helper\n", 0o755)
    provides.provides.update({"test-virtual = 1.0", "/usr/libexec/test-provides/helper"})
    needs = Package("test-needs-provides", "1.0", summary="Requires test-virtual and the helper file")
    needs.add_file("/usr/share/test-needs-provides/README", b"needs provides\n")
    needs.requires.update({"test-virtual >= 1.0", "/usr/libexec/test-provides/helper"})
    trigger = Package("test-trigger", "1.0", summary="A %transfiletriggerin on /usr/lib/demo-engine")
    trigger.add_file("/usr/share/test-trigger/README", b"watches /usr/lib/demo-engine\n")
    trigger.file_triggers.append(("/usr/lib/demo-engine", "cat > /usr/share/test-trigger/seen\n"))
    return [scripts, config, broken, conflict_a, conflict_b, collision, recommends, noarch, provides, needs,
            trigger]


# ---------------------------------------------------------------- writing


def _flags(op: str) -> object:
    f = rpm_rs.DependencyFlags
    return {">=": f.GREATER | f.EQUAL, "<=": f.LESS | f.EQUAL, "=": f.EQUAL, ">": f.GREATER, "<": f.LESS}[op]


def _add_deps(add: object, deps: Iterable[str]) -> None:
    assert callable(add)
    for dep in sorted(deps):
        parts = dep.split()
        if len(parts) == 3:
            add(parts[0], parts[2], _flags(parts[1]))
        else:
            add(dep)


def build_rpm(pkg: Package, outdir: Path) -> Path:
    config = rpm_rs.BuildConfig(format=rpm_rs.RpmFormat.V4, compression=rpm_rs.CompressionType.Zstd,
                                compression_level=3, source_date=SOURCE_DATE)
    builder = rpm_rs.PackageBuilder(pkg.name, pkg.version, "GPL-2.0-or-later", pkg.arch, pkg.summary or pkg.name)
    builder.using_config(config)
    builder.release(pkg.release)
    builder.description(pkg.summary or pkg.name)
    builder.build_host("strata-lab")
    builder.vendor("strata lab")
    if pkg.epoch:
        builder.epoch(pkg.epoch)
    for entry in sorted(pkg.entries.values(), key=lambda e: e.path):
        if entry.kind == "dir":
            builder.with_dir_entry(rpm_rs.FileOptions.dir(entry.path, user=entry.user, group=entry.group,
                                                          permissions=entry.mode))
        elif entry.kind == "symlink":
            builder.with_symlink(rpm_rs.FileOptions.symlink(entry.path, entry.target, user=entry.user,
                                                            group=entry.group))
        else:
            options = rpm_rs.FileOptions.new(entry.path, user=entry.user, group=entry.group, permissions=entry.mode,
                                             config=entry.config, noreplace=entry.config)
            if entry.source is not None:
                builder.with_file(str(entry.source), options)
            else:
                builder.with_file_contents(entry.data or b"", options)
    for kind, deps in (("requires", pkg.requires), ("provides", pkg.provides), ("conflicts", pkg.conflicts),
                       ("recommends", pkg.recommends)):
        _add_deps(getattr(builder, kind), deps)
    if pkg.pre:
        builder.pre_install_script(pkg.pre)
    if pkg.post:
        builder.post_install_script(pkg.post)
    for prefix, script in pkg.file_triggers:
        builder.trans_file_trigger_in(prefix, script)
    written = Path(str(builder.build().write_to(str(outdir))))
    os.utime(written, (SOURCE_DATE, SOURCE_DATE))
    return written


def write_repo(directory: Path, packages: list[Package]) -> None:
    """Build the RPMs and their metadata beside directory, then rename it into place."""
    partial = directory.with_name(f".{directory.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "Packages").mkdir(parents=True)
    for pkg in packages:
        build_rpm(pkg, partial / "Packages")
    createrepo = shutil.which("createrepo_c")
    if createrepo is None:
        raise StrataError("createrepo_c is not installed (run tools/setup.sh)")
    subprocess.run([createrepo, "--quiet", "--no-database", "--revision", str(SOURCE_DATE),
                    "--set-timestamp-to-revision", str(partial)], check=True)
    summary = {"packages": sorted(p.name for p in packages)}
    (partial / "corpus.json").write_text(json.dumps(summary, indent=1) + "\n")
    shutil.rmtree(directory, ignore_errors=True)
    os.rename(partial, directory)


def lab_packages(workdir: Path) -> dict[str, Package]:
    packages: dict[str, Package] = {p.name: p for p in (filesystem_package(), setup_package(), release_package(),
                                                        kernel_package())}
    for name, debs in DEB_GROUPS.items():
        packages[name] = package_from_debs(name, debs)
    bash = packages["bash"]
    bash.add(Entry("/usr/bin/sh", "symlink", target="bash"))
    bash.provides.update({"/bin/sh", "/bin/bash", "/usr/bin/sh"})
    packages["glibc"].add(nss_altfiles_entry(workdir))
    packages["glibc"].provides.add("/lib64/ld-linux-x86-64.so.2")
    for name, extra in EXTRA_REQUIRES.items():
        packages[name].requires.update(extra)
    library_closure(packages)
    return packages


def write_treefile(out: Path) -> None:
    treefile = {
        "ref": "strata-lab/${basearch}/base",
        "repos": ["lab"],
        "packages": [*BASE_PACKAGES, "strace", "demo-engine", "test-scripts", "test-config"],
        "recommends": False,
        "documentation": False,
        "automatic-version-prefix": "1",
        "mutate-os-release": "1",
        "etc-group-members": ["wheel"],
        "add-files": [["strata-lab.repo", "/etc/yum.repos.d/strata-lab.repo"]],
    }
    (out / "lab.json").write_text(json.dumps(treefile, indent=2) + "\n")


def write_repo_file(out: Path) -> None:
    lines = []
    for repo_id, enabled in (("lab", 1), ("lab-updates", 0)):
        lines += [f"[{repo_id}]", f"name=Strata lab ({repo_id})", f"baseurl=file://{out.resolve() / repo_id}",
                  f"enabled={enabled}", "gpgcheck=0", "metadata_expire=0", ""]
    (out / "strata-lab.repo").write_text("\n".join(lines))


def build_lab(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="strata-lab-build-") as tmp:
        packages = lab_packages(Path(tmp))
        lab = [*packages.values(), *family_packages("21"), *test_packages(), dracut_package()]
        write_repo(out / "lab", lab)
        write_repo(out / "lab-updates", family_packages("22"))
    write_repo_file(out)
    write_treefile(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    try:
        build_lab(args.out)
    except StrataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"lab distribution written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
