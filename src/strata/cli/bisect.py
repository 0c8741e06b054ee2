"""`strata bisect start|good|bad|skip|reset|status|log`: parse, call core.bisect, print."""

from __future__ import annotations

import argparse
from typing import Any

from strata.cli.common import add_sysroot_option, print_json
from strata.cli.progress import make_progress
from strata.core import bisect
from strata.sysroot.sysroot import Sysroot

_OS_HELP = "the stateroot to bisect (default: the booted one)"


def register(sub: Any) -> None:
    parser = sub.add_parser("bisect", help="Find the first bad build of the origin ref's history",
                            description="Find the first bad build of the origin ref's history")
    verbs = parser.add_subparsers(dest="bisect_verb", metavar="COMMAND")
    start = _verb(verbs, "start", "resolve GOOD..BAD and deploy the first build to test")
    start.add_argument("--good", required=True, metavar="VERSION|COMMIT", help="a build known to be good")
    start.add_argument("--bad", required=True, metavar="VERSION|COMMIT", help="a build known to be bad")
    start.add_argument("--run", metavar="CMD", help="boot each build and run CMD inside it (0 good, 125 skip, "
                       "other bad) until the first bad build is found (directory sysroots)")
    start.set_defaults(func=_start)
    for verdict in bisect.VERDICTS:
        p = _verb(verbs, verdict, f"mark the build under test (or REV) {verdict} and deploy the next one")
        p.add_argument("revision", nargs="?", metavar="REV", help="a version or commit of the range")
        p.set_defaults(func=_judge, verdict=verdict)
    _verb(verbs, "reset", "return to the deployment bisect started from").set_defaults(func=_reset)
    status = _verb(verbs, "status", "show the range, what is under test, and the answer once found")
    status.add_argument("--json", action="store_true", help="output JSON")
    status.set_defaults(func=_status)
    _verb(verbs, "log", "list the verdicts so far").set_defaults(func=_log)


def _verb(verbs: Any, name: str, helptext: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = verbs.add_parser(name, help=helptext, description=helptext)
    add_sysroot_option(p)
    p.add_argument("--os", "--stateroot", dest="stateroot", metavar="STATEROOT", help=_OS_HELP)
    return p


def _sysroot(args: argparse.Namespace) -> Sysroot:
    from strata.cli.common import open_sysroot
    return open_sysroot(args.sysroot)


def _start(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    run = bisect.parse_run(args.run) if args.run is not None else None
    request = bisect.StartRequest(args.good, args.bad, run, args.stateroot)
    return _report(sysroot, bisect.start(sysroot, request, make_progress()))


def _judge(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    return _report(sysroot, bisect.judge(sysroot, args.stateroot, args.verdict, args.revision, make_progress()))


def _report(sysroot: Sysroot, state: bisect.BisectState) -> int:
    if state.result is None:
        print(f"Next: reboot into it ({bisect.reboot_words(sysroot)}), test, then "
              f"`strata bisect good|bad|skip --sysroot {sysroot.path}`")
        return 0
    for line in _result_lines(state):
        print(line)
    return 0


def _result_lines(state: bisect.BisectState) -> list[str]:
    result = state.result
    assert result is not None
    if result.first_bad is None:
        labels = ", ".join(state.builds[i].label for i in result.candidates)
        return [f"There are only skipped builds left to test. The first bad build could be any of: {labels}"]
    bad, good = state.builds[result.first_bad], state.builds[state.good]
    lines = [f"Build {bad.label} is the first bad build", f"  Commit: {bad.commit}",
             f"  Last good: {good.label} ({good.commit})"]
    return lines + (bisect.diff_lines(result.diff) if result.diff is not None else ["  (no package lists)"])


def _reset(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    outcome = bisect.reset(sysroot, args.stateroot, make_progress())
    if outcome.start is None:
        print("The deployment bisect started from is gone; removed what bisect deployed")
    else:
        print(f"Default deployment: {outcome.start.stateroot} {outcome.start.name}")
    print(f"Removed {len(outcome.removed)} bisect deployments")
    if outcome.kept_booted is not None:
        print(f"The booted bisect deployment {outcome.kept_booted} stays until the next reboot "
              f"({bisect.reboot_words(sysroot)}); `strata cleanup -r` removes it afterwards")
    return 0


def _status(args: argparse.Namespace) -> int:
    state = bisect.load_state(_sysroot(args), args.stateroot)
    if args.json:
        print_json(_status_json(state))
        return 0
    good, bad = state.builds[state.good], state.builds[state.bad]
    print(f"Bisecting {state.refspec}: good {good.label}, bad {bad.label}")
    if state.result is not None:
        for line in _result_lines(state):
            print(line)
        return 0
    if state.testing is not None:
        testing = state.builds[state.testing]
        print(f"Testing: {testing.label} ({testing.commit})")
    print(f"Left to test: {len(state.candidates())} builds (roughly {state.steps_left()} steps)")
    if state.skipped:
        print("Skipped: " + ", ".join(state.builds[i].label for i in state.skipped))
    return 0


def _status_json(state: bisect.BisectState) -> dict[str, Any]:
    def build(index: int | None) -> dict[str, Any] | None:
        return None if index is None else {"version": state.builds[index].version,
                                            "commit": state.builds[index].commit}
    result = state.result
    return {"refspec": state.refspec, "stateroot": state.stateroot, "good": build(state.good),
            "bad": build(state.bad), "testing": build(state.testing),
            "skipped": [build(i) for i in state.skipped], "left": len(state.candidates()),
            "done": result is not None,
            "first-bad": build(result.first_bad) if result is not None else None,
            "candidates": [build(i) for i in result.candidates] if result is not None else [],
            "diff": result.diff if result is not None else None,
            "steps": [{**(build(s.build) or {}), "verdict": s.verdict, "by": s.by} for s in state.steps]}


def _log(args: argparse.Namespace) -> int:
    state = bisect.load_state(_sysroot(args), args.stateroot)
    print(f"# bisect start --good {state.builds[0].label} --bad {state.builds[-1].label}")
    for step in state.steps:
        build = state.builds[step.build]
        print(f"{step.verdict} {build.label} ({build.commit}){' # run' if step.by == 'run' else ''}")
    return 0
