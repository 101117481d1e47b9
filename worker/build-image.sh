#!/usr/bin/env bash
# Build the container runner's image (worker/Dockerfile) with podman or docker, after `make build`;
# with ECR_REPOSITORY set, push it to ECR and print the template parameter that names it.
#
#   make worker-image                                      build localhost/imagetasks-worker:<git sha>
#   make worker-image ECR_REPOSITORY=123456789012.dkr.ecr.eu-west-1.amazonaws.com/imagetasks-worker
#                                                          ... push it, print WorkerImageUri=...
# The base is the Debian trixie the container tier debootstraps (`make containers`), so the build
# pulls nothing and runs with no network: everything else comes from `make build` (the AWS SDK is in
# the dependencies layer). Environment: CONTAINER_ENGINE (default: podman, else docker); BASE_IMAGE
# (another Debian trixie image, e.g. docker.io/library/debian:trixie-slim where there is no
# container tier: pulled, and python3 installed with apt); WORKER_IMAGE_TAG (default: the commit's
# short sha). Pushing needs the AWS CLI (`aws ecr get-login-password`) and credentials for the repository.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCAL_BASE=localhost/imagetasks-base:trixie  # local/containers.sh's BASE_IMAGE, worker/Dockerfile's default
ENGINE=${CONTAINER_ENGINE:-$(command -v podman || command -v docker || true)}
[ -n "$ENGINE" ] || { echo "worker-image: needs podman or docker" >&2; exit 1; }
[ -d "$ROOT/.aws-sam/build/CommonLayer/python" ] || { echo "worker-image: run make build first" >&2; exit 1; }
TAG=${WORKER_IMAGE_TAG:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo latest)}
NAME=${WORKER_IMAGE:-localhost/imagetasks-worker}
BASE=${BASE_IMAGE:-$LOCAL_BASE}

args=(build -f "$ROOT/worker/Dockerfile" -t "$NAME:$TAG" -t "$NAME:latest" --build-arg "BASE_IMAGE=$BASE")
if [ "$BASE" = "$LOCAL_BASE" ]; then
  "$ENGINE" image inspect "$BASE" >/dev/null 2>&1 || {
    echo "worker-image: no $BASE: make containers (as root) debootstraps it, or set" \
      "BASE_IMAGE=docker.io/library/debian:trixie-slim to pull a base instead" >&2
    exit 1
  }
  # Nothing to fetch: the build never leaves this machine.
  case "$ENGINE" in *docker) args+=(--pull=false --network none) ;; *) args+=(--pull=never --network none) ;; esac
  # podman as the container tier configures it (runc, rlimits: local/containers.sh), unless told otherwise.
  tier_conf=${IMAGETASKS_CONTAINERS_STATE:-/var/lib/imagetasks-containers}/containers.conf
  if [[ "$ENGINE" == *podman ]] && [ -z "${CONTAINERS_CONF:-}" ] && [ -f "$tier_conf" ]; then
    export CONTAINERS_CONF=$tier_conf
  fi
fi
"$ENGINE" "${args[@]}" "$ROOT" >&2
echo "built $NAME:$TAG from $BASE" >&2

if [ -n "${ECR_REPOSITORY:-}" ]; then
  registry=${ECR_REPOSITORY%%/*}                        # <account>.dkr.ecr.<region>.amazonaws.com
  region=$(echo "$registry" | cut -d. -f4)
  aws ecr get-login-password --region "$region" | "$ENGINE" login --username AWS --password-stdin "$registry" >&2
  "$ENGINE" tag "$NAME:$TAG" "$ECR_REPOSITORY:$TAG"
  "$ENGINE" push "$ECR_REPOSITORY:$TAG" >&2
  echo "WorkerImageUri=$ECR_REPOSITORY:$TAG"
fi
