"""The transaction frame on an empty sysroot: busy record, lock, cancellation at safe points, scratch removal,
progress lines."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from strata.core.transaction import (
    CancelledError,
    SilentProgress,
    Transaction,
    active_transaction,
)
from strata.errors import LockedError
from strata.sysroot.sysroot import Sysroot


@pytest.fixture
def sysroot(tmp_path: Path) -> Sysroot:
    root = Sysroot.init_fs(tmp_path / "sysroot")
    root.os_init("os")
    return root


def test_busy_record_lives_as_long_as_the_transaction(sysroot: Sysroot) -> None:
    assert active_transaction(sysroot) is None
    with Transaction(sysroot, "install", ["htop", "nano"], SilentProgress(), stateroot="os"):
        record = active_transaction(sysroot)
        assert record is not None
        assert (record.title, record.pid, record.uid) == ("install htop nano", os.getpid(), os.getuid())
        assert record.initiator.startswith(f"client(id:cli pid:{os.getpid()} uid:{os.getuid()}) ")
        with (pytest.raises(LockedError, match=r"in progress: install htop nano \(pid"),
              Transaction(sysroot, "uninstall", ["htop"], SilentProgress())):
            pass
    assert active_transaction(sysroot) is None
    assert not (sysroot.path / "run" / "strata").exists()


def test_cancel_outside_the_critical_section_stops_and_removes_scratch(sysroot: Sysroot) -> None:
    tmp = sysroot.repo.tmp_dir
    tmp.mkdir(exist_ok=True)
    (tmp / "older").write_text("not ours")
    with pytest.raises(CancelledError), Transaction(sysroot, "upgrade", [], SilentProgress()):
        (tmp / "staged-object").write_text("half written")
        (tmp / "work").mkdir()
        os.kill(os.getpid(), signal.SIGTERM)
        pytest.fail("the cancel signal did not stop the transaction")
    assert sorted(os.listdir(tmp)) == ["older"]
    assert active_transaction(sysroot) is None
    with Transaction(sysroot, "upgrade", [], SilentProgress()):
        pass  # the lock was released
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_cancel_during_and_after_the_critical_section_is_too_late(sysroot: Sysroot) -> None:
    finished: list[bool] = []
    with Transaction(sysroot, "deploy", ["1"], SilentProgress()) as txn:
        with txn.critical():
            os.kill(os.getpid(), signal.SIGTERM)
            finished.append(True)
        txn.checkpoint()
        os.kill(os.getpid(), signal.SIGTERM)
        finished.append(True)
    assert finished == [True, True]


def test_cancel_during_a_critical_section_that_failed_stops_at_the_next_checkpoint(sysroot: Sysroot) -> None:
    with pytest.raises(CancelledError), Transaction(sysroot, "deploy", ["1"], SilentProgress()) as txn:
        with contextlib.suppress(OSError), txn.critical():
            os.kill(os.getpid(), signal.SIGTERM)
            raise OSError("the deployment failed, nothing was made visible")
        txn.checkpoint("a-point")
        pytest.fail("the noted cancel was not honoured")
