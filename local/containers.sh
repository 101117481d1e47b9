#!/usr/bin/env bash
# The container tier: the functions `sam build` produced, run in Lambda-like containers under podman.
# No Docker engine and no registry are needed; nothing a container does may leave this machine.
#
#   local/containers.sh setup                 packages, podman config, base and Lambda stand-in images,
#                                             the network and its egress rule (root; idempotent, quick)
#   local/containers.sh start [VAR=value...]  podman's Docker-compatible service on $IMAGETASKS_PODMAN_SOCK;
#                                             every container it starts gets these variables (and those of
#                                             AWS_ENDPOINT_URL, IMAGETASKS_CREDENTIALS_URL, LOCAL_TOKEN_KEY,
#                                             POWERTOOLS_TRACE_DISABLED set in this script's environment).
#                                             Prints DOCKER_HOST=... for sam. Restarts a running service.
#   local/containers.sh stop                  stops that service (the process it started, by its pid)
#   local/containers.sh up                    brings the network's bridge up (an idle anchor container)
#                                             and prints the host's address on it: servers for the
#                                             containers listen there. `start` does it too.
#   local/containers.sh down                  removes the anchor (the bridge goes with the last container)
#   local/containers.sh gateway               prints that address
#   local/containers.sh worker-image          builds the container runner's image (worker/Dockerfile)
#                                             from the base, offline; needs `make build` first
#   local/containers.sh worker ENV_FILE [OPTION...] [-- ARG...]
#                                             runs one container runner task with those variables and
#                                             podman run options (local/ecs.py: the task definition's
#                                             volumes, read-only root, user), and arguments if any
#   local/containers.sh worker-volumes        prints the worker image's VOLUME paths, each with the
#                                             uid, gid and octal mode of its directory in the image
#
# Environment: IMAGETASKS_CONTAINERS_STATE (config and image build context, default
# /var/lib/imagetasks-containers), IMAGETASKS_PODMAN_SOCK (default /run/imagetasks/podman.sock),
# IMAGETASKS_NETWORK (default imagetasks-internal), SAM_VENV (default .venv-sam, for SAM's RIE).
#
# Facts this relies on (see docs/decisions.md): Debian 12's crun refuses this machine's cgroup layout,
# runc works; root here cannot raise rlimits, so containers get the host's hard limits.
#
# The network, imagetasks-internal, is a bridge from which nothing leaves this machine, but it is not
# podman's `--internal` kind: with netavark 1.4 an --internal bridge has no host address (a container
# cannot reach a server on the host) and no port forwarding (SAM cannot reach the emulator in the
# container, which it calls on a port published on 127.0.0.1). So it is an ordinary bridge without DNS,
# and a raw-table rule drops every packet that arrives from the bridge for an address outside its
# subnet: containers reach each other and the host's gateway address, nothing else. SAM creates each
# container on the engine's default network before connecting it to --docker-network, so the service's
# default network is this one too; no container of the service ever sits on podman's routed bridge.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${IMAGETASKS_CONTAINERS_STATE:-/var/lib/imagetasks-containers}
SOCK=${IMAGETASKS_PODMAN_SOCK:-/run/imagetasks/podman.sock}
NETWORK=${IMAGETASKS_NETWORK:-imagetasks-internal}
SAM_VENV=${SAM_VENV:-$ROOT/.venv-sam}
BASE_IMAGE=localhost/imagetasks-base:trixie
LAMBDA_IMAGE=public.ecr.aws/lambda/python:3.13-x86_64
WORKER_IMAGE=localhost/imagetasks-worker:latest  # the container runner (worker/Dockerfile)
LAMBDA_IMAGE_ALIASES=(public.ecr.aws/lambda/python:3.13 localhost/imagetasks-lambda-python:3.13)
# What the stand-in's /var/runtime carries (the real runtime ships awslambdaric and a boto3).
RUNTIME_PACKAGES=(awslambdaric==4.2.2 boto3==1.44.8)
# Variables `start` copies from its own environment into every container, when set.
PASSED_VARIABLES=(AWS_ENDPOINT_URL IMAGETASKS_CREDENTIALS_URL LOCAL_TOKEN_KEY POWERTOOLS_TRACE_DISABLED)

