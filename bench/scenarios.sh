#!/bin/sh
# The scenarios of bench/README.md ("Results"), one after the other; each writes
# bench/results/<UTC time>-swarm.json and prints its --json line last. Run as root from the
# project root:  sh bench/scenarios.sh [PYTHON]   (default: .venv/bin/python)
# A single scenario: copy its line. Nothing here asserts a time.
set -u
PY=${1:-.venv/bin/python}
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
run() { echo "== bench.swarm $*" >&2; "$PY" -m bench.swarm --json "$@"; }
run --nodes 4 --size 64MiB                                   # N=4, both baselines (~3 min)
run --nodes 8 --size 64MiB                                   # N=8, both baselines (~5 min)
run --nodes 16 --size 64MiB --no-baselines                   # N=16 (baselines >= 16*S/u_origin = 256 s)
run --nodes 4 --size 64MiB --slow-node 10 --no-baselines     # one node 10x slower, vs the cluster without it
run --nodes 4 --size 64MiB --stagger 10 --no-baselines       # node i starts 10*i s late
run --nodes 4 --size 64MiB --rollout 0.1 --no-baselines      # then v2 with 1 of 10 files changed
run --nodes 1 --size 96MiB --files 4 --origin-conn-rate 128KiB --origin-latency 50 \
    --baselines aria2c --timeout 900                         # one node, per-connection capped origin
run --nodes 4 --size 64MiB --origin-conn-rate 128KiB --origin-latency 50 \
    --baselines aria2c                                       # 4 nodes, per-connection capped origin
