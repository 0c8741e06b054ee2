"""strata-ostree pull beside the real ostree on the same served repositories: --dry-run with static deltas,
required deltas that are missing, --subpath over HTTP and file://, refs that are missing or hold no
checksum, remotes that may not be fetched from. Outputs and errors are compared with ostree's own."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from strata.image.subpaths import Subpaths
from tests.conftest import run_ostree
from tests.pull.test_deltas import two_commits

REF = "strata/test/x86_64"
Tool = Callable[..., subprocess.CompletedProcess[str]]


def strata_ostree(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "strata.cli.ostree", *args], capture_output=True, text=True,
                          check=check)


TOOLS: dict[str, Tool] = {"ostree": run_ostree, "strata": strata_ostree}


def client(path: Path, url: str, *, mode: str = "bare-user") -> Path:
    run_ostree(f"--repo={path}", "init", f"--mode={mode}")
    run_ostree(f"--repo={path}", "remote", "add", "--no-gpg-verify", "origin", url)
    return path


def objects(repo: Path) -> set[str]:
    return {f"{p.parent.name}{p.name}" for p in repo.glob("objects/*/*")}


def partial(repo: Path) -> set[str]:
    return {p.name for p in repo.glob("state/*.commitpartial")}


@pytest.fixture
def delta_server(tmp_path: Path, nginx: Callable[[Path], str]) -> tuple[Path, str, str, str]:
    """An ostree-written archive repo with REF at v1 then v2 and a delta v1 -> v2 in its summary, served:
    (repo, url, v1, v2)."""
    repo, first, second, _tree = two_commits(tmp_path)
    run_ostree(f"--repo={repo}", "static-delta", "generate", f"--from={first}", f"--to={second}")
    run_ostree(f"--repo={repo}", "summary", "-u")
    return repo, nginx(tmp_path / "www") + "/repo", first, second


def test_dry_run_prints_ostree_delta_line_and_changes_nothing(tmp_path: Path,
                                                               delta_server: tuple[Path, str, str, str]) -> None:
    repo, url, first, _second = delta_server
    outputs = {}
    for name, tool in TOOLS.items():
        path = client(tmp_path / name, url)
        run_ostree(f"--repo={path}", "pull", "origin", f"{REF}@{first}")
        before = objects(path)
        proc = tool(f"--repo={path}", "pull", "--dry-run", "--require-static-deltas", "origin", REF)
        outputs[name] = proc.stdout
        assert run_ostree(f"--repo={path}", "rev-parse", f"origin:{REF}").stdout.strip() == first
        assert objects(path) == before
    assert outputs["strata"].startswith("Delta update: 0/")
    assert outputs["strata"] == outputs["ostree"]
    # over file:// too (ostree takes the delta path there only when deltas are required)
    path = client(tmp_path / "file", f"file://{repo}")
    run_ostree(f"--repo={path}", "pull", "origin", f"{REF}@{first}")
    assert strata_ostree(f"--repo={path}", "pull", "--dry-run", "--require-static-deltas", "origin",
                         REF).stdout == outputs["ostree"]


def test_dry_run_needs_required_deltas_and_no_archive(tmp_path: Path,
                                                     delta_server: tuple[Path, str, str, str]) -> None:
    _repo, url, _first, _second = delta_server
    path = client(tmp_path / "c", url)
    proc = strata_ostree(f"--repo={path}", "pull", "--dry-run", "origin", REF, check=False)
    assert proc.returncode == 1 and "--dry-run requires --require-static-deltas" in proc.stderr
    archive = client(tmp_path / "archive", url, mode="archive")
    errors = [tool(f"--repo={archive}", "pull", "--dry-run", "--require-static-deltas", "origin", REF,
                   check=False).stderr for tool in TOOLS.values()]
    assert errors[0] == errors[1] == "error: Can't use static deltas in an archive repo\n"


def test_required_delta_missing_fails_as_ostree(tmp_path: Path, delta_server: tuple[Path, str, str, str]) -> None:
    _repo, url, _first, second = delta_server
    errors = {}
    for name, tool in TOOLS.items():
        path = client(tmp_path / name, url)
        # no local commit the delta starts from, and no delta from scratch
        proc = tool(f"--repo={path}", "pull", "--require-static-deltas", "origin", REF, check=False)
        assert proc.returncode != 0
        errors[name] = proc.stderr
        assert not (path / "refs/remotes/origin" / REF).exists()
    expected = f"error: Static deltas required, but none found for {REF} to {second}\n"
    assert errors["strata"] == errors["ostree"] == expected


def test_required_delta_applied(tmp_path: Path, delta_server: tuple[Path, str, str, str]) -> None:
    _repo, url, first, second = delta_server
    stores = {}
    for name, tool in TOOLS.items():
        path = client(tmp_path / name, url)
        run_ostree(f"--repo={path}", "pull", "origin", f"{REF}@{first}")
        tool(f"--repo={path}", "pull", "--require-static-deltas", "origin", REF)
        assert run_ostree(f"--repo={path}", "rev-parse", f"origin:{REF}").stdout.strip() == second
        assert "no errors found" in run_ostree(f"--repo={path}", "fsck").stdout
        stores[name] = objects(path)
    assert stores["strata"] == stores["ostree"]


def test_inline_delta_pulled(tmp_path: Path, nginx: Callable[[Path], str]) -> None:
    repo, first, second, _tree = two_commits(tmp_path)
    run_ostree(f"--repo={repo}", "static-delta", "generate", "--inline", f"--from={first}", f"--to={second}")
    run_ostree(f"--repo={repo}", "summary", "-u")
    url = nginx(tmp_path / "www") + "/repo"
    path = client(tmp_path / "c", url)
    run_ostree(f"--repo={path}", "pull", "origin", f"{REF}@{first}")
    access_log = next((tmp_path / "nginx").glob("nginx-*/access.log"))
    before = access_log.read_text()
    strata_ostree(f"--repo={path}", "pull", "--require-static-deltas", "origin", REF)
    requests = access_log.read_text()[len(before):]
    assert "/superblock " in requests and "/0 HTTP" not in requests  # the part came inside the superblock
    assert "no errors found" in run_ostree(f"--repo={path}", "fsck").stdout
    assert run_ostree(f"--repo={path}", "rev-parse", f"origin:{REF}").stdout.strip() == second


@pytest.fixture
def tree_server(tmp_path: Path, nginx: Callable[[Path], str]) -> tuple[Path, str]:
    """An archive repo whose REF holds /firstfile, /baz/{cow,deeper/ohyeah,another/y}, /bazz/x and a
    directory shared by two paths; served: (repo, url)."""
    tree = tmp_path / "tree"
    for relpath, text in (("firstfile", "first"), ("baz/cow", "moo"), ("baz/deeper/ohyeah", "ohyeah"),
                          ("baz/another/y", "y"), ("bazz/x", "x"), ("same1/s", "shared"), ("same2/s", "shared")):
        (tree / relpath).parent.mkdir(parents=True, exist_ok=True)
        (tree / relpath).write_text(text + "\n")
    repo = tmp_path / "www" / "repo"
    repo.parent.mkdir()
    run_ostree(f"--repo={repo}", "init", "--mode=archive")
    run_ostree(f"--repo={repo}", "commit", "-b", REF, f"--tree=dir={tree}", "--owner-uid=0", "--owner-gid=0",
               "-s", "tree")
    run_ostree(f"--repo={repo}", "summary", "-u")
    return repo, nginx(tmp_path / "www") + "/repo"


@pytest.mark.parametrize("over", ["http", "file"])
def test_subpath_pull_fetches_what_ostree_fetches(tmp_path: Path, tree_server: tuple[Path, str], over: str) -> None:
    repo, url = tree_server
    stores = {}
    for name, tool in TOOLS.items():
        path = client(tmp_path / name, url if over == "http" else f"file://{repo}")
        tool(f"--repo={path}", "pull", "--subpath=/baz/deeper", "--subpath=/same1", "origin", REF)
        stores[name] = objects(path)
        assert len(partial(path)) == 1
        listing = run_ostree(f"--repo={path}", "ls", "-R", f"origin:{REF}", "/baz/deeper").stdout
        assert "/baz/deeper/ohyeah" in listing
        assert run_ostree(f"--repo={path}", "ls", f"origin:{REF}", "/firstfile", check=False).returncode != 0
        tool(f"--repo={path}", "pull", "--subpath=/firstfile", "origin", REF)
        assert run_ostree(f"--repo={path}", "ls", f"origin:{REF}", "/firstfile").returncode == 0
        assert len(partial(path)) == 1
        tool(f"--repo={path}", "pull", "origin", REF)
        assert not partial(path)
        assert "no errors found" in run_ostree(f"--repo={path}", "fsck").stdout
    assert stores["strata"] == stores["ostree"]


def test_subpath_matching() -> None:
    wanted = Subpaths.parse(["/baz/deeper", "/firstfile"])
    assert wanted.wants("/", "baz", is_dir=True)  # on the way down
    assert not wanted.wants("/", "baz", is_dir=False)
    assert wanted.wants("/", "firstfile", is_dir=False)  # a file asked for by name
    assert not wanted.wants("/", "bazz", is_dir=True)  # a prefix of the name only
    assert not wanted.wants("/baz/", "cow", is_dir=False)
    assert wanted.wants("/baz/deeper/", "ohyeah", is_dir=False)
    assert wanted.wants("/baz/deeper/x/", "y", is_dir=True)
    assert Subpaths().wants("/any/", "thing", is_dir=False)
    with pytest.raises(Exception, match="must be absolute"):
        Subpaths.parse(["baz"])


def test_missing_ref_without_summary_is_the_404(tmp_path: Path, tree_server: tuple[Path, str]) -> None:
    repo, url = tree_server
    (repo / "summary").unlink()
    path = client(tmp_path / "c", url)
    proc = strata_ostree(f"--repo={path}", "pull", "origin", "nosuchref", check=False)
    assert proc.returncode == 1 and "404" in proc.stderr
    assert run_ostree(f"--repo={path}", "pull", "origin", "nosuchref", check=False).returncode != 0


def test_html_for_a_ref_refused_as_ostree(tmp_path: Path, tree_server: tuple[Path, str]) -> None:
    repo, url = tree_server
    (repo / "summary").unlink()
    (repo / "refs/heads" / REF).write_text("lots of html here \n" * 20)
    errors = {}
    for name, tool in TOOLS.items():
        proc = tool(f"--repo={client(tmp_path / name, url)}", "pull", "origin", REF, check=False)
        assert proc.returncode != 0
        errors[name] = proc.stderr
    assert errors["strata"] == errors["ostree"]
    assert errors["strata"].startswith(f"error: Fetching checksum for ref ((empty), {REF}): Invalid rev lots of")


@pytest.mark.parametrize("key,value", [("custom-backend", "ostree-rs-ext"), ("unconfigured-state", "Pay first.")])
def test_remote_not_fetched_from(tmp_path: Path, tree_server: tuple[Path, str], key: str, value: str) -> None:
    repo, _url = tree_server
    errors = {}
    for name, tool in TOOLS.items():
        path = client(tmp_path / name, f"file://{repo}")
        run_ostree(f"--repo={path}", "config", "set", f'remote "origin".{key}', value)
        proc = tool(f"--repo={path}", "pull", "origin", REF, check=False)
        assert proc.returncode != 0
        errors[name] = proc.stderr
        assert objects(path) == set()
    assert value in errors["strata"]
    assert errors["strata"] == errors["ostree"]


def test_remote_without_url_refused_as_ostree(tmp_path: Path) -> None:
    repo = tmp_path / "c"
    run_ostree(f"--repo={repo}", "init", "--mode=bare-user")
    with (repo / "config").open("a") as config:
        config.write('[remote "nourl"]\ngpg-verify=false\ncustom-backend=ostree-rs-ext\n'
                     '[remote "plain"]\ngpg-verify=false\n')
    for verb in (("pull", "nourl", "main"), ("remote", "refs", "nourl"), ("pull", "plain", "main"),
                 ("remote", "refs", "plain")):
        errors = [tool(f"--repo={repo}", *verb, check=False).stderr for tool in TOOLS.values()]
        assert errors[0] == errors[1] and errors[1].startswith("error: ")
