#!/usr/bin/env bash
# The engines the "many machines" tests start for real: PostgreSQL (result and Optuna stores,
# MLflow's backend), Slurm and munge (tests/runner/test_slurm.py submits
# examples/slurm-workers.sbatch to a throwaway single-node cluster). Debian packages, installed
# only; no service is started or enabled (the tests run their own daemons and stop them).
#
# Where they cannot be installed (not root, no apt-get, no network) this says so and exits 0:
# the tests that need them are then skipped with the reason.
set -uo pipefail

PACKAGES=(postgresql slurm-wlm munge)
BINARIES=(initdb slurmctld slurmd munged sbatch)

have_all() {
  local b
  for b in "${BINARIES[@]}"; do
    command -v "$b" >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/$b" >/dev/null || return 1
  done
}

if have_all; then
  echo "install-test-engines: PostgreSQL, Slurm and munge are installed"
  exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-engines: not installing ${PACKAGES[*]} (needs root and apt-get);" \
       "the tests that need them will be skipped"
  exit 0
fi

# No package may start its service while installing (Docker images already say so this way).
policy=/usr/sbin/policy-rc.d
added_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && added_policy=1
fi
export DEBIAN_FRONTEND=noninteractive
status=0
apt-get update -qq && apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null || status=$?
if [[ $added_policy -eq 1 ]]; then
  rm -f "$policy"
fi
if [[ $status -ne 0 ]] || ! have_all; then
  echo "install-test-engines: apt-get could not install ${PACKAGES[*]} (exit $status);" \
       "the tests that need them will be skipped"
  exit 0
fi
echo "install-test-engines: installed ${PACKAGES[*]}"
