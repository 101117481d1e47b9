"""Errors the domain raises; the API turns each kind into one HTTP status in one place."""


class DomainError(Exception):
    """Base class: `message` is written for the user and safe to show."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(DomainError):
    """The request cannot be accepted as it is (HTTP 400)."""


class ReservedProperty(InvalidRequest):
    """The request sets something Glance reserves for itself (HTTP 403, as Glance answers)."""


class LimitExceeded(InvalidRequest):
    """The request is over one of the service's size or count limits (HTTP 413, as Glance answers)."""


class NotPermitted(DomainError):
    """The caller may see the thing but not change it this way (HTTP 403, as Glance answers)."""


class NotFound(DomainError):
    """The thing does not exist, is not visible to the caller, or has expired (HTTP 404)."""


class InvalidTransition(DomainError):
    """A status change the task lifecycle does not allow (e.g. out of a final state)."""


class TaskAlreadyFinal(InvalidTransition):
    """The task already reached success or failure; final states never change."""


class ConcurrentUpdate(DomainError):
    """Someone else changed the task (or image) between our read and our conditional write; read again."""


class TaskNotProcessing(DomainError):
    """The task is no longer `processing` (it failed, timed out or was reconciled while a step ran):
    the step must record nothing for it and remove what it wrote."""


class IdempotencyKeyReused(DomainError):
    """An Idempotency-Key already used with a different request (HTTP 422): a new request needs a new key."""


class RequestInProgress(DomainError):
    """The same request (same Idempotency-Key) is being handled right now (HTTP 409): retry shortly."""


class TooManyLongPolls(DomainError):
    """The caller's project already has as many long polls open as the deployment allows (HTTP 429,
    with Retry-After): poll again shortly, or without `wait`."""


# Not shown to users: the lifecycle's store answers a transition that would take a slot with these,
# and the lifecycle parks the task instead.
class NoFreeSlot(Exception):
    """All processing slots are taken; try again later."""


class ProjectFull(NoFreeSlot):
    """The task's project already runs as many tasks as the deployment allows one project."""
