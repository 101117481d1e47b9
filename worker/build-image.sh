#!/usr/bin/env bash
# Build the container runner's image (worker/Dockerfile) with podman or docker, after `make build`;
# with ECR_REPOSITORY set, push it to ECR and print the template parameter that names it.
#
#   make worker-image                                      build localhost/imagetasks-worker:<git sha>
#   make worker-image ECR_REPOSITORY=123456789012.dkr.ecr.eu-west-1.amazonaws.com/imagetasks-worker
#                                                          ... push it, print WorkerImageUri=...
# Environment: CONTAINER_ENGINE (default: podman, else docker), BASE_IMAGE (a Debian trixie image),
# WORKER_IMAGE_TAG (default: the commit's short sha), OFFLINE=1 (no pull, no network while building).
# Pushing needs the AWS CLI (`aws ecr get-login-password`) and credentials for the repository.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENGINE=${CONTAINER_ENGINE:-$(command -v podman || command -v docker || true)}
[ -n "$ENGINE" ] || { echo "worker-image: needs podman or docker" >&2; exit 1; }
[ -d "$ROOT/.aws-sam/build/CommonLayer/python" ] || { echo "worker-image: run make build first" >&2; exit 1; }
TAG=${WORKER_IMAGE_TAG:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo latest)}
NAME=${WORKER_IMAGE:-localhost/imagetasks-worker}

# The AWS SDK at the dependencies layer's pins (worker/runtime-requirements.txt), for python3.13.
RUNTIME=$ROOT/.aws-sam/worker-runtime
PIP=${PIP:-$( [ -x "$ROOT/.venv/bin/pip" ] && echo "$ROOT/.venv/bin/pip" || echo "python3 -m pip")}
rm -rf "$RUNTIME"
$PIP install -q --disable-pip-version-check --no-compile --target "$RUNTIME" --python-version 3.13 \
  --implementation cp --abi cp313 --platform manylinux2014_x86_64 --only-binary=:all: \
  -r "$ROOT/worker/runtime-requirements.txt" >&2
rm -rf "$RUNTIME/bin"

args=(build -f "$ROOT/worker/Dockerfile" -t "$NAME:$TAG" -t "$NAME:latest")
[ -n "${BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
[ "${OFFLINE:-0}" = 1 ] && args+=(--pull=never --network none)
"$ENGINE" "${args[@]}" "$ROOT" >&2
echo "built $NAME:$TAG" >&2

if [ -n "${ECR_REPOSITORY:-}" ]; then
  registry=${ECR_REPOSITORY%%/*}                        # <account>.dkr.ecr.<region>.amazonaws.com
  region=$(echo "$registry" | cut -d. -f4)
  aws ecr get-login-password --region "$region" | "$ENGINE" login --username AWS --password-stdin "$registry" >&2
  "$ENGINE" tag "$NAME:$TAG" "$ECR_REPOSITORY:$TAG"
  "$ENGINE" push "$ECR_REPOSITORY:$TAG" >&2
  echo "WorkerImageUri=$ECR_REPOSITORY:$TAG"
fi
