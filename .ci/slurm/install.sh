#!/usr/bin/env bash
# Install what a throw-away single-node Slurm cluster on localhost needs (Debian/Ubuntu, root):
# munge (authentication), slurmctld (controller), slurmd (node daemon), slurm-client (sbatch,
# squeue, srun, scontrol, sinfo). Idempotent: installs only the packages that are missing.
# Debian's policy-rc.d keeps the packages from starting any service; start.sh starts its own.
#   bash .ci/slurm/install.sh
set -euo pipefail

packages=(munge slurmctld slurmd slurm-client)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "slurm/install.sh: installing ${missing[*]} needs root" >&2; exit 1; }
    echo "slurm/install.sh: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

for p in "${packages[@]}"; do
    printf 'slurm/install.sh: %s %s\n' "$p" "$(dpkg-query -W -f='${Version}' "$p")"
done
