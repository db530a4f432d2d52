# shellcheck shell=bash disable=SC2154  # shards and edges are the caller's
# Sourced by deploy/local/cluster.sh and deploy/docker/cluster.sh: the wait at the end of `up`.
#
# wait_for_edges TIMEOUT_SECS POLL_SECS — until every edge answers /healthz; exits 1 (showing
# the node's log) as soon as any node has stopped, or when the timeout passes. The caller
# defines the arrays `shards` and `edges` and the functions `node_running NODE`,
# `healthy NODE` and `show_log NODE`.
wait_for_edges() {
  local deadline=$((SECONDS + $1)) poll="$2" node
  local pending=("${edges[@]}")
  while ((${#pending[@]} > 0)); do
    for node in "${shards[@]}" "${edges[@]}"; do
      if ! node_running "$node"; then
        echo "cluster.sh: $node exited during startup" >&2
        show_log "$node"
        exit 1
      fi
    done
    local still=()
    for node in "${pending[@]}"; do healthy "$node" || still+=("$node"); done
    pending=("${still[@]+"${still[@]}"}")
    ((${#pending[@]} == 0)) && break
    if ((SECONDS >= deadline)); then
      echo "cluster.sh: timed out waiting for /healthz on: ${pending[*]}" >&2
      for node in "${pending[@]}"; do show_log "$node"; done
      exit 1
    fi
    sleep "$poll"
  done
}
