"""What every processing step has in common: user-facing errors become TaskFailure, retryable
ones keep their name (the workflow's Retry matches it), anything else is a fault of ours."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from imagetasks.adapters.dynamo import TransientError
from imagetasks.domain.errors import DomainError
from imagetasks.domain.failures import TaskFailure
from imagetasks.domain.import_errors import ImportRejected, TransientImportError
from imagetasks.observability import logger

P = ParamSpec("P")
R = TypeVar("R")


def processing_step(function: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except (TransientError, TransientImportError, TaskFailure):
            raise
        except ImportRejected as refused:
            logger.info("Task refused", extra={"reason": refused.message})
            raise TaskFailure(refused.message) from refused
        except DomainError as refused:
            logger.info("Task refused", extra={"reason": refused.message})
            raise TaskFailure(refused.message) from refused

    return run
