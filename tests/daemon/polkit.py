"""The real polkitd bound to a private bus, in a private mount namespace: its actions directory holds only
the daemon's .policy file and its rules directory the rules a test writes (the host's polkit configuration
is hidden, never changed)."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tests.daemon.bus import bus_names

POLKITD = "/usr/lib/polkit-1/polkitd"
POLKIT_BUS_POLICY = "/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf"
BUS_EXTRA = f"""<policy user="root"><allow own="org.freedesktop.PolicyKit1"/></policy>
  <include>{POLKIT_BUS_POLICY}</include>"""
# mount the prepared directories over polkit's, then become polkitd (positional arguments, no interpolation)
MOUNT_AND_RUN = ('mount --bind "$1" /usr/share/polkit-1/actions && mount --bind "$2" /etc/polkit-1/rules.d && '
                 'mount --bind "$3" /usr/share/polkit-1/rules.d && exec "$4" --no-debug')


def policy_file() -> Path:
    return Path(str(resources.files("strata.daemon").joinpath("data/org.projectatomic.rpmostree1.policy")))


@dataclass
class Polkit:
    process: subprocess.Popen[bytes]
    rules: Path

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_polkit(address: str, workdir: Path, rules: dict[str, str]) -> Polkit:
    actions, rules_dir, empty = workdir / "actions", workdir / "rules.d", workdir / "empty"
    for directory in (workdir, actions, rules_dir, empty):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)  # polkitd reads them as its own user
    shutil.copy(policy_file(), actions / "org.projectatomic.rpmostree1.policy")
    for name, text in rules.items():
        (rules_dir / name).write_text(text)
    argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", MOUNT_AND_RUN, "sh", str(actions),
            str(rules_dir), str(empty), POLKITD]
    process = subprocess.Popen(argv, env={"DBUS_SYSTEM_BUS_ADDRESS": address, "PATH": "/usr/bin:/bin"})
    deadline = time.monotonic() + 30
    while "org.freedesktop.PolicyKit1" not in bus_names(address):
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"polkitd did not take its name (exit {process.poll()})")
        time.sleep(0.1)
    return Polkit(process, rules_dir)
