"""Logger, tracer and metrics shared by every function (a neutral module: the domain may import it)."""

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
tracer = Tracer()
metrics = Metrics()
