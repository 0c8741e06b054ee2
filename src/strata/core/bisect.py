"""`strata bisect`: find the first bad build of the origin ref's history, as `git bisect` finds a commit.

`start` walks the ref's history on the server as commit objects only (the range from the head back to the good
build), then each step fetches the content of one build, deploys it as `deploy REVISION` would and waits for a
verdict: from `bisect good|bad|skip` after a reboot, or, on a directory sysroot with a command, by booting the
build and running the command inside it (0 good, 125 skip, anything else bad). The state is a JSON file in the
stateroot's /var, so it survives reboots. The deployment bisect started from is pinned while bisecting (so the
deployments of the steps cannot push it out) and made the default again by `reset`."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from strata.core import admin
from strata.core.client import Change, ChangeOptions, Context, open_context, run_verb
from strata.core.pkgdiff import PackageDiff, diff_packages
from strata.core.refs import base_commit
from strata.core.transaction import Progress, Transaction
from strata.errors import InvalidInputError, NotFoundError, StrataError
from strata.image.fetcher import FetchError
from strata.image.fsutil import atomic_write
from strata.image.objects import Commit, ObjectType
from strata.image.repo import Repo
from strata.image.traverse import history
from strata.packages.nevra import Nevra
from strata.sysroot.boot import run_in_deployment
from strata.sysroot.sysroot import Deployment, Sysroot

STATE_PATH = Path("lib") / "strata" / "bisect.json"  # under the stateroot's /var
MAX_HISTORY = 1000
FIRST_BATCH = 10
EXIT_GOOD, EXIT_SKIP = 0, 125
VERDICTS = ("good", "bad", "skip")
_HEX_PREFIX = re.compile(r"^[0-9a-f]{4,64}$")


class NotBisectingError(StrataError):
    """No bisection is in progress."""


# ---------------------------------------------------------------- the state kept in /var


@dataclass
class Build:
    commit: str
    version: str | None

    @property
    def label(self) -> str:
        """The version, as one printable line whatever the server put in it; the short commit without one."""
        if self.version is None:
            return self.commit[:10]
        return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in self.version)


@dataclass
class Step:
    build: int
    verdict: str
    by: str  # "run" (exit status of the command) or "manual"


@dataclass
class Result:
    first_bad: int | None  # None: skipped builds leave the answer open
    candidates: list[int]  # the builds that may be the first bad one (just first_bad when it is known)
    diff: dict[str, list[Any]] | None  # last good -> first bad, nevra strings


@dataclass
class BisectState:
    stateroot: str
    refspec: str
    start: str  # the name of the deployment bisect started from
    start_was_pinned: bool
    preexisting: list[str]  # deployments of the stateroot before bisect started: never removed
    builds: list[Build]  # oldest first: builds[0] is the good end, builds[-1] the bad one
    good: int
    bad: int
    skipped: list[int] = field(default_factory=list)
    testing: int | None = None  # the build deployed and waiting for a verdict
    deployed: list[str] = field(default_factory=list)
    run: list[str] | None = None
    steps: list[Step] = field(default_factory=list)
    result: Result | None = None

    def candidates(self) -> list[int]:
        return [i for i in range(self.good + 1, self.bad) if i not in self.skipped]

    def midpoint(self) -> int | None:
        """The untested build nearest the middle of the range (None: nothing left to test)."""
        middle = (self.good + self.bad) / 2
        return min(self.candidates(), key=lambda i: (abs(i - middle), i), default=None)

    def steps_left(self) -> int:
        return math.ceil(math.log2(len(self.candidates()) + 1))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BisectState:
        result = data.get("result")
        return cls(**{**data, "builds": [Build(**b) for b in data["builds"]],
                      "steps": [Step(**s) for s in data["steps"]],
                      "result": Result(**result) if result is not None else None})


def state_path(sysroot: Sysroot, stateroot: str) -> Path:
    return sysroot.stateroot_var(stateroot) / STATE_PATH


def _save(sysroot: Sysroot, state: BisectState) -> None:
    path = state_path(sysroot, state.stateroot)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (json.dumps(state.to_json(), indent=1) + "\n").encode(), mode=0o600)


def load_state(sysroot: Sysroot, stateroot: str | None) -> BisectState:
    path = state_path(sysroot, _bisecting_stateroot(sysroot, stateroot))
    try:
        return BisectState.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        raise NotBisectingError("Not bisecting (start with `strata bisect start --good REV --bad REV`)") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise StrataError(f"{path}: unreadable bisect state ({exc}); remove it to start over") from None


def _bisecting_stateroot(sysroot: Sysroot, requested: str | None) -> str:
    if requested:
        return requested
    with_state = [name for name in sysroot.stateroots() if state_path(sysroot, name).exists()]
    if len(with_state) == 1:
        return with_state[0]
    if len(with_state) > 1:
        raise InvalidInputError(f"--os must be given: bisecting in several stateroots ({', '.join(with_state)})")
    booted = sysroot.booted()
    return booted.stateroot if booted is not None else admin.default_stateroot(sysroot, None)


# ---------------------------------------------------------------- where the builds come from


class BuildSource(Protocol):
    def head(self) -> str: ...

    def commit(self, checksum: str) -> Commit | None:
        """The commit object (metadata only), None when the server does not have it."""

    def fetch_content(self, checksum: str) -> None: ...


@dataclass
class _LocalSource:
    """A file:// remote, or a ref of the sysroot repository itself (no remote): read in place."""

    source: Repo
    target: Repo
    ref: str

    def head(self) -> str:
        commit = self.source.resolve_rev(self.ref, allow_missing=True)
        if commit is None:
            raise NotFoundError(f"ref {self.ref} not found")
        return commit

    def commit(self, checksum: str) -> Commit | None:
        return self.source.load_commit(checksum) if self.source.has_object(checksum, ObjectType.COMMIT) else None

    def fetch_content(self, checksum: str) -> None:
        if self.source.path != self.target.path:
            from strata.image.transfer import pull_local
            pull_local(self.source, self.target, [checksum])


