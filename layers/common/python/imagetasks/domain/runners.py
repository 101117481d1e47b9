"""Which runner does a step's work: the step's Lambda function, or the container runner (a Fargate
task with up to 200 GiB of working space and no 15-minute limit) when the work cannot fit Lambda.

The step always starts on Lambda. Before any work it compares what it is about to do with this
runner's limits: working space (a convert needs room for the image and its converted copy) and
transfer size (an import or a same-format export streams for about 900 s times its throughput at most).
Work that fits stays; work that only the container runner can hold raises `NeedsContainer`, which
the workflow catches to run the very same step on that runner; work that fits neither is refused
with the largest figure this deployment offers.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

LAMBDA = "lambda"
CONTAINER = "container"


class NeedsContainer(Exception):
    """The step's work does not fit this Lambda function but fits the container runner.

    Raised before any work is done; the workflow's Catch on this name runs the step again in a
    container. Its name is part of the state machine's contract (see statemachine/)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RunnerLimits(BaseModel):
    """What the runner this code runs on can hold, and what the next larger one could."""

    model_config = ConfigDict(frozen=True)

    runner: str = LAMBDA
    #: This runner's working space (Lambda's /tmp, or the container's ephemeral storage).
    working_space_bytes: int
    #: The container runner's working space; 0 when this deployment has none (or this is it).
    container_working_space_bytes: int = 0
    #: The largest transfer (import fetch, same-format export) done on Lambda; 0: no limit.
    lambda_max_transfer_bytes: int = 0

    @property
    def can_hand_off(self) -> bool:
        return self.runner == LAMBDA and self.container_working_space_bytes > 0

    @property
    def largest_working_space_bytes(self) -> int:
        """The most working space any runner of this deployment offers (what a create may ask)."""
        return max(self.working_space_bytes, self.container_working_space_bytes)

    def working_space(self, needed: int) -> int:
        """The working space to check ``needed`` against: this runner's when it fits; raises
        NeedsContainer when only the container runner can hold it; else the largest offered (and
        the caller's check refuses the work with that figure)."""
        if needed <= self.working_space_bytes:
            return self.working_space_bytes
        if self.can_hand_off and needed <= self.container_working_space_bytes:
            raise NeedsContainer(
                f"needs {needed} bytes of working space; Lambda has {self.working_space_bytes}"
            )
        return self.largest_working_space_bytes

    def transfer(self, announced_bytes: int | None) -> None:
        """Hand a transfer whose announced length exceeds Lambda's share to the container runner.
        An unknown length stays on Lambda (nothing to decide on; the step's timeout bounds it)."""
        limit = self.lambda_max_transfer_bytes
        if announced_bytes is None or not limit or not self.can_hand_off:
            return
        if announced_bytes > limit:
            raise NeedsContainer(f"announces {announced_bytes} bytes; Lambda transfers at most {limit}")
