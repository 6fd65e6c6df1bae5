#!/usr/bin/env bash
# From an EMPTY state repo to a Ready dataset on three nodes, on one machine, offline.
# The README's "Walkthrough" runs these same steps; tests/app/test_walkthrough.py runs this file.
#
#   examples/walkthrough.sh                 # uses syncbit-reconcile from PATH (or .venv/bin)
#   SYNCBIT=".venv/bin/python -m reconciler" examples/walkthrough.sh
#
# Three daemons listen on three loopback addresses (Linux routes all of 127.0.0.0/8 to lo).
# Everything lands under $WORK; the daemons are stopped (SIGTERM) when the script ends, also
# on an error or Ctrl-C.
set -euo pipefail

WORK=${WORK:-/tmp/syncbit-walkthrough}
HOSTS=(${HOSTS:-127.0.0.61 127.0.0.62 127.0.0.63})
PEER_PORTS=(${PEER_PORTS:-6881 6881 6881})
API_PORTS=(${API_PORTS:-7070 7070 7070})
TIMEOUT=${TIMEOUT:-120}          # seconds each `wait` may take
if [[ -z ${SYNCBIT:-} ]]; then
  if command -v syncbit-reconcile >/dev/null; then SYNCBIT=syncbit-reconcile
  else SYNCBIT="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/syncbit-reconcile"; fi
fi
sr() { $SYNCBIT "$@"; }
git() { command git -c user.name=walkthrough -c user.email=walkthrough@example.invalid \
  -c commit.gpgsign=false -c init.defaultBranch=main "$@"; }
step() { printf '\n== %s\n' "$*"; }

PIDS=()
stop() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop EXIT
trap 'exit 130' INT TERM

rm -rf "$WORK" && mkdir -p "$WORK"
cd "$WORK"

step "1. An empty state repo, and the data to publish (the origin: a directory, as on NFS)"
git init -q state
mkdir -p origin/tiny-corpus/shards
for i in 0 1 2; do head -c $((2 * 1024 * 1024)) /dev/urandom > "origin/tiny-corpus/shards/part-$i.bin"; done
echo '{"rows": 3}' > origin/tiny-corpus/meta.json

step "2. The inventory: one Node document per node, committed"
{
  i=0
  for h in "${HOSTS[@]}"; do
    i=$((i + 1))
    [[ $i -gt 1 ]] && echo "---"
    cat <<EOF
apiVersion: syncbit/v1
kind: Node
metadata:
  name: node-$i
  labels: {gpu: h100}
spec:
  peer: "$h:${PEER_PORTS[$((i - 1))]}"
  api: "$h:${API_PORTS[$((i - 1))]}"
EOF
  done
} > state/nodes.yaml
sr validate state
git -C state add -A && git -C state commit -qm "inventory: three nodes"

step "3. One node config per node (on a real node: /etc/syncbit/config.yaml), validated"
for i in 1 2 3; do
  cat > "node-$i.yaml" <<EOF
node: node-$i
desiredState: $WORK/state
stateDir: $WORK/node-$i
allowedRoots: [$WORK/data-$i]
publishRoots: [$WORK/origin]     # the only place file: sources may be read on this node
gracePeriod: 1m
EOF
  mkdir -p "data-$i"
  sr validate --config "node-$i.yaml"
done

step "4. Start the three daemons (what systemd runs on each node)"
for i in 1 2 3; do
  (exec $SYNCBIT --config "node-$i.yaml" 2> "node-$i.log") &   # exec: $! is the daemon
  PIDS+=($!)
done

step "5. Declare the dataset, lock it (pins the bytes), validate, commit"
mkdir -p state/datasets
cat > state/datasets/tiny-corpus.yaml <<EOF
apiVersion: syncbit/v1
kind: Dataset
metadata:
  name: tiny-corpus
spec:
  version: "1"
  source:
    file: {path: $WORK/origin/tiny-corpus}
  placement:
    replicas: 3
    selector: {gpu: h100}
  path: tiny-corpus            # under each node's allowedRoots: data-N/tiny-corpus
EOF
sr lock state tiny-corpus
sr validate state
git -C state add -A && git -C state commit -qm "tiny-corpus v1, locked"

step "6. Wait until each node serves it (an init container's readiness gate)"
for i in 1 2 3; do
  sr wait tiny-corpus --config "node-$i.yaml" --timeout "$TIMEOUT"
done

step "7. The cluster as node-1 sees it (also on http://${HOSTS[0]}:${API_PORTS[0]}/ while it runs)"
sr status --cluster --config node-1.yaml

step "7b. One node's own view: where its bytes came from (the origin, or its peers)"
sr status --config node-2.yaml

step "8. Check: every node's data-N/tiny-corpus is the origin's bytes"
for i in 1 2 3; do
  diff -r origin/tiny-corpus "data-$i/tiny-corpus" && echo "node-$i: identical"
done

step "9. Stop the daemons (SIGTERM: each saves its state and exits 0)"
for pid in "${PIDS[@]}"; do kill -TERM "$pid"; done
for pid in "${PIDS[@]}"; do wait "$pid" || { echo "daemon $pid exited $?" >&2; exit 1; }; done
PIDS=()
echo "done; logs in $WORK/node-*.log"