@dataclass
class _HttpSource:
    """An HTTP remote: commit objects fetched in doubling batches, content one build at a time."""

    repo: Repo
    remote: str
    ref: str
    batch: int = FIRST_BATCH

    def head(self) -> str:
        from strata.image.pull import PullOptions, pull
        # The pull moves the local ref to a head fetched as metadata only; the ref goes back where it was, so no
        # ref ever names a commit whose tree is not here.
        before = self.repo.read_ref(self.ref, remote=self.remote)
        pull(self.repo, self.remote, [self.ref], PullOptions(commit_metadata_only=True))
        head = self.repo.read_ref(self.ref, remote=self.remote)
        with self.repo.lock():
            self.repo.set_ref(self.ref, before, remote=self.remote)
        assert head is not None
        self._mark_metadata_only(head, 0)
        return head

    def commit(self, checksum: str) -> Commit | None:
        if not self.repo.has_object(checksum, ObjectType.COMMIT):
            from strata.image.pull import PullOptions, pull
            try:
                pull(self.repo, self.remote, [checksum], PullOptions(depth=self.batch, commit_metadata_only=True))
            except FetchError as exc:
                if exc.status != 404:
                    raise
                return None
            self._mark_metadata_only(checksum, self.batch)
            self.batch *= 2
        return self.repo.load_commit(checksum)

    def _mark_metadata_only(self, checksum: str, depth: int) -> None:
        """As ostree leaves them: commits fetched without their tree are partial (fsck passes over them, a
        later full pull completes them)."""
        with self.repo.lock():
            for commit in history(self.repo, checksum, depth):
                if not self.repo.has_object(self.repo.load_commit(commit).root_tree, ObjectType.DIRTREE):
                    self.repo.mark_partial(commit)

    def fetch_content(self, checksum: str) -> None:
        from strata.image.pull import pull
        pull(self.repo, self.remote, [checksum])


def build_source(repo: Repo, refspec: str) -> BuildSource:
    remote, _, ref = refspec.rpartition(":")
    if not remote:
        return _LocalSource(repo, repo, ref)
    url = repo.config.get(f'remote "{remote}"', "url")
    if url is None:
        raise NotFoundError(f"remote {remote} not found")
    if url.startswith(("file://", "/")):
        return _LocalSource(Repo.open(Path(url.removeprefix("file://"))), repo, ref)
    if url.startswith(("http://", "https://")):
        return _HttpSource(repo, remote, ref)
    raise StrataError(f"remote {remote}: cannot bisect over {url.split(':', 1)[0]}:// URLs")


# ---------------------------------------------------------------- resolving the range


def _matches(revision: str, checksum: str, commit: Commit) -> bool:
    wanted = revision.removeprefix("revision=").removeprefix("version=")
    if revision.startswith("revision=") or len(wanted) == 64:
        return checksum == wanted
    if revision.startswith("version=") or commit.version == wanted:
        return commit.version == wanted
    return bool(_HEX_PREFIX.match(wanted)) and checksum.startswith(wanted)


