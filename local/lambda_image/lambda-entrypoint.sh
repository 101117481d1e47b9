#!/bin/sh
# The image's entrypoint, as in the public Lambda base images: outside Lambda (no runtime API) it runs
# the runtime interface emulator, which starts /var/runtime/bootstrap on the first invoke.
if [ $# -ne 1 ]; then
  echo "lambda-entrypoint.sh: give the handler (e.g. app.lambda_handler) as the only argument" >&2
  exit 142
fi
export _HANDLER="$1"
if [ -z "${AWS_LAMBDA_RUNTIME_API:-}" ]; then
  exec /usr/local/bin/aws-lambda-rie /var/runtime/bootstrap
fi
exec /var/runtime/bootstrap
