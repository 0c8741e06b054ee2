"""Signed pulls of ostree's sign API beside the real ostree: a served repo whose commit and summary carry
ostree's 'dummy' signatures (the engine Debian's ostree has; it lacks ed25519), pulled by both tools with
the same remote configuration; both must accept or refuse alike and say why in ostree's words. ed25519,
which only strata can check here, is pulled by strata-ostree with keys inline, in files, and several."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from strata.image.sign import generate_keypair
from tests.conftest import require_tool

REF = "strata/test/x86_64"
DUMMY_ENV = {"OSTREE_DUMMY_SIGN_ENABLED": "1"}
Tool = Callable[..., subprocess.CompletedProcess[str]]


def make_tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a").write_text("a\n")
    (root / "sub" / "b").write_text("b\n")
    return root


def run(tool: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [require_tool("ostree")] if tool == "ostree" else [sys.executable, "-m", "strata.cli.ostree"]
    return subprocess.run([*command, *args], capture_output=True, text=True, check=False,
                          env={**os.environ, **(env if env is not None else DUMMY_ENV)})


def ok(tool: str, *args: str) -> str:
    proc = run(tool, *args)
    assert proc.returncode == 0, (tool, args, proc.stderr)
    return proc.stdout


@pytest.fixture
def dummy_server(tmp_path: Path, nginx: Callable[[Path], str]) -> str:
    """An archive repo written and signed (commit and summary, dummy key 'dummysign') by the real ostree."""
    repo = tmp_path / "www" / "repo"
    repo.mkdir(parents=True)
    ok("ostree", f"--repo={repo}", "init", "--mode=archive")
    ok("ostree", f"--repo={repo}", "commit", "-b", REF, "-s", "signed", "--sign-type=dummy", "--sign=dummysign",
       f"--tree=dir={make_tree(tmp_path / 'tree')}")
    ok("ostree", f"--repo={repo}", "summary", "-u", "--sign-type=dummy", "--sign=dummysign")
    return nginx(tmp_path / "www") + "/repo"


def client(path: Path, url: str, settings: list[str]) -> Path:
    ok("ostree", f"--repo={path}", "init", "--mode=archive")
    ok("ostree", f"--repo={path}", "remote", "add", "--no-gpg-verify", *[f"--set={s}" for s in settings], "origin",
       url)
    return path


@pytest.mark.parametrize(("settings", "accepted", "words"), [
    (["sign-verify=true", "verification-dummy-key=dummysign"], True, ""),
    (["sign-verify=dummy", "verification-dummy-key=dummysign"], True, ""),
    (["sign-verify=false", "sign-verify-summary=true", "verification-dummy-key=dummysign"], True, ""),
    (["sign-verify=true"], False, "signature: dummy: incorrect signatures found: 1"),
    (["sign-verify=true", "verification-dummy-key=somewrongkey"], False, "incorrect signatures found"),
    (["sign-verify=true", "verification-dummy-file=/non/existing/file"], False,
     "Failed loading 'dummy' keys from '/non/existing/file"),
    (["sign-verify=dummy"], False, "No keys found for required signapi type dummy"),
    (["sign-verify=nosuchsystem", "verification-dummy-key=dummysign"], False,
     "Requested signature type is not implemented"),
    (["sign-verify-summary=true", "verification-dummy-key=somewrongkey"], False, "incorrect signatures found"),
])
def test_dummy_signed_pull_decided_as_ostree(tmp_path: Path, dummy_server: str, settings: list[str], accepted: bool,
                                             words: str) -> None:
    for tool in ("ostree", "strata"):
        repo = client(tmp_path / tool, dummy_server, settings)
        proc = run(tool, f"--repo={repo}", "pull", "origin", REF)
        assert (proc.returncode == 0) is accepted, (tool, proc.stderr)
        assert words in proc.stderr, (tool, proc.stderr)
        refs = run(tool, f"--repo={repo}", "refs").stdout.split()
        assert refs == ([f"origin:{REF}"] if accepted else []), tool


def test_dummy_signatures_need_ostree_test_switch(tmp_path: Path, dummy_server: str) -> None:
    """The dummy engine checks nothing; without OSTREE_DUMMY_SIGN_ENABLED=1 neither tool trusts it."""
    for tool in ("ostree", "strata"):
        repo = client(tmp_path / tool, dummy_server, ["sign-verify=true", "verification-dummy-key=dummysign"])
        proc = run(tool, f"--repo={repo}", "pull", "origin", REF, env={})
        assert proc.returncode != 0 and "dummy signature type is only for ostree testing" in proc.stderr, tool


def test_invalid_summary_signature_refused_by_both(tmp_path: Path, dummy_server: str) -> None:
    signature = tmp_path / "www" / "repo" / "summary.sig"
    signature.write_text("invalid\n")
    settings = ["sign-verify=false", "sign-verify-summary=true", "verification-dummy-key=dummysign"]
    for tool in ("ostree", "strata"):
        proc = run(tool, f"--repo={client(tmp_path / tool, dummy_server, settings)}", "pull", "origin", REF)
        assert proc.returncode != 0 and "No signatures found" in proc.stderr, (tool, proc.stderr)


def test_commit_without_detached_metadata_refused_then_signature_fetched_again(tmp_path: Path,
                                                                               dummy_server: str) -> None:
    served = tmp_path / "www" / "repo"
    commit = ok("ostree", f"--repo={served}", "rev-parse", REF).strip()
    commitmeta = Path("objects") / commit[:2] / f"{commit[2:]}.commitmeta"
    (served / commitmeta).rename(served / "aside")
    settings = ["sign-verify=true", "verification-dummy-key=dummysign"]
    for tool in ("ostree", "strata"):
        repo = client(tmp_path / tool, dummy_server, settings)
        assert run(tool, f"--repo={repo}", "pull", "origin", REF).returncode != 0, tool
    (served / "aside").rename(served / commitmeta)
    for tool in ("ostree", "strata"):
        repo = tmp_path / tool
        ok(tool, f"--repo={repo}", "pull", "origin", REF)
        (repo / commitmeta).unlink()
        ok(tool, f"--repo={repo}", "pull", "origin", REF)  # the commit is here; its signatures are fetched again
        assert (repo / commitmeta).is_file(), tool


@pytest.mark.parametrize(("spec", "words"), [
    ("trustme=inline:ok", "Requested signature type is not implemented"),
    ("dummy", "Failed to parse KEYTYPE"),
    ("dummy=foo:bar", "Invalid key reference"),
])
def test_remote_add_sign_verify_errors_as_ostree(tmp_path: Path, spec: str, words: str) -> None:
    for tool in ("ostree", "strata"):
        repo = tmp_path / tool
        ok(tool, f"--repo={repo}", "init", "--mode=archive")
        proc = run(tool, f"--repo={repo}", "remote", "add", "other", f"--sign-verify={spec}", "http://localhost")
        assert proc.returncode != 0 and words in proc.stderr, (tool, proc.stderr)
        assert run(tool, f"--repo={repo}", "remote", "list").stdout == "", tool


def test_ostree_pulls_with_the_remote_strata_adds(tmp_path: Path, dummy_server: str) -> None:
    repo = tmp_path / "client"
    ok("ostree", f"--repo={repo}", "init", "--mode=archive")
    ok("strata", f"--repo={repo}", "remote", "add", "--set=gpg-verify=false", "--sign-verify=dummy=inline:dummysign",
       "origin", dummy_server)
    ok("ostree", f"--repo={repo}", "pull", "origin", REF)
    ok("strata", f"--repo={repo}", "config", "set", 'remote "origin".verification-dummy-key', "wrong")
    assert run("ostree", f"--repo={repo}", "pull", "origin", REF).returncode != 0


# ---------------------------------------------------------------- ed25519 (strata only: Debian's ostree has none)


@pytest.fixture
def ed25519_server(tmp_path: Path, nginx: Callable[[Path], str]) -> tuple[str, str, str]:
    """A repo whose commit strata-ostree signed with a fresh ed25519 key: (url, secret, public)."""
    secret, public = generate_keypair()
    repo = tmp_path / "www" / "repo"
    repo.mkdir(parents=True)
    ok("ostree", f"--repo={repo}", "init", "--mode=archive")
    ok("ostree", f"--repo={repo}", "commit", "-b", REF, "-s", "one", f"--tree=dir={make_tree(tmp_path / 'tree')}")
    ok("strata", f"--repo={repo}", "sign", REF, secret)
    ok("ostree", f"--repo={repo}", "summary", "-u")
    return nginx(tmp_path / "www") + "/repo", secret, public


def _strata_pull(path: Path, url: str, settings: list[str]) -> subprocess.CompletedProcess[str]:
    return run("strata", f"--repo={client(path, url, ['sign-verify=true', *settings])}", "pull", "origin", REF)


def test_ed25519_key_among_many_in_a_file(tmp_path: Path, ed25519_server: tuple[str, str, str]) -> None:
    url, _secret, public = ed25519_server
    keys = tmp_path / "keys.ed25519"
    keys.write_text("".join(generate_keypair()[1] + "\n" for _ in range(5)) + "not a key\n")
    refused = _strata_pull(tmp_path / "wrong", url, [f"verification-ed25519-file={keys}"])
    assert refused.returncode == 1 and "ed25519: Signature couldn't be verified; tried 5 keys" in refused.stderr
    with keys.open("a") as out:
        out.write(public + "\n")
    assert _strata_pull(tmp_path / "file", url, [f"verification-ed25519-file={keys}"]).returncode == 0
    both = _strata_pull(tmp_path / "both", url, [f"verification-ed25519-file={keys}",
                                                 f"verification-ed25519-key={public}"])
    assert both.returncode == 0, both.stderr


def test_ed25519_wrong_key_named_in_hex(tmp_path: Path, ed25519_server: tuple[str, str, str]) -> None:
    url, _secret, _public = ed25519_server
    wrong = generate_keypair()[1]
    refused = _strata_pull(tmp_path / "c", url, [f"verification-ed25519-key={wrong}"])
    assert f"ed25519: Signature couldn't be verified with: key '{base64.b64decode(wrong).hex()}'" in refused.stderr


def test_sign_verify_with_keys_file_and_keys_dir(tmp_path: Path, ed25519_server: tuple[str, str, str]) -> None:
    _url, _secret, public = ed25519_server
    repo = tmp_path / "www" / "repo"
    wrong = generate_keypair()[1]
    keys = tmp_path / "public.keys"
    keys.write_text(f"{wrong}\n{public}\n")
    said = ok("strata", f"--repo={repo}", "sign", "--verify", f"--keys-file={keys}", REF)
    assert said.startswith("ed25519: Signature verified successfully with key '")
    assert run("strata", f"--repo={repo}", "sign", "--verify", REF, wrong).returncode != 0
    keys_dir = tmp_path / "keysdir"
    (keys_dir / "trusted.ed25519.d").mkdir(parents=True)
    (keys_dir / "trusted.ed25519.d" / "site").write_text(public + "\n")
    ok("strata", f"--repo={repo}", "sign", "--verify", f"--keys-dir={keys_dir}", REF)
    (keys_dir / "revoked.ed25519").write_text(public + "\n")  # a revoked key is trusted no more
    revoked = run("strata", f"--repo={repo}", "sign", "--verify", f"--keys-dir={keys_dir}", REF)
    assert revoked.returncode == 1 and "no signatures found" in revoked.stderr


@pytest.mark.parametrize(("key", "accepted"), [("dummysign", True), ("somewrongkey", False)])
def test_file_url_remote_verifies_signatures_too(tmp_path: Path, dummy_server: str, key: str, accepted: bool) -> None:
    url = f"file://{tmp_path / 'www' / 'repo'}"
    for tool in ("ostree", "strata"):
        repo = client(tmp_path / tool, url, ["sign-verify=true", f"verification-dummy-key={key}"])
        proc = run(tool, f"--repo={repo}", "pull", "origin", REF)
        assert (proc.returncode == 0) is accepted, (tool, proc.stderr)
