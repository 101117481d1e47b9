"""Which runner does a step's work: Lambda, or the container runner when only it can hold it."""

from __future__ import annotations

import json

import pytest

from imagetasks.config import Settings, runner_limits
from imagetasks.domain.conversion import check_working_space
from imagetasks.domain.errors import InvalidRequest
from imagetasks.domain.runners import CONTAINER, LAMBDA, NeedsContainer, RunnerLimits
from imagetasks.entrypoints.worker import error_outcome
from tests.unit.domain.test_conversion_input import image

MiB = 1024**2
GiB = 1024**3
LAMBDA_WITH_RUNNER = RunnerLimits(
    runner=LAMBDA,
    working_space_bytes=10 * GiB,
    container_working_space_bytes=200 * GiB,
    lambda_max_transfer_bytes=40 * GiB,
)
LAMBDA_ALONE = LAMBDA_WITH_RUNNER.model_copy(update={"container_working_space_bytes": 0})
THE_RUNNER = RunnerLimits(runner=CONTAINER, working_space_bytes=200 * GiB)


def test_work_that_fits_lambda_stays_on_lambda() -> None:
    check_working_space(image(size=1 * GiB, virtual_size=4 * GiB), "raw", LAMBDA_WITH_RUNNER, "convert")
    LAMBDA_WITH_RUNNER.transfer(40 * GiB)
    LAMBDA_WITH_RUNNER.transfer(None)  # an unknown length: nothing to decide on


def test_a_convert_too_large_for_lambda_goes_to_the_container_runner_before_any_work() -> None:
    with pytest.raises(NeedsContainer) as handed_off:
        check_working_space(image(size=3 * GiB, virtual_size=40 * GiB), "raw", LAMBDA_WITH_RUNNER, "convert")

    assert "working space" in handed_off.value.reason


def test_a_transfer_announcing_more_than_lambda_moves_goes_to_the_container_runner() -> None:
    with pytest.raises(NeedsContainer):
        LAMBDA_WITH_RUNNER.transfer(40 * GiB + 1)


def test_without_a_container_runner_large_work_is_refused_with_lambdas_figure() -> None:
    LAMBDA_ALONE.transfer(500 * GiB)  # no hand-off possible: the step's own limits decide

    with pytest.raises(InvalidRequest) as refused:
        check_working_space(image(size=3 * GiB, virtual_size=40 * GiB), "raw", LAMBDA_ALONE, "convert")

    assert refused.value.message.endswith("this cloud allows 10 GiB for convert tasks")


def test_work_no_runner_can_hold_is_refused_with_the_largest_figure_offered() -> None:
    huge = image(size=10 * GiB, virtual_size=1024 * GiB)

    for limits in (LAMBDA_WITH_RUNNER, THE_RUNNER):
        with pytest.raises(InvalidRequest) as refused:
            check_working_space(huge, "raw", limits, "convert")
        assert refused.value.message == (
            "Converting this image to raw needs 1035 GiB of working space (the 10 GiB image and a copy "
            "as large as its 1024 GiB virtual disk); this cloud allows 200 GiB for convert tasks"
        )


def test_the_container_runner_never_hands_work_on() -> None:
    check_working_space(image(size=3 * GiB, virtual_size=40 * GiB), "raw", THE_RUNNER, "convert")
    THE_RUNNER.transfer(1024 * GiB)


def test_the_settings_give_each_runner_its_limits() -> None:
    deployed = Settings(
        ephemeral_storage_mib=10240, container_ephemeral_storage_gib=200, lambda_max_transfer_gib=40
    )
    without = Settings(ephemeral_storage_mib=10240)

    assert runner_limits(deployed) == LAMBDA_WITH_RUNNER
    assert runner_limits(deployed.model_copy(update={"runner": CONTAINER})) == THE_RUNNER
    assert not runner_limits(without).can_hand_off
    assert runner_limits(without).largest_working_space_bytes == 10 * GiB


def test_a_step_error_reaches_the_workflow_as_a_lambda_error_would_and_faults_stay_private() -> None:
    from imagetasks.domain.failures import failure

    refused = error_outcome(failure("image_rejected", "The image has a backing file"))
    fault = error_outcome(KeyError("internal detail /tmp/x"))

    assert refused["Error"] == "TaskFailure.image_rejected"
    assert json.loads(refused["Cause"])["errorMessage"] == "The image has a backing file"
    assert fault["Error"] == "imagetasks.WorkerError" and "internal detail" not in fault["Cause"]
