#!/usr/bin/env bash
# Installs what strata needs on a fresh Debian machine (run as root): system tools and a venv.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real parts strata drives (bwrap, rpm for scriptlets' interpreters and signatures, dbus-daemon and polkitd for
# the service), test oracles (ostree, rpm, nginx, createrepo_c, systemd-tmpfiles, busctl/gdbus), PyGObject's build
# dependencies, python3-gi for the unprivileged D-Bus test client, the Debian packages the lab distribution is
# repackaged from (htop nano strace tree), and dnf (4), which the strata_ostree plugin turns into a front end.
APT_PACKAGES=(ostree rpm bubblewrap createrepo-c nginx-light attr htop nano strace tree xz-utils zstd gcc libc6-dev
              binutils e2fsprogs gnupg gpgv systemd dbus-daemon dbus-bin polkitd python3-gi libglib2.0-bin
              libgirepository1.0-dev libcairo2-dev pkg-config dnf)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.strata-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[test]'
  touch "$stamp"
fi
# strata-ostree starts hundreds of times in a script: byte-compile the sources once, since
# PYTHONDONTWRITEBYTECODE (set on some machines) would make every start compile them again
.venv/bin/python -m compileall -q src >/dev/null

# The dnf plugin runs under the python3 that runs dnf (the system one, not the venv): installed into that
# python's dnf-plugins directory, told where this checkout's strata is through its configuration file.
read -r dnf_python _ < <(sed -n '1s/^#! *//p' "$(command -v dnf)")
read -r dnf_plugins dnf_plugin_conf < <("$dnf_python" -c 'import dnf.const as c; print(c.PLUGINPATH, c.PLUGINCONFPATH)')
install -D -m 0644 src/strata_dnf/strata_ostree.py "$dnf_plugins/strata_ostree.py"
mkdir -p "$dnf_plugin_conf"
printf '[main]\nenabled=1\nstrata=%s\n' "$PWD/.venv/bin/strata" > "$dnf_plugin_conf/strata_ostree.conf"