def _not_found(revision: str, refspec: str) -> NotFoundError:
    wanted = revision.removeprefix("revision=").removeprefix("version=")
    kind = "Checksum" if revision.startswith("revision=") or len(wanted) == 64 else "Version"
    return NotFoundError(f"{kind} {wanted} not found in {refspec}")


def resolve_range(source: BuildSource, refspec: str, good: str, bad: str) -> list[Build]:
    """The builds from good to bad (oldest first), walking back from the ref's head as commit objects only."""
    current: str | None = source.head()
    newest_first: list[Build] = []
    while current is not None and len(newest_first) < MAX_HISTORY:
        commit = source.commit(current)
        if commit is None:
            break  # history the server pruned ends the walk
        if _matches(good, current, commit):
            if not newest_first and _matches(bad, current, commit):
                raise InvalidInputError("good and bad name the same build")
            if not newest_first:
                raise InvalidInputError(f"good build {good} is not an ancestor of bad build {bad}")
            newest_first.append(Build(current, commit.version))
            return list(reversed(newest_first))
        if newest_first or _matches(bad, current, commit):
            newest_first.append(Build(current, commit.version))
        current = commit.parent
    # A good build newer than the bad one was met first; one not met at all is not in the history.
    raise _not_found(good if newest_first else bad, refspec)


# ---------------------------------------------------------------- the verbs


Output = Callable[[str], None]


@dataclass
class StartRequest:
    good: str
    bad: str
    run: list[str] | None = None
    stateroot: str | None = None


def start(sysroot: Sysroot, request: StartRequest, progress: Progress) -> BisectState:
    """Resolve the range and deploy the first build to test (and with a command, bisect to the end)."""
    ctx = open_context(sysroot, request.stateroot)
    if state_path(sysroot, ctx.stateroot).exists():
        raise InvalidInputError("Already bisecting (see `strata bisect status`; `strata bisect reset` ends it)")
    if request.run is not None and _is_real_host(sysroot):
        raise InvalidInputError("--run needs a directory sysroot; a booted system continues with "
                                "`strata bisect good|bad|skip` after each reboot")
    if request.run is not None and ctx.is_guest:
        raise InvalidInputError(f"--run boots each build: it bisects the booted stateroot only, not '{ctx.stateroot}'")
    start_dep = _start_deployment(ctx)
    refspec = ctx.origin().refspec
    if ":" not in refspec and len(refspec) == 64:
        raise StrataError("Cannot bisect while pinned to commit")
    with Transaction(sysroot, "bisect start", [f"--good={request.good}", f"--bad={request.bad}"], progress,
                     stateroot=ctx.stateroot, check=False) as txn:
        txn.log(f"Resolving {request.good}..{request.bad} in {refspec}")
        builds = resolve_range(build_source(sysroot.repo, refspec), refspec, request.good, request.bad)
    pinned = sysroot.is_pinned(start_dep)
    state = BisectState(ctx.stateroot, refspec, start_dep.name, pinned,
                        [d.name for d in sysroot.deployments() if d.stateroot == ctx.stateroot],
                        builds, good=0, bad=len(builds) - 1, run=request.run)
    _save(sysroot, state)  # before the pin: a crash in between leaves a state `reset` can undo
    if not pinned:
        admin.pin(sysroot, _index(sysroot, start_dep), True, progress)
    return _advance(sysroot, state, progress)


def _start_deployment(ctx: Context) -> Deployment:
    if ctx.booted is not None and not ctx.is_guest:
        if ctx.merge.key != ctx.booted.key:
            raise StrataError("A deployment is pending for the next boot: boot it or drop it "
                              "(`strata cleanup -p`) before bisecting")
        return ctx.booted
    if ctx.merge.staged:
        raise StrataError("A staged deployment is pending: drop it (`strata cleanup -p`) before bisecting")
    return ctx.merge


def _index(sysroot: Sysroot, dep: Deployment) -> int:
    return next(i for i, d in enumerate(sysroot.deployments()) if d.key == dep.key)


def judge(sysroot: Sysroot, stateroot: str | None, verdict: str, revision: str | None,
          progress: Progress) -> BisectState:
    """`bisect good|bad|skip [REV]`: the build under test (or REV), then the next step."""
    state = load_state(sysroot, stateroot)
    if state.result is not None:
        raise InvalidInputError(f"Bisect is finished ({_result_words(state)}); `strata bisect reset` ends it")
    index = _find_build(state, revision) if revision is not None else _tested_build(sysroot, state)
    _apply(state, index, verdict, "manual")
    _save(sysroot, state)
    return _advance(sysroot, state, progress)


