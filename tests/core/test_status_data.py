"""status as data (strata.core.status): the JSONPath subset of `status -J`, the cached update in rpm-ostree's
shape, commit metadata as rpm-ostree serialises it, `--pending-exit-77` and the AutomaticUpdates line."""

from __future__ import annotations

import struct
import sys

import pytest

from strata.core.status import (
    automatic_updates_line,
    available_update,
    cached_update_record,
    diff_from_items,
    json_value,
    jsonpath_query,
    pending_exit_77,
)
from strata.errors import InvalidInputError
from strata.image.gvariant import Variant

DOCUMENT = {"deployments": [{"checksum": "aa", "version": "2", "booted": False},
                            {"checksum": "bb", "version": "1", "booted": True}],
            "transaction": None}
CACHED = {"osname": "lab", "checksum": "c" * 64, "version": "1.1", "timestamp": 1700000000, "origin": "lab:x",
          "ref-has-new-commit": True,
          "rpm-diff": [["htop", 0, {"NewPackage": ["htop", "3.2.2-2", "x86_64"]}],
                       ["bash", 2, {"PreviousPackage": ["bash", "5.2-1", "x86_64"],
                                    "NewPackage": ["bash", "1:5.2-2", "x86_64"]}],
                       ["nano", 1, {"PreviousPackage": ["nano", "7.2-1", "x86_64"]}]]}


@pytest.mark.parametrize(("expression", "expected"), [
    ("$", [DOCUMENT]),
    ("$.deployments[0].checksum", ["aa"]),
    ("$.deployments[-1].checksum", ["bb"]),
    ("$.deployments[*].version", ["2", "1"]),
    ("$['deployments'][1]['booted']", [True]),
    ("$.transaction", [None]),
    ("$.deployments[5].checksum", []),
    ("$.nosuch", []),
    ("$.deployments[0].*", ["aa", "2", False]),
])
def test_jsonpath_subset(expression: str, expected: list[object]) -> None:
    assert jsonpath_query(expression, DOCUMENT) == expected


@pytest.mark.parametrize("expression", ["deployments", "$..checksum", "$.deployments[?(@.booted)]",
                                        "$.deployments[0:1]", "$.a b"])
def test_jsonpath_refuses_what_it_does_not_understand(expression: str) -> None:
    with pytest.raises(InvalidInputError, match="While compiling jsonpath"):
        jsonpath_query(expression, DOCUMENT)


def test_cached_update_in_rpm_ostree_shape() -> None:
    record = cached_update_record(CACHED)
    assert record is not None and record["checksum"] == "c" * 64 and record["advisories"] == []
    assert record["rpm-diff"] == {"upgraded": [[0, "bash", ["5.2-1", "x86_64"], ["1:5.2-2", "x86_64"]]],
                                  "downgraded": [], "removed": [[0, "nano", "7.2-1", "x86_64"]],
                                  "added": [[0, "htop", "3.2.2-2", "x86_64"]]}
    update = available_update(CACHED)
    assert update is not None and update.version == "1.1" and update.diff is not None
    old, new = update.diff.upgraded[0]
    assert (old.epoch, new.epoch, new.version, new.release) == (0, 1, "5.2", "2")
    assert cached_update_record(None) is None and cached_update_record({"checksum": 3}) is None


def test_damaged_cache_is_no_diff() -> None:
    assert diff_from_items([["x", 0, "not a dict"]]) is None
    assert diff_from_items({"upgraded": []}) is None
    assert available_update({"checksum": "c" * 64, "rpm-diff": [[1]]}) is not None


def test_commit_metadata_as_rpm_ostree_serialises_it() -> None:
    """ostree stores some integers big-endian on purpose; rpm-ostree's JSON shows the bytes as the machine reads
    them, and so does strata's."""
    repos = Variant("aa{sv}", [[("id", Variant("s", "lab")), ("timestamp", Variant("t", 1700000000))]])
    value = json_value(repos)
    swapped = int.from_bytes((1700000000).to_bytes(8, "big"), sys.byteorder)
    assert value == [{"id": "lab", "timestamp": swapped}]
    assert json_value(Variant("ay", b"\x01\x02")) == [1, 2]
    assert json_value(Variant("(sb)", ("a", True))) == ["a", True]
    assert json_value(Variant("mi", None)) is None
    assert json_value(Variant("d", 1.5)) == struct.unpack("=d", struct.pack(">d", 1.5))[0]


def test_pending_exit_77_and_policy_line() -> None:
    assert pending_exit_77(DOCUMENT["deployments"])  # type: ignore[arg-type]
    assert not pending_exit_77([{"booted": True}, {"booted": False}])
    assert not pending_exit_77([{"booted": False}])
    assert automatic_updates_line("none", "", verbose=False) is None
    assert automatic_updates_line("none", "", verbose=True) == "AutomaticUpdates: disabled"
    assert automatic_updates_line("check", "strata-automatic.timer: inactive", verbose=False) == \
        "AutomaticUpdates: check; strata-automatic.timer: inactive"