BASE_CONF=$STATE/containers.conf
SERVICE_PID=${SOCK%.sock}.pid
SERVICE_CONF=${SOCK%.sock}.conf
SERVICE_LOG=${SOCK%.sock}.log
ANCHOR=$NETWORK-anchor
export CONTAINERS_CONF=$BASE_CONF

step() { printf '== %s (%s)\n' "$*" "$(date +%T)" >&2; }
die() { printf 'containers.sh: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- configuration

engine_conf() {  # $1: more [containers] lines; $2: the default network (only once it exists)
  local nofile nproc pid_max
  nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=1048576
  nproc=$(ulimit -Hu); pid_max=$(cat /proc/sys/kernel/pid_max)
  if [ "$nproc" = unlimited ] || [ "$nproc" -gt "$pid_max" ]; then nproc=$pid_max; fi
  cat <<EOF
[containers]
# podman's default rlimits (1048576) are above what root may set here: runc would fail with EPERM.
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
$1
[engine]
# Debian 12's crun refuses this machine's hybrid cgroup layout; runc copes.
runtime = "runc"

EOF
  # SAM creates each container on the default network, then connects it to --docker-network: the
  # default must be our network too. Never name a network that does not exist yet: podman would
  # synthesise a default bridge of that name, with routes and masquerading.
  [ -n "${2:-}" ] && printf '\n[network]\ndefault_network = "%s"\n' "$2"
  return 0
}

toml_string() {  # $1 → a TOML basic string
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

# ---------------------------------------------------------------- setup

install_packages() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [ ${#missing[@]} -eq 0 ] && return
  [ "$(id -u)" = 0 ] || die "need root to install ${missing[*]} (apt-get install -y podman runc debootstrap)"
  step "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
}

apt_mirror() {  # the Debian mirror this machine's apt already uses
  local mirror=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^(http|https|file):/) {print $i; exit}}' /etc/apt/sources.list)
  fi
  [ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list(.d): set IMAGETASKS_DEBIAN_MIRROR"
  echo "${IMAGETASKS_DEBIAN_MIRROR:-$mirror}"
}

base_image() {
  podman image exists "$BASE_IMAGE" && return
  local rootfs=$STATE/rootfs mirror
  mirror=$(apt_mirror)
  step "debootstrap trixie (minbase, python3) from $mirror"
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=python3,ca-certificates trixie "$rootfs" "$mirror" \
    >"$STATE/debootstrap.log" 2>&1 || die "debootstrap failed: see $STATE/debootstrap.log"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*_Packages
  step "podman import $BASE_IMAGE"
  tar -C "$rootfs" -c . | podman import -q - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
}

lambda_image() {
  local rie context hash current
  rie=$(ls "$SAM_VENV"/lib/python3*/site-packages/samcli/local/rapid/aws-lambda-rie-x86_64 2>/dev/null | head -1)
  [ -n "$rie" ] || die "no aws-lambda-rie in $SAM_VENV (make install creates .venv-sam with aws-sam-cli)"
  # Rebuild only when something that goes into the image changed.
  hash=$( { sha256sum "$ROOT"/local/lambda_image/* "$rie" | awk '{print $1}'; echo "${RUNTIME_PACKAGES[*]}";
            podman image inspect --format '{{.Id}}' "$BASE_IMAGE"; } | sha256sum | cut -c1-16)
  current=$(podman image inspect --format '{{index .Labels "imagetasks.context"}}' "$LAMBDA_IMAGE" 2>/dev/null || true)
  [ "$current" = "$hash" ] && return
  step "Lambda python3.13 stand-in image $LAMBDA_IMAGE"
  context=$STATE/lambda-image
  rm -rf "$context"; mkdir -p "$context"
  cp "$ROOT"/local/lambda_image/{Containerfile,bootstrap,bootstrap.py,lambda-entrypoint.sh} "$context/"
  cp "$rie" "$context/aws-lambda-rie"
  "$SAM_VENV/bin/pip" install -q --disable-pip-version-check --target "$context/runtime" --no-compile \
    --python-version 3.13 --implementation cp --abi cp313 --platform manylinux_2_28_x86_64 \
    --platform manylinux2014_x86_64 --only-binary=:all: "${RUNTIME_PACKAGES[@]}" 2>&1 \
    | { grep -v -e 'is ignored: it is neither' -e 'dependency resolver does not' -e ' requires .* incompatible' || true; }
  [ -d "$context/runtime/awslambdaric" ] || die "pip could not install ${RUNTIME_PACKAGES[*]} for python3.13"
  rm -rf "$context/runtime/bin"
  local tags=(-t "$LAMBDA_IMAGE") alias
  for alias in "${LAMBDA_IMAGE_ALIASES[@]}"; do tags+=(-t "$alias"); done
  podman build -q --pull=never --network none --label "imagetasks.context=$hash" "${tags[@]}" "$context" >/dev/null
  rm -rf "$context"
}

internal_network() {
  if ! [ -f "/etc/containers/networks/$NETWORK.json" ]; then
    # --disable-dns: no aardvark-dns forwarding names upstream. Not --internal: see the header.
    step "podman network create --disable-dns $NETWORK"
    podman network create --disable-dns "$NETWORK" >/dev/null
  fi
  [ "$(podman network inspect --format '{{.DNSEnabled}}' "$NETWORK")" = false ] \
    || die "podman network $NETWORK has DNS (podman network rm $NETWORK; run setup again)"
  egress_rules
}

network_field() {  # $1: a field of the network's first subnet (Subnet, Gateway) or NetworkInterface
  if [ "$1" = NetworkInterface ]; then
    podman network inspect --format '{{.NetworkInterface}}' "$NETWORK"
  else
    podman network inspect --format "{{range .Subnets}}{{.$1}} {{end}}" "$NETWORK" | awk '{print $1}'
  fi
}

egress_rules() {  # drop whatever a container sends past its own subnet (the host's gateway address is in it)
  [ "$(id -u)" = 0 ] || die "need root for the egress rules of $NETWORK"
  local bridge subnet
  bridge=$(network_field NetworkInterface); subnet=$(network_field Subnet)
  [ -n "$bridge" ] && [ -n "$subnet" ] || die "podman network $NETWORK has no bridge or subnet"
  iptables -t raw -C PREROUTING -i "$bridge" ! -d "$subnet" -j DROP 2>/dev/null \
    || iptables -t raw -I PREROUTING -i "$bridge" ! -d "$subnet" -j DROP
  if command -v ip6tables >/dev/null; then
    ip6tables -t raw -C PREROUTING -i "$bridge" -j DROP 2>/dev/null || ip6tables -t raw -I PREROUTING -i "$bridge" -j DROP
  fi
}

smoke_test() {
  podman run --rm --network "$NETWORK" -e PYTHONPATH=/var/runtime --entrypoint /var/lang/bin/python3 "$LAMBDA_IMAGE" -c \
    'import awslambdaric, boto3, sys; print("stand-in image: python", sys.version.split()[0], "boto3", boto3.__version__)'
}

setup() {
  install_packages
  mkdir -p "$STATE"
  engine_conf "" >"$BASE_CONF"
  base_image
  internal_network
  lambda_image
  smoke_test
}

# ---------------------------------------------------------------- service

gateway() {  # the host's address on the network: its bridge's gateway (= host.containers.internal)
  network_field Gateway
}

running() { [ -f "$SERVICE_PID" ] && kill -0 "$(cat "$SERVICE_PID")" 2>/dev/null; }

stop() {
  if running; then
    local pid; pid=$(cat "$SERVICE_PID")
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$SERVICE_PID" "$SOCK" "$SERVICE_CONF"
}

# netavark removes the bridge, and with it the gateway address host servers listen on, when the last
# container leaves: an idle container keeps it up (shared by every service; `down` removes it).
up() {
  internal_network
  if [ "$(podman container inspect --format '{{.State.Running}}' "$ANCHOR" 2>/dev/null)" != true ]; then
    podman run -d --replace --name "$ANCHOR" --network "$NETWORK" --entrypoint /bin/sleep "$BASE_IMAGE" infinity >/dev/null
  fi
  gateway
}

down() {
  podman rm -f -t 0 "$ANCHOR" >/dev/null 2>&1 || true
}

start() {
  [ -f "$BASE_CONF" ] && podman image exists "$LAMBDA_IMAGE" \
    || die "not set up: run 'make containers' (local/containers.sh setup)"
  local -A vars=()
  local name value assignment lines=""
  export POWERTOOLS_TRACE_DISABLED=${POWERTOOLS_TRACE_DISABLED:-true}
  for name in "${PASSED_VARIABLES[@]}"; do
    [ -n "${!name:-}" ] && vars[$name]=${!name}
  done
  for assignment in "$@"; do
    [[ "$assignment" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "not VAR=value: $assignment"
    vars[${assignment%%=*}]=${assignment#*=}
  done
  for name in "${!vars[@]}"; do
    lines+="$(toml_string "$name=${vars[$name]}"), "
  done
  stop
  mkdir -p "$(dirname "$SOCK")"
  (umask 077; engine_conf "env = [${lines%, }]" "$NETWORK" >"$SERVICE_CONF")  # may carry LOCAL_TOKEN_KEY
  up >/dev/null
  CONTAINERS_CONF=$SERVICE_CONF nohup podman system service --time=0 "unix://$SOCK" \
    </dev/null >"$SERVICE_LOG" 2>&1 &
  echo $! >"$SERVICE_PID"
  for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
  [ -S "$SOCK" ] || die "podman system service did not open $SOCK: see $SERVICE_LOG"
  echo "DOCKER_HOST=unix://$SOCK"
  echo "GATEWAY=$(gateway)"
}

worker_image() {  # the container runner's image as `make worker-image` builds it: offline, from the base
  [ -f "$BASE_CONF" ] && podman image exists "$BASE_IMAGE" \
    || die "not set up: run 'make containers' (local/containers.sh setup)"
  CONTAINER_ENGINE=podman WORKER_IMAGE_TAG=latest WORKER_IMAGE=${WORKER_IMAGE%:*} "$ROOT/worker/build-image.sh"
}

worker() {  # one container runner task: the worker image with the variables of ENV_FILE
  local env_file=${1:?usage: worker ENV_FILE [OPTION...] [-- ARG...]} options=() arguments=()
  shift
  while [ $# -gt 0 ] && [ "$1" != -- ]; do options+=("$1"); shift; done
  [ $# -gt 0 ] && { shift; arguments=("$@"); }
  podman image exists "$WORKER_IMAGE" || die "no $WORKER_IMAGE: run local/containers.sh worker-image"
  exec podman run --rm --network "$NETWORK" --env-file "$env_file" "${options[@]}" "$WORKER_IMAGE" "${arguments[@]}"
}

worker_volumes() {  # "PATH UID GID MODE" for each VOLUME the worker image declares
  podman image exists "$WORKER_IMAGE" || die "no $WORKER_IMAGE: run local/containers.sh worker-image"
  local paths=()
  read -r -a paths < <(podman image inspect --format '{{range $path, $_ := .Config.Volumes}}{{$path}} {{end}}' "$WORKER_IMAGE")
  [ ${#paths[@]} -eq 0 ] && return 0
  # The directories as the image has them (--image-volume ignore: no volume made over them), as root.
  podman run --rm --network none --user 0 --image-volume ignore --entrypoint stat "$WORKER_IMAGE" \
    -c '%n %u %g %a' "${paths[@]}"
}

case "${1:-}" in
  setup | start | stop | up | down | gateway | worker) "$1" "${@:2}" ;;
  worker-image) worker_image ;;
  worker-volumes) worker_volumes ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2; exit 2 ;;
esac
