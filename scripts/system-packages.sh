#!/bin/sh
# Install the Debian packages a make target needs, or say exactly how to.
#
#   scripts/system-packages.sh PACKAGE...
#
# Checks each package with dpkg-query. When some are missing: as root, installs
# them with apt-get (non-interactive, no recommends); otherwise prints the exact
# command to run and exits 1, before anything else is done. On a system without
# dpkg (not Debian) it lists the packages and carries on: their names are
# Debian's, so only a person can map them.
#
# Environment:
#   KESTREL_SYSTEM_PACKAGES_EXTRA  more package names to require (space separated)
#   KESTREL_SKIP_SYSTEM_PACKAGES=1 skip the check (you installed them another way)
#   APT_GET                        the apt-get command (default: apt-get)
set -eu

if [ "${KESTREL_SKIP_SYSTEM_PACKAGES:-}" = 1 ]; then
    exit 0
fi

packages="$* ${KESTREL_SYSTEM_PACKAGES_EXTRA:-}"
apt_get="${APT_GET:-apt-get}"

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "system packages: no dpkg-query (not Debian); make sure the equivalents of these are installed:" $packages >&2
    exit 0
fi

missing=""
for pkg in $packages; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "install ok installed" ]; then
        missing="$missing $pkg"
    fi
done
missing=${missing# }

if [ -z "$missing" ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "Missing Debian packages: $missing" >&2
    echo "Install them as root, then run make again:" >&2
    echo "" >&2
    echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends $missing" >&2
    echo "" >&2
    exit 1
fi

echo "Installing missing Debian packages: $missing"
export DEBIAN_FRONTEND=noninteractive
$apt_get update
# shellcheck disable=SC2086 # the package list is split into words on purpose
$apt_get install -y --no-install-recommends $missing
