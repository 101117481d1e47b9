"""The ways in from a runner: the Lambda processing-step plumbing and the container entrypoint."""
