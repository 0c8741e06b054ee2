"""The CLI's error contract: every failure is one printable `error:` line and a non-zero exit."""

from __future__ import annotations

import argparse
import importlib

import pytest
import yaml

from strata import __version__
from strata.cli import main as cli_main
from strata.errors import StrataError


def _run_with_failure(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                      exc: BaseException) -> tuple[int, str]:
    def failing(_args: argparse.Namespace) -> int:
        raise exc

    class FailingParser(argparse.ArgumentParser):
        def parse_known_args(self, *_a: object, **_k: object  # type: ignore[override]
                             ) -> tuple[argparse.Namespace, list[str]]:
            return argparse.Namespace(func=failing, debug=False), []
    monkeypatch.setattr(cli_main, "build_parser", FailingParser)
    monkeypatch.delenv("STRATA_DEBUG", raising=False)
    code = cli_main.main(["status"])
    return code, capsys.readouterr().err


def test_untrusted_newlines_cannot_forge_lines(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run_with_failure(monkeypatch, capsys, StrataError("bad name 'x\nerror: forged\x1b[2J'"))
    assert code == 1
    assert err.count("\n") == 1
    assert err.startswith("error: bad name 'x\\nerror: forged\\x1b[2J'")


def test_huge_message_is_cut(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run_with_failure(monkeypatch, capsys, StrataError("Packages not found: " + "p, " * 100000))
    assert code == 1
    assert len(err) < cli_main.MAX_ERROR_CHARS + 100
    assert "more characters" in err


def test_unexpected_exception_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run_with_failure(monkeypatch, capsys, RecursionError("maximum recursion depth exceeded"))
    assert code == 70
    assert err.count("\n") == 1
    assert err.startswith("error: internal error (RecursionError): maximum recursion depth exceeded")
    assert "Traceback" not in err


def test_unknown_and_missing_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["frobnicate", "--sysroot", "/nonexistent"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "error: Unknown command 'frobnicate'" and "usage: strata" in err
    assert cli_main.main(["--debug"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == "error: No command specified"


def test_version_is_rpm_ostree_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["--version"]) == 0
    document = yaml.safe_load(capsys.readouterr().out)
    assert document["strata"]["Version"] == __version__
    assert "daemon" in document["strata"]["Features"] and "compose" in document["strata"]["Features"]


def test_quiet_is_accepted_after_the_verb(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["status", "-q", "--sysroot", "/nonexistent/sysroot"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unrecognized arguments" not in err


def test_each_verb_imports_only_its_home_module() -> None:
    """The table main() uses to import one verb module must name the module that registers each verb."""
    registered: dict[str, str] = {}
    for name in cli_main.VERB_MODULES:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(name).register(sub)
        registered.update(dict.fromkeys(sub.choices, name))
    assert registered == cli_main.VERB_HOME
    parser = cli_main.build_parser("install")
    assert parser.get_default("known_verbs") == frozenset(v for v, m in registered.items() if m == "strata.cli.client")


def test_quiet_silences_every_verb_for_one_invocation_only(capsys: pytest.CaptureFixture[str]) -> None:
    from strata.cli.progress import make_progress
    from strata.core.transaction import SilentProgress
    cli_main.main(["-q", "admin", "status", "--sysroot", "/nonexistent/sysroot"])
    assert isinstance(make_progress(), SilentProgress)  # admin, compose and bisect verbs too, not only client verbs
    cli_main.main(["admin", "status", "--sysroot", "/nonexistent/sysroot"])
    assert not isinstance(make_progress(), SilentProgress)
    capsys.readouterr()
