#!/usr/bin/env bash
# Install the Debian packages for a single-node SLURM cluster with accounting.
# Idempotent: does nothing (no apt-get update) when everything is already installed.
# Starts no daemon: slurm/start.sh does that. Needs root (or sudo).
set -euo pipefail

PKGS=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install.sh: all packages already installed (${PKGS[*]})"
    exit 0
fi

echo "install.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d 101 stops the packages' maintainer scripts from trying to start daemons
# (there is no systemd here; start.sh starts and records every daemon itself).
had_policy=0
if [ -e /usr/sbin/policy-rc.d ]; then had_policy=1; fi
if [ "$had_policy" -eq 0 ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
fi
cleanup() { if [ "$had_policy" -eq 0 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT

$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null
echo "install.sh: done"
