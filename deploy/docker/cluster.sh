#!/usr/bin/env bash
# A 5-node aigw cluster in Docker: shard1..3 (also the account-manager replicas) and edge1,
# edge2, on a private network, plus an optional mock upstream. See deploy/README.md.
#
#   deploy/docker/cluster.sh up | down [--purge] | status
#   deploy/docker/cluster.sh kill|start|stop|partition|heal|logs <node>
#
# Containers get the caller's AIGW_* variables (providers, admin token, S3 settings, ...); the
# script sets only the per-node ones.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
image="${AIGW_IMAGE:-aigw:dev}"
prefix="${AIGW_DOCKER_PREFIX:-}"
read -r -a edge_ports <<<"${AIGW_DOCKER_EDGE_PORTS:-8081 8082}"
mock="${AIGW_DOCKER_MOCK:-0}"

net="${prefix}aigw-net"
blobs_volume="${prefix}aigw-blobs"
# Everything this script creates carries this label, so `down` finds it.
label="aigw.cluster=${prefix}aigw"
members="1=shard1:9090,2=shard2:9090,3=shard3:9090"

shards=(shard1 shard2 shard3)
edges=()
for i in "${!edge_ports[@]}"; do edges+=("edge$((i + 1))"); done
nodes=("${shards[@]}" "${edges[@]}" mock)

usage() {
  cat >&2 <<EOF
usage: $0 up | down [--purge] | status | kill|start|stop|partition|heal|logs <node>
nodes: ${nodes[*]}
EOF
  exit 2
}

die() {
  echo "cluster.sh: $*" >&2
  exit 1
}

for p in "${edge_ports[@]}"; do [[ "$p" =~ ^[0-9]+$ ]] || die "not a port number: '$p'"; done
((${#edge_ports[@]} > 0)) || die "AIGW_DOCKER_EDGE_PORTS is empty"
command -v docker >/dev/null || die "docker not found"

is_node() {
  local n
  for n in "${nodes[@]}"; do [[ "$n" == "$1" ]] && return 0; done
  return 1
}

container() { echo "${prefix}$1"; }
edge_port() { echo "${edge_ports[$((${1#edge} - 1))]}"; }

# running | exited | created | ... | missing
state_of() {
  local st
  if st="$(docker inspect -f '{{.State.Status}}' "$(container "$1")" 2>/dev/null)"; then
    echo "$st"
  else
    echo missing
  fi
}

on_network() {
  docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' \
    "$(container "$1")" 2>/dev/null | tr ' ' '\n' | grep -qxF "$net"
}

# --env flags forwarding the caller's AIGW_* variables, minus the per-node ones set here and
# the ones that steer these scripts (aigw rejects unknown AIGW_* keys).
forward_env() {
  fwd=()
  local name
  while IFS= read -r name; do
    case "$name" in
      AIGW_ROLE | AIGW_NODE_ID | AIGW_GRPC_ADDR | AIGW_ADVERTISE_ADDR | AIGW_HTTP_ADDR | \
        AIGW_DATA_DIR | AIGW_CLUSTER__MEMBERS | AIGW_BLOB__PATH) ;;
      AIGW_BIN | AIGW_IMAGE | AIGW_DOCKER_* | AIGW_CLUSTER_DIR | AIGW_CLUSTER_GRPC_BASE | \
        AIGW_CLUSTER_SHARD_HTTP_BASE | AIGW_CLUSTER_EDGE_PORTS) ;;
      AIGW_* | RUST_LOG) fwd+=(--env "$name") ;;
    esac
  done < <(compgen -e)
  if [[ "$mock" == 1 ]]; then
    [[ -n "${AIGW_PROVIDERS__OPENAI__BASE_URL:-}" ]] ||
      fwd+=(--env AIGW_PROVIDERS__OPENAI__BASE_URL=http://mock:7777/v1)
    [[ -n "${AIGW_PROVIDERS__ANTHROPIC__BASE_URL:-}" ]] ||
      fwd+=(--env AIGW_PROVIDERS__ANTHROPIC__BASE_URL=http://mock:7777/v1)
  fi
}

ensure_image() {
  docker image inspect "$image" >/dev/null 2>&1 && return 0
  echo "image $image not found; building it with deploy/build-image.sh"
  "$repo/deploy/build-image.sh" "$image"
}

ensure_network() {
  docker network inspect "$net" >/dev/null 2>&1 ||
    docker network create --label "$label" "$net" >/dev/null
  local v
  for v in "$blobs_volume" "${shards[@]/#/${prefix}aigw-data-}"; do
    docker volume inspect "$v" >/dev/null 2>&1 ||
      docker volume create --label "$label" "$v" >/dev/null
  done
}

# Create and start the container of a node.
run_node() {
  local node="$1" c
  c="$(container "$node")"
  local -a args=(-d --name "$c" --hostname "$node" --label "$label" --label "aigw.node=$node"
    --network "$net" --network-alias "$node")
  case "$node" in
    shard*)
      forward_env
      args+=(-v "${prefix}aigw-data-$node:/data" -v "$blobs_volume:/blobs" "${fwd[@]}"
        --env AIGW_ROLE=shard --env "AIGW_NODE_ID=${node#shard}"
        --env AIGW_GRPC_ADDR=0.0.0.0:9090 --env "AIGW_ADVERTISE_ADDR=$node:9090"
        --env AIGW_HTTP_ADDR=0.0.0.0:8080 --env AIGW_DATA_DIR=/data
        --env "AIGW_CLUSTER__MEMBERS=$members")
      # Shards share one body store: the shared volume, unless the caller chose another kind.
      case "${AIGW_BLOB__KIND:-fs}" in fs) args+=(--env AIGW_BLOB__PATH=/blobs) ;; esac
      docker run "${args[@]}" "$image" serve >/dev/null
      ;;
    edge*)
      forward_env
      args+=(-p "127.0.0.1:$(edge_port "$node"):8080" "${fwd[@]}"
        --env AIGW_ROLE=edge --env AIGW_HTTP_ADDR=0.0.0.0:8080
        --env "AIGW_CLUSTER__MEMBERS=$members")
      docker run "${args[@]}" "$image" serve >/dev/null
      ;;
    mock)
      docker run "${args[@]}" --entrypoint /aigw-mock "$image" --addr 0.0.0.0:7777 >/dev/null
      ;;
  esac
  echo "created $node ($c)"
}

