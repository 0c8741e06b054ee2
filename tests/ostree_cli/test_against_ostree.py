"""strata-ostree against the real ostree on the same inputs: same outputs, same exit codes."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from strata.cli.ostree_options import Arg, Option, parse

pytestmark = pytest.mark.skipif(shutil.which("ostree") is None, reason="needs the real ostree")

FIXED_TIME = "2020-01-01T00:00:00Z"


def run(tool: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = ["ostree"] if tool == "ostree" else [sys.executable, "-m", "strata.cli.ostree"]
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})})


def both(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str],
                                                                                  subprocess.CompletedProcess[str]]:
    """Run the same command line in two copies of the working directory, one per tool."""
    return run("ostree", *args, cwd=tmp_path / "ostree", env=env), run("strata", *args, cwd=tmp_path / "strata",
                                                                        env=env)


@pytest.fixture
def workdirs(tmp_path: Path) -> Path:
    for side in ("ostree", "strata"):
        files = tmp_path / side / "files"
        (files / "sub").mkdir(parents=True)
        (files / "a").write_text("a\n")
        (files / "sub" / "b").write_text("b\n")
        os.symlink("a", files / "link")
    return tmp_path


def commit_both(tmp_path: Path, *extra: str) -> str:
    for args in (("--repo=repo", "init", "--mode=archive"),
                 ("--repo=repo", "commit", "-b", "foo/bar", f"--timestamp={FIXED_TIME}", "-s", "one",
                  "--add-metadata-string=version=1", *extra, "files")):
        ours, theirs = both(tmp_path, *args)
        assert ours.returncode == theirs.returncode == 0, (ours.stderr, theirs.stderr)
    return theirs.stdout.strip()


def test_commit_checksum_log_refs_ls_match(workdirs: Path) -> None:
    commit_both(workdirs)
    for args in (("--repo=repo", "rev-parse", "foo/bar"), ("--repo=repo", "log", "foo/bar"),
                 ("--repo=repo", "refs"), ("--repo=repo", "refs", "foo"), ("--repo=repo", "refs", "--list", "foo"),
                 ("--repo=repo", "ls", "-R", "foo/bar"), ("--repo=repo", "cat", "foo/bar", "/sub/b"),
                 ("--repo=repo", "show", "--print-metadata-key=version", "foo/bar"),
                 ("--repo=repo", "config", "get", "core.mode")):
        theirs, ours = both(workdirs, *args)
        assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), args


def test_commit_options_give_the_same_tree(workdirs: Path) -> None:
    for side in ("ostree", "strata"):
        (workdirs / side / "over").write_text("+2048 /a\n")
        (workdirs / side / "skip").write_text("/sub/b\n")
    ours = commit_both(workdirs, "--statoverride=over", "--skip-list=skip", "--canonical-permissions")
    theirs_ls, ours_ls = both(workdirs, "--repo=repo", "ls", "-R", "foo/bar")
    assert ours_ls.stdout == theirs_ls.stdout
    theirs_rev, _ = both(workdirs, "--repo=repo", "rev-parse", "foo/bar")
    assert ours == theirs_rev.stdout.strip()


def test_errors_and_exit_codes_match(workdirs: Path) -> None:
    commit_both(workdirs)
    for args in (("--repo=repo", "rev-parse", "nosuch"), ("--repo=repo", "commit", "files"),
                 ("--repo=repo", "refs", "--delete"), ("--repo=repo", "config", "get", "core.nosuch"),
                 ("--repo=repo", "nosuchverb"), ("--repo=repo", "ls", "--bogus", "foo/bar")):
        theirs, ours = both(workdirs, *args)
        assert ours.returncode == theirs.returncode == 1, args
        assert ours.stderr.splitlines()[-1].startswith("error: "), args
        assert theirs.stderr.splitlines()[-1].startswith("error: "), args


def test_source_date_epoch_refusals_match(workdirs: Path) -> None:
    commit_both(workdirs)
    for value in ("invalid", "12345678901234567890"):
        theirs, ours = both(workdirs, "--repo=repo", "commit", "-b", "x", "files", env={"SOURCE_DATE_EPOCH": value})
        assert ours.returncode == theirs.returncode == 1
        assert ours.stderr.strip() == theirs.stderr.strip()


def test_options_parse_as_goption_does() -> None:
    options = (Option("branch", "b", Arg.STRING), Option("tree", "", Arg.ARRAY), Option("recursive", "R"),
               Option("depth", "", Arg.INT))
    parsed = parse(["-Rbmain", "x", "--tree=dir=a", "--tree", "ref=b", "--depth=3", "--", "-y"], options)
    assert parsed.string("branch") == "main"
    assert parsed.strings("tree") == ["dir=a", "ref=b"]
    assert parsed.flag("recursive") and parsed.number("depth", 0) == 3
    assert parsed.positional == ["x", "-y"]


def test_typed_metadata_commits_alike_and_raw_views_match(workdirs: Path) -> None:
    """--add-metadata numbers are stored in the machine's byte order as ostree stores them (same commit
    checksum), and show/log --raw print the whole commit variant as ostree does."""
    ours_commit = commit_both(workdirs, "--add-metadata=n=uint64 5", "--add-metadata=small=int16 -2",
                              "--add-metadata=e=@a{sv} {}", "--add-metadata=flag=true")
    assert run("strata", "--repo=repo", "rev-parse", "foo/bar", cwd=workdirs / "strata").stdout.strip() == ours_commit
    for args in (("--repo=repo", "show", "--raw", "foo/bar"), ("--repo=repo", "log", "--raw", "foo/bar"),
                 ("--repo=repo", "show", "--print-metadata-key=n", "foo/bar"),
                 ("--repo=repo", "show", "-B", "--print-metadata-key=small", "foo/bar")):
        theirs, ours = both(workdirs, *args)
        assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
        assert ours.stdout == theirs.stdout, args
    raw = run("strata", "--repo=repo", "show", "--raw", "foo/bar", cwd=workdirs / "strata").stdout
    assert "'e': <@a{sv} {}>" in raw and "'n': <uint64 360287970189639680>" in raw  # ostree's view of LE 5


def test_custom_backend_remotes_as_ostree(workdirs: Path) -> None:
    """A remote fetched by another tool (--custom-backend) may have no URL; pulls and URL lookups refuse it."""
    commit_both(workdirs)
    steps = [(("--repo=repo", "remote", "add", "--custom-backend=ostree-rs-ext", "fromcontainer"), 0),
             (("--repo=repo", "remote", "show-url", "fromcontainer"), 1),
             (("--repo=repo", "pull", "fromcontainer"), 1),
             (("--repo=repo", "remote", "add", "--custom-backend=ostree-rs-ext", "other", "docker://quay.io/x/y"), 0),
             (("--repo=repo", "remote", "show-url", "other"), 0),
             (("--repo=repo", "pull", "other", "main"), 1),
             (("--repo=repo", "remote", "add", "plain"), 1)]
    for args, code in steps:
        theirs, ours = both(workdirs, *args)
        assert (theirs.returncode, ours.returncode) == (code, code), (args, theirs.stderr, ours.stderr)
        assert ours.stdout == theirs.stdout, args
    assert 'No "url" option in remote "fromcontainer"' in both(workdirs, "--repo=repo", "remote", "show-url",
                                                                "fromcontainer")[1].stderr
    pulled = both(workdirs, "--repo=repo", "pull", "other", "main")[1].stderr
    assert "remote 'other' uses custom backend 'ostree-rs-ext'" in pulled


def test_missing_file_object_named_as_ostree(workdirs: Path) -> None:
    commit_both(workdirs)
    for side in ("ostree", "strata"):
        checksum = run(side, "--repo=repo", "ls", "-C", "foo/bar", "/a", cwd=workdirs / side).stdout.split()[4]
        (workdirs / side / "repo" / "objects" / checksum[:2] / f"{checksum[2:]}.filez").unlink()
    theirs, ours = both(workdirs, "--repo=repo", "cat", "foo/bar", "/a")
    assert theirs.returncode != 0 and ours.returncode != 0
    assert "Couldn't find file object" in theirs.stderr and "Couldn't find file object" in ours.stderr, ours.stderr


def test_pull_local_into_a_child_repo_skips_what_the_parent_has(workdirs: Path) -> None:
    def filez(side: str, repo: str) -> int:
        return len(list((workdirs / side / repo / "objects").glob("*/*.filez")))

    for args in (("--repo=child", "init", "--mode=archive"), ("--repo=tmp", "init", "--mode=archive")):
        both(workdirs, *args)
    commit_both(workdirs)
    for side in ("ostree", "strata"):
        with (workdirs / side / "child" / "config").open("a") as config:
            config.write(f"parent={workdirs / side / 'repo'}\n")
        (workdirs / side / "files" / "new").write_text("new\n")
    theirs, ours = both(workdirs, "--repo=tmp", "commit", "-b", "t", f"--timestamp={FIXED_TIME}", "-s", "s", "files")
    assert ours.stdout == theirs.stdout
    both(workdirs, "--repo=child", "pull-local", "tmp", "t")
    assert filez("strata", "child") == filez("ostree", "child") == 1  # only the new file: the rest is the parent's
    theirs, ours = both(workdirs, "--repo=child", "fsck")
    assert theirs.returncode == ours.returncode == 0, ours.stderr


def test_pull_local_hardlinks_the_commit_object_as_ostree(workdirs: Path) -> None:
    commit = commit_both(workdirs)
    relative = Path("objects") / commit[:2] / f"{commit[2:]}.commit"
    both(workdirs, "--repo=copy", "init", "--mode=bare-user")
    theirs, ours = both(workdirs, "--repo=copy", "pull-local", "repo")
    assert theirs.returncode == ours.returncode == 0, ours.stderr
    for side in ("ostree", "strata"):
        original, copied = (workdirs / side / "repo" / relative).stat(), (workdirs / side / "copy" / relative).stat()
        assert (copied.st_dev, copied.st_ino) == (original.st_dev, original.st_ino), side
    both(workdirs, "--repo=untrusted", "init", "--mode=bare-user")
    both(workdirs, "--repo=untrusted", "pull-local", "--untrusted", "repo")
    copied = (workdirs / "strata" / "untrusted" / relative).stat()
    assert copied.st_ino != (workdirs / "strata" / "repo" / relative).stat().st_ino  # an untrusted source: copied


def test_devino_canonical_keeps_the_objects_owner_as_ostree(workdirs: Path) -> None:
    """commit -I takes a file hardlinked to an object as that object (its owner too); without -I an owner
    override wins."""
    for args in (("--repo=bu", "init", "--mode=bare-user"),
                 ("--repo=bu", "commit", "-b", "t", f"--timestamp={FIXED_TIME}", "-s", "s", "files"),
                 ("--repo=bu", "checkout", "-U", "-H", "t", "co")):
        theirs, ours = both(workdirs, *args)
        assert theirs.returncode == ours.returncode == 0, (args, ours.stderr)
    for extra, branch in ((["--link-checkout-speedup"], "speedup"), (["-I", "--table-output"], "devino")):
        theirs, ours = both(workdirs, "--repo=bu", "commit", f"--timestamp={FIXED_TIME}", "-s", "s", "--owner-uid",
                            "4242", "--owner-gid", "4243", *extra, "-b", branch, "--tree=dir=co")
        assert theirs.returncode == ours.returncode == 0, ours.stderr
        if "--table-output" in extra:
            hits = [line for line in ours.stdout.splitlines() if line.startswith("Content Cache Hits:")]
            assert hits and int(hits[0].split()[-1]) > 0, ours.stdout
        theirs, ours = both(workdirs, "--repo=bu", "ls", branch, "/a")
        assert ours.stdout == theirs.stdout, branch
    assert " 4242 4243 " in both(workdirs, "--repo=bu", "ls", "speedup", "/a")[1].stdout
    assert " 4242 " not in both(workdirs, "--repo=bu", "ls", "devino", "/a")[1].stdout


def test_bare_user_only_modes_as_ostree(workdirs: Path) -> None:
    """bare-user-only keeps a file's mode (group-writable allowed), refuses setuid content, masks directories
    to 0775 at checkout and hardlinks canonical objects from a bare-user repository."""
    for side in ("ostree", "strata"):
        files = workdirs / side / "files"
        (files / "gw").write_text("group writable\n")
        os.chmod(files / "gw", 0o664)
        (files / "ww").mkdir()
        os.chmod(files / "ww", 0o777)
        (workdirs / side / "suid").mkdir()
        (workdirs / side / "suid" / "s").write_text("suid\n")
        os.chmod(workdirs / side / "suid" / "s", 0o4755)
    steps = [("--repo=in", "init", "--mode=archive"), ("--repo=buo", "init", "--mode=bare-user-only"),
             ("--repo=bu", "init", "--mode=bare-user"), ("--repo=buo2", "init", "--mode=bare-user-only"),
             ("--repo=in", "commit", "-b", "t", f"--timestamp={FIXED_TIME}", "-s", "s", "files"),
             ("--repo=buo", "pull-local", "in"), ("--repo=buo", "checkout", "-U", "-H", "t", "co"),
             ("--repo=bu", "commit", "--canonical-permissions", "-b", "c", f"--timestamp={FIXED_TIME}", "files"),
             ("--repo=buo2", "pull-local", "bu")]
    for args in steps:
        theirs, ours = both(workdirs, *args)
        assert theirs.returncode == ours.returncode == 0, (args, theirs.stderr, ours.stderr)
    for side in ("ostree", "strata"):
        co = workdirs / side / "co"
        assert (stat_mode(co / "gw"), stat_mode(co / "ww")) == (0o664, 0o775), side
        checksum = run(side, "--repo=bu", "ls", "-C", "c", "/a", cwd=workdirs / side).stdout.split()[4]
        relative = Path("objects") / checksum[:2] / f"{checksum[2:]}.file"
        assert (workdirs / side / "bu" / relative).stat().st_ino == (workdirs / side / "buo2" / relative).stat().st_ino
    both(workdirs, "--repo=in", "commit", "-b", "suid", "--tree=dir=suid")
    theirs, ours = both(workdirs, "--repo=buo", "pull-local", "in", "suid")
    assert theirs.returncode != 0 and ours.returncode != 0
    assert "invalid mode 0104755 with bits 04000" in ours.stderr and "with bits 04000" in theirs.stderr
    theirs, ours = both(workdirs, "--repo=in", "commit", "-b", "m", "--add-metadata-string==FOO", "files")
    assert theirs.returncode != 0 and ours.returncode != 0 and "Empty metadata key" in ours.stderr


def stat_mode(path: Path) -> int:
    return path.lstat().st_mode & 0o7777


def test_passthrough_whiteouts_as_ostree(workdirs: Path) -> None:
    for side in ("ostree", "strata"):
        (workdirs / side / "files" / ".ostree-wh.gone").write_text("")
    commit_both(workdirs)
    theirs, ours = both(workdirs, "--repo=repo", "checkout", "--process-passthrough-whiteouts", "foo/bar", "co")
    assert theirs.returncode == ours.returncode == 0, ours.stderr
    for side in ("ostree", "strata"):
        made = (workdirs / side / "co" / "gone").lstat()
        assert stat.S_ISCHR(made.st_mode) and made.st_rdev == 0, side
        assert not (workdirs / side / "co" / ".ostree-wh.gone").exists()