def _tested_build(sysroot: Sysroot, state: BisectState) -> int:
    if state.testing is None:
        raise InvalidInputError("No build is under test; name one: strata bisect good|bad|skip REV")
    booted = sysroot.booted()
    if booted is not None and booted.stateroot == state.stateroot:
        current = base_commit(sysroot.repo, booted.csum)
        if current != state.builds[state.testing].commit:
            build = state.builds[state.testing]
            raise StrataError(f"The booted deployment is not build {build.label} under test: reboot into it first "
                              f"({_reboot_words(sysroot)}), or name the build: strata bisect good|bad|skip REV")
    return state.testing


def _find_build(state: BisectState, revision: str) -> int:
    for index, build in enumerate(state.builds):
        wanted = revision.removeprefix("revision=").removeprefix("version=")
        if build.version == wanted and not revision.startswith("revision="):
            return index
        if build.commit == wanted or (_HEX_PREFIX.match(wanted) and build.commit.startswith(wanted)):
            return index
    raise NotFoundError(f"{revision} is not a build between the good and the bad one")


def _apply(state: BisectState, index: int, verdict: str, by: str) -> None:
    if verdict not in VERDICTS:
        raise InvalidInputError(f"unknown verdict {verdict!r} (good, bad or skip)")
    if verdict == "good":
        if index >= state.bad:
            raise InvalidInputError(f"build {state.builds[index].label} is not older than the bad build "
                                    f"{state.builds[state.bad].label}")
        state.good = max(state.good, index)
    elif verdict == "bad":
        if index <= state.good:
            raise InvalidInputError(f"build {state.builds[index].label} is not newer than the good build "
                                    f"{state.builds[state.good].label}")
        state.bad = min(state.bad, index)
    elif index not in state.skipped:
        state.skipped.append(index)
    state.steps.append(Step(index, verdict, by))
    state.testing = None


def _advance(sysroot: Sysroot, state: BisectState, progress: Progress) -> BisectState:
    """Deploy the next build to test; with a command, boot it, run it, and go on to the end."""
    while True:
        index = state.midpoint()
        if index is None:
            _finish(sysroot, state, progress)
            return state
        build = state.builds[index]
        progress.message(f"Bisecting: {len(state.candidates()) - 1} builds left to test after this "
                         f"(roughly {state.steps_left() - 1} steps)")
        progress.message(f"Deploying build {build.label} ({build.commit})")
        dep = _deploy_build(sysroot, state, build.commit, progress)
        state.testing = index
        if dep is not None and dep.name not in state.deployed:
            state.deployed.append(dep.name)
        _save(sysroot, state)
        if state.run is None:
            return state
        booted = admin.boot(sysroot, progress)
        progress.message(f"Running {' '.join(state.run)} in build {build.label}")
        code = run_in_deployment(sysroot, booted, state.run)
        verdict = "good" if code == EXIT_GOOD else "skip" if code == EXIT_SKIP else "bad"
        progress.message(f"Build {build.label}: exit status {code}: {verdict}")
        _apply(state, index, verdict, "run")
        _save(sysroot, state)


@dataclass
class _DeployBuild:
    source: BuildSource
    commit: str

    def __call__(self, txn: Transaction, ctx: Context) -> Change | None:
        self.source.fetch_content(self.commit)
        txn.checkpoint("after-pull")
        return Change(ctx.origin().evolve(override_commit=self.commit), base=self.commit)


def _deploy_build(sysroot: Sysroot, state: BisectState, commit: str, progress: Progress) -> Deployment | None:
    source = build_source(sysroot.repo, state.refspec)
    outcome = run_verb(sysroot, state.stateroot, "deploy", [f"revision={commit}"], progress,
                       _DeployBuild(source, commit), ChangeOptions(allow_downgrade=True))
    return outcome.deployment


def _finish(sysroot: Sysroot, state: BisectState, progress: Progress) -> None:
    open_range = [i for i in range(state.good + 1, state.bad) if i in state.skipped]
    first_bad = state.bad if not open_range else None
    diff = None
    if first_bad is not None:
        source = build_source(sysroot.repo, state.refspec)
        found = package_diff(source, state.builds[state.good].commit, state.builds[first_bad].commit)
        diff = _diff_json(found) if found is not None else None
    state.result = Result(first_bad, [*open_range, state.bad], diff)
    _save(sysroot, state)


def package_diff(source: BuildSource, old: str, new: str) -> PackageDiff | None:
    before, after = _packages(source.commit(old)), _packages(source.commit(new))
    if before is None or after is None:
        return None
    return diff_packages(before, after)