start_node() {
  local node="$1" st
  st="$(state_of "$node")"
  case "$st" in
    running) echo "$node already running" ;;
    missing)
      ensure_image
      ensure_network
      run_node "$node"
      ;;
    *)
      docker start "$(container "$node")" >/dev/null
      echo "started $node"
      ;;
  esac
}

# The end of a container's log, without backtrace frames (RUST_BACKTRACE=1 would push the
# error itself out of view).
show_log() {
  echo "--- docker logs $(container "$1") (backtrace frames omitted)" >&2
  docker logs --tail 200 "$(container "$1")" 2>&1 | grep -Ev '^ +([0-9]+: | *at )' |
    tail -n 50 >&2 || true
}

healthy() { curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$(edge_port "$1")/healthz" 2>/dev/null; }
node_running() { [[ "$(state_of "$1")" == running ]]; }
# shellcheck source=deploy/wait-for-edges.sh
source "$repo/deploy/wait-for-edges.sh"

cmd_up() {
  ensure_image
  ensure_network
  local node
  if [[ "$mock" == 1 ]]; then
    start_node mock
    sleep 1
    if [[ "$(state_of mock)" != running ]]; then
      show_log mock
      die "the mock upstream did not start (does $image contain /aigw-mock? build-image.sh adds it when aigw-mock sits next to the aigw binary)"
    fi
  fi
  for node in "${shards[@]}" "${edges[@]}"; do start_node "$node"; done
  wait_for_edges 90 1
  echo "cluster up (image $image, network $net)"
  for node in "${edges[@]}"; do echo "  $node: http://127.0.0.1:$(edge_port "$node")"; done
  [[ "$mock" == 1 ]] && echo "  mock upstream: http://mock:7777 inside $net"
  return 0
}

cmd_down() {
  local purge=0
  case "${1:-}" in
    "") ;;
    --purge) purge=1 ;;
    *) usage ;;
  esac
  local ids
  ids="$(docker ps -aq --filter "label=$label")"
  if [[ -n "$ids" ]]; then
    # shellcheck disable=SC2086 # one id per word
    docker rm -f -v $ids >/dev/null
    echo "removed containers: $(echo "$ids" | wc -l | tr -d ' ')"
  fi
  local n
  for n in $(docker network ls -q --filter "label=$label"); do
    docker network rm "$n" >/dev/null
    echo "removed network $net"
  done
  if ((purge)); then
    local vols
    vols="$(docker volume ls -q --filter "label=$label")"
    if [[ -n "$vols" ]]; then
      # shellcheck disable=SC2086 # one name per word
      docker volume rm $vols >/dev/null
      echo "removed volumes: $(echo "$vols" | tr '\n' ' ')"
    fi
  fi
}

cmd_status() {
  local node st where health
  for node in "${shards[@]}" "${edges[@]}" mock; do
    st="$(state_of "$node")"
    [[ "$node" == mock && "$st" == missing ]] && continue
    where=""
    if [[ "$st" != missing ]]; then
      if on_network "$node"; then where="on $net"; else where="PARTITIONED (off $net)"; fi
    fi
    health=""
    if [[ "$node" == edge* ]]; then
      health="http://127.0.0.1:$(edge_port "$node")"
      if [[ "$st" == running ]]; then
        if healthy "$node"; then health+=" healthz ok"; else health+=" healthz FAILING"; fi
      fi
    fi
    printf '%-7s %-9s %-22s %s\n' "$node" "$st" "$where" "$health"
  done
}

need_container() {
  [[ "$(state_of "$1")" != missing ]] || die "$1 has no container ($(container "$1")); run up first"
}

[[ $# -ge 1 ]] || usage
cmd="$1"
shift
case "$cmd" in
  up | status)
    [[ $# -eq 0 ]] || usage
    "cmd_$cmd"
    ;;
  down)
    [[ $# -le 1 ]] || usage
    cmd_down "$@"
    ;;
  kill | start | stop | partition | heal | logs)
    if [[ $# -ne 1 ]] || ! is_node "$1"; then usage; fi
    node="$1"
    c="$(container "$node")"
    case "$cmd" in
      start) start_node "$node" ;;
      kill)
        need_container "$node"
        docker kill -s KILL "$c" >/dev/null
        echo "killed $node (SIGKILL)"
        ;;
      stop)
        need_container "$node"
        docker stop -t 15 "$c" >/dev/null
        echo "stopped $node"
        ;;
      partition)
        need_container "$node"
        if on_network "$node"; then
          docker network disconnect "$net" "$c"
          echo "partitioned $node (disconnected from $net)"
        else
          echo "$node is already off $net"
        fi
        ;;
      heal)
        need_container "$node"
        if on_network "$node"; then
          echo "$node is already on $net"
        else
          docker network connect --alias "$node" "$net" "$c"
          echo "healed $node (reconnected to $net as $node)"
        fi
        ;;
      logs)
        need_container "$node"
        docker logs --tail 50 "$c"
        ;;
    esac
    ;;
  *) usage ;;
esac
