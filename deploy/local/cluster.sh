#!/usr/bin/env bash
# A 5-node aigw cluster on this machine: 3 shard nodes (shard1..3, which are also the
# account-manager replicas) and 2 edges (edge1, edge2), as background processes that outlive
# this script. See deploy/README.md.
#
#   deploy/local/cluster.sh up | down [--purge] | status
#   deploy/local/cluster.sh kill|start|stop|logs <node>      # node: shard1..3, edge1, edge2
#
# Nodes inherit the caller's AIGW_* variables (providers, admin token, blob store, ...); the
# script sets only the per-node ones (role, node id, addresses, data dir, cluster members).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
host=127.0.0.1

state="${AIGW_CLUSTER_DIR:-$repo/.cluster}"
case "$state" in /*) ;; *) state="$PWD/$state" ;; esac
# Canonical, so it compares equal to a node's /proc/<pid>/cwd.
if [[ -d "$state" ]]; then state="$(cd "$state" && pwd -P)"; fi
grpc_base="${AIGW_CLUSTER_GRPC_BASE:-9100}"
shard_http_base="${AIGW_CLUSTER_SHARD_HTTP_BASE:-8090}"
read -r -a edge_ports <<<"${AIGW_CLUSTER_EDGE_PORTS:-8081 8082}"

# Variables that steer these scripts, not aigw: aigw rejects unknown AIGW_* keys, so the nodes
# must not see them.
script_vars=(AIGW_BIN AIGW_CLUSTER_DIR AIGW_CLUSTER_GRPC_BASE AIGW_CLUSTER_SHARD_HTTP_BASE
  AIGW_CLUSTER_EDGE_PORTS AIGW_IMAGE)
while IFS= read -r name; do
  case "$name" in AIGW_DOCKER_*) script_vars+=("$name") ;; esac
done < <(compgen -e)

shards=(shard1 shard2 shard3)
edges=()
for i in "${!edge_ports[@]}"; do edges+=("edge$((i + 1))"); done
nodes=("${shards[@]}" "${edges[@]}")

usage() {
  cat >&2 <<EOF
usage: $0 up | down [--purge] | status | kill|start|stop|logs <node>
nodes: ${nodes[*]}
EOF
  exit 2
}

die() {
  echo "cluster.sh: $*" >&2
  exit 1
}

for p in "$grpc_base" "$shard_http_base" "${edge_ports[@]}"; do
  [[ "$p" =~ ^[0-9]+$ ]] || die "not a port number: '$p'"
done
((${#edge_ports[@]} > 0)) || die "AIGW_CLUSTER_EDGE_PORTS is empty"

members=""
for i in 1 2 3; do members+="${members:+,}$i=$host:$((grpc_base + i))"; done

is_node() {
  local n
  for n in "${nodes[@]}"; do [[ "$n" == "$1" ]] && return 0; done
  return 1
}

# The HTTP address of a node (edges: the proxy; shards: reserved, unused today).
http_addr() {
  case "$1" in
    shard*) echo "$host:$((shard_http_base + ${1#shard}))" ;;
    edge*) echo "$host:${edge_ports[$((${1#edge} - 1))]}" ;;
  esac
}

grpc_addr() { echo "$host:$((grpc_base + ${1#shard}))"; }

# Whether $1 is a live aigw process of this cluster (guards against pid reuse): its command
# line names aigw and, where /proc exists, its working directory is the state dir (every node
# is started there).
is_node_pid() {
  local pid="$1"
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -d /proc/$pid ]]; then
    { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -q 'aigw' || return 1
    [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "$state" ]] || return 1
  else
    ps -p "$pid" -o command= 2>/dev/null | grep -q 'aigw' || return 1
  fi
}

# Prints the pid of a running node; fails (and drops a stale pid file) if it is not running.
node_pid() {
  local node="$1" file="$state/$1.pid" pid
  [[ -f "$file" ]] || return 1
  pid="$(<"$file")"
  if [[ "$pid" =~ ^[0-9]+$ ]] && is_node_pid "$pid"; then
    echo "$pid"
  else
    rm -f "$file"
    return 1
  fi
}

resolve_bin() {
  if [[ -n "${AIGW_BIN:-}" ]]; then
    bin="$AIGW_BIN"
    [[ -x "$bin" ]] || die "AIGW_BIN=$bin is not an executable file"
  else
    bin="$repo/target/release/aigw"
    if [[ ! -x "$bin" ]]; then
      echo "building $bin ..." >&2
      (cd "$repo" && cargo build --release --bin aigw)
    fi
  fi
  case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
}

start_node() {
  local node="$1" pid
  if pid="$(node_pid "$node")"; then
    echo "$node already running (pid $pid)"
    return 0
  fi
  [[ -n "${bin:-}" ]] || resolve_bin
  mkdir -p "$state"
  state="$(cd "$state" && pwd -P)"
  local -a envargs=()
  local v
  for v in "${script_vars[@]}"; do envargs+=(-u "$v"); done
  case "$node" in
    shard*)
      local i="${node#shard}"
      mkdir -p "$state/$node"
      envargs+=(AIGW_ROLE=shard "AIGW_NODE_ID=$i" "AIGW_GRPC_ADDR=$(grpc_addr "$node")"
        "AIGW_ADVERTISE_ADDR=$(grpc_addr "$node")" "AIGW_DATA_DIR=$state/$node")
      ;;
    edge*)
      # Edges keep nothing on disk and serve no gRPC: drop the caller's per-node values.
      envargs+=(-u AIGW_NODE_ID -u AIGW_GRPC_ADDR -u AIGW_ADVERTISE_ADDR -u AIGW_DATA_DIR
        AIGW_ROLE=edge)
      ;;
  esac
  envargs+=("AIGW_HTTP_ADDR=$(http_addr "$node")" "AIGW_CLUSTER__MEMBERS=$members")
  # Shard nodes must share one object store; default to a directory in the state dir.
  if [[ -z "${AIGW_BLOB__PATH:-}" && -z "${AIGW_BLOB__KIND:-}" ]]; then
    mkdir -p "$state/blobs"
    envargs+=("AIGW_BLOB__PATH=$state/blobs")
  fi
  echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) starting $node" >>"$state/$node.log"
  # setsid: own session, so the node survives this shell and its terminal. The subshell execs
  # through setsid/nohup/env into aigw, so $! is aigw's pid.
  (cd "$state" && exec setsid nohup env "${envargs[@]}" "$bin" serve) \
    >>"$state/$node.log" 2>&1 </dev/null &
  pid=$!
  # Wait until the exec chain has reached aigw, so later pid checks recognise it.
  local deadline=$((SECONDS + 5))
  until is_node_pid "$pid"; do
    if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
      echo "cluster.sh: $node failed to start" >&2
      show_log "$node"
      return 1
    fi
    sleep 0.1
  done
  echo "$pid" >"$state/$node.pid"
  echo "started $node (pid $pid, log $state/$node.log)"
}

# Signals a node and waits up to $3 seconds for it to exit.
signal_node() {
  local node="$1" sig="$2" timeout="$3" pid
  pid="$(node_pid "$node")" || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + timeout))
  while is_node_pid "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
  if is_node_pid "$pid"; then return 1; fi
  rm -f "$state/$node.pid"
}

stop_node() {
  local node="$1" pid
  if ! pid="$(node_pid "$node")"; then
    echo "$node is not running"
    return 0
  fi
  if signal_node "$node" TERM 15; then
    echo "stopped $node (pid $pid)"
  else
    echo "$node (pid $pid) did not exit within 15 s; killing it" >&2
    signal_node "$node" KILL 5 || die "cannot kill $node (pid $pid)"
    echo "killed $node (pid $pid, SIGKILL)"
  fi
}

healthy() { curl -fsS -m 2 -o /dev/null "http://$(http_addr "$1")/healthz" 2>/dev/null; }
node_running() { node_pid "$1" >/dev/null; }
# shellcheck source=deploy/wait-for-edges.sh
source "$repo/deploy/wait-for-edges.sh"

# The end of a node's log since its last start, without backtrace frames (RUST_BACKTRACE=1
# would push the error itself out of view).
show_log() {
  local log="$state/$1.log" from
  echo "--- $log (since the last start, backtrace frames omitted)" >&2
  [[ -f "$log" ]] || { echo "(no log)" >&2; return 0; }
  from="$(grep -n '^=== ' "$log" | tail -n 1 | cut -d: -f1)"
  tail -n "+${from:-1}" "$log" | grep -Ev '^ +([0-9]+: | *at )' | tail -n 50 >&2 || true
}

cmd_up() {
  resolve_bin
  local node
  for node in "${shards[@]}" "${edges[@]}"; do start_node "$node"; done
  wait_for_edges 60 0.5
  echo "cluster up (state dir $state)"
  for node in "${edges[@]}"; do echo "  $node: http://$(http_addr "$node")"; done
  echo "  e.g. curl http://$(http_addr edge1)/v1/<account>/<gateway>/openai/chat/completions ..."
}

cmd_down() {
  local purge=0
  case "${1:-}" in
    "") ;;
    --purge) purge=1 ;;
    *) usage ;;
  esac
  local node pid i
  local -a down=() downpids=()
  for node in "${nodes[@]}"; do
    if pid="$(node_pid "$node")"; then
      down+=("$node")
      downpids+=("$pid")
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  local deadline=$((SECONDS + 15)) alive
  while ((SECONDS < deadline)); do
    alive=0
    for i in "${!down[@]}"; do is_node_pid "${downpids[$i]}" && alive=1; done
    ((alive)) || break
    sleep 0.2
  done
  for i in "${!down[@]}"; do
    if is_node_pid "${downpids[$i]}"; then
      echo "${down[$i]} (pid ${downpids[$i]}) did not exit within 15 s; killing it" >&2
      kill -KILL "${downpids[$i]}" 2>/dev/null || true
    else
      echo "stopped ${down[$i]} (pid ${downpids[$i]})"
    fi
  done
  ((${#down[@]} > 0)) || echo "no node was running"
  for node in "${nodes[@]}"; do rm -f "$state/$node.pid"; done
  if ((purge)); then
    for node in "${nodes[@]}"; do rm -rf "${state:?}/$node" "$state/$node.log"; done
    rm -rf "${state:?}/blobs"
    rmdir "$state" 2>/dev/null || true
    echo "purged $state"
  fi
}

cmd_status() {
  local node pid
  for node in "${nodes[@]}"; do
    pid="$(node_pid "$node")" || pid=stopped
    case "$node" in
      shard*) printf '%-7s %-8s grpc %s\n' "$node" "$pid" "$(grpc_addr "$node")" ;;
      edge*)
        local health="-"
        if [[ "$pid" != stopped ]]; then
          if healthy "$node"; then health="healthz ok"; else health="healthz FAILING"; fi
        fi
        printf '%-7s %-8s http://%s  %s\n' "$node" "$pid" "$(http_addr "$node")" "$health"
        ;;
    esac
  done
}

node_arg() {
  [[ $# -eq 1 ]] || usage
  is_node "$1" || usage
}

[[ $# -ge 1 ]] || usage
cmd="$1"
shift
case "$cmd" in
  up)
    [[ $# -eq 0 ]] || usage
    cmd_up
    ;;
  down)
    [[ $# -le 1 ]] || usage
    cmd_down "$@"
    ;;
  status)
    [[ $# -eq 0 ]] || usage
    cmd_status
    ;;
  start)
    node_arg "$@"
    start_node "$1"
    ;;
  stop)
    node_arg "$@"
    stop_node "$1"
    ;;
  kill)
    node_arg "$@"
    if pid="$(node_pid "$1")"; then
      kill -KILL "$pid"
      rm -f "$state/$1.pid"
      echo "killed $1 (pid $pid, SIGKILL)"
    else
      echo "$1 is not running"
    fi
    ;;
  logs)
    node_arg "$@"
    [[ -f "$state/$1.log" ]] || die "no log for $1 in $state"
    tail -n 50 "$state/$1.log"
    ;;
  *) usage ;;
esac
