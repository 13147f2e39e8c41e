#!/usr/bin/env bash
# System packages the test suite drives (Debian/Ubuntu, root): a throw-away local Slurm cluster
# (munge, slurmctld, slurmd, slurm-client) and headless Chromium for the HTML report test.
# Idempotent: installs only what is missing. Without them those tests skip, unless CI sets
# UNLEARNBENCH_REQUIRE_SLURM / UNLEARNBENCH_REQUIRE_CHROMIUM (as .ci/run does).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash .ci/slurm/install.sh
if ! dpkg -s chromium >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || { echo "system-packages.sh: installing chromium needs root" >&2; exit 1; }
    echo "system-packages.sh: apt-get install chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
printf 'system-packages.sh: chromium %s\n' "$(dpkg-query -W -f='${Version}' chromium)"