def _packages(commit: Commit | None) -> list[Nevra] | None:
    entries = commit.typed_meta("rpmostree.rpmdb.pkglist", "a(sssss)") if commit is not None else None
    return None if entries is None else sorted(Nevra.from_pkglist_entry(tuple(e)) for e in entries)


def _diff_json(diff: PackageDiff) -> dict[str, list[Any]]:
    return {"upgraded": [[o.nevra, n.nevra] for o, n in diff.upgraded],
            "downgraded": [[o.nevra, n.nevra] for o, n in diff.downgraded],
            "removed": [p.nevra for p in diff.removed], "added": [p.nevra for p in diff.added]}


def diff_lines(diff: dict[str, list[Any]]) -> list[str]:
    """The stored package diff as `db diff` prints one."""
    lines: list[str] = []
    for title, key in (("Upgraded", "upgraded"), ("Downgraded", "downgraded")):
        if diff[key]:
            lines.append(f"{title}:")
            lines += [f"  {Nevra.parse(new).name} {Nevra.parse(old).evr} -> {Nevra.parse(new).evr}"
                      for old, new in diff[key]]
    for title, key in (("Removed", "removed"), ("Added", "added")):
        if diff[key]:
            lines.append(f"{title}:")
            lines += [f"  {nevra}" for nevra in diff[key]]
    return lines


def _result_words(state: BisectState) -> str:
    assert state.result is not None
    if state.result.first_bad is not None:
        return f"first bad build: {state.builds[state.result.first_bad].label}"
    return "the first bad build is one of " + ", ".join(state.builds[i].label for i in state.result.candidates)


# ---------------------------------------------------------------- reset


@dataclass
class ResetOutcome:
    start: Deployment | None  # None: the deployment bisect started from is gone
    removed: list[str]
    kept_booted: str | None  # a bisect deployment still booted (a real host): it goes after the reboot


def reset(sysroot: Sysroot, stateroot: str | None, progress: Progress) -> ResetOutcome:
    """Make the deployment bisect started from the default again, and remove what bisect deployed (never what
    existed before, nor what was pinned since). A directory sysroot is booted back into it."""
    state = load_state(sysroot, stateroot)
    removed = _restore_start(sysroot, state, progress)
    booted = sysroot.booted()
    kept_booted = booted.name if booted is not None and _is_bisect_deployment(sysroot, state, booted) else None
    start_dep = sysroot.find((state.stateroot, state.start))
    if kept_booted is not None and not _is_real_host(sysroot) and start_dep is not None:
        admin.boot(sysroot, progress)
        removed += _restore_start(sysroot, state, progress)
        kept_booted = None
    state_path(sysroot, state.stateroot).unlink()
    return ResetOutcome(start_dep, removed, kept_booted)


def _is_bisect_deployment(sysroot: Sysroot, state: BisectState, dep: Deployment) -> bool:
    return (dep.stateroot == state.stateroot and dep.name in state.deployed and dep.name not in state.preexisting
            and not sysroot.is_pinned(dep))


def _restore_start(sysroot: Sysroot, state: BisectState, progress: Progress) -> list[str]:
    with Transaction(sysroot, "bisect reset", [], progress, stateroot=state.stateroot) as txn:
        deps = sysroot.deployments()
        booted = sysroot.booted()
        start_dep = sysroot.find((state.stateroot, state.start))
        drop = [d for d in deps if _is_bisect_deployment(sysroot, state, d)
                and not (booted is not None and d.key == booted.key)]
        kept = [d for d in deps if not d.staged and d not in drop]
        if start_dep is not None:
            kept = [start_dep, *(d for d in kept if d.key != start_dep.key)]
        with txn.critical():
            if start_dep is not None and not state.start_was_pinned:
                origin = sysroot.read_origin(start_dep)
                origin.remove("libostree-transient", "pinned")
                sysroot.write_origin(start_dep, origin)
            if any(d.staged for d in drop):
                sysroot.clear_staged_state()
            sysroot.write_deployments(kept)
            for dep in drop:
                txn.log(f"Deleted deployment {dep.name}")
    return [d.name for d in drop]


def _is_real_host(sysroot: Sysroot) -> bool:
    return sysroot.path.resolve() == Path("/") and os.path.exists("/run/ostree-booted")


def _reboot_words(sysroot: Sysroot) -> str:
    return "systemctl reboot" if _is_real_host(sysroot) else f"strata admin boot --sysroot {sysroot.path}"


def reboot_words(sysroot: Sysroot) -> str:
    return _reboot_words(sysroot)


def parse_run(command: str | Sequence[str]) -> list[str]:
    import shlex
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if not argv:
        raise InvalidInputError("--run: empty command")
    return argv
