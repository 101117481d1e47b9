"""DynamoDB errors become domain errors in one place: a guarded transaction's refusal."""

from __future__ import annotations

from botocore.exceptions import ClientError

from imagetasks.adapters.dynamo import ConditionFailed, Guard, translate
from imagetasks.domain.errors import ConcurrentUpdate, TaskNotProcessing


def cancelled(*reasons: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
            "CancellationReasons": [{"Code": reason} for reason in reasons],
        },
        "TransactWriteItems",
    )


GUARD = Guard(check={"TableName": "tasks", "Key": {"id": {"S": "t1"}}}, refused=TaskNotProcessing("t1 ended"))


def test_a_failed_guard_is_the_guards_own_error_whatever_the_other_items_say() -> None:
    # Given a transaction cancelled because its first item, the guard, failed its condition
    error = cancelled("ConditionalCheckFailed", "ConditionalCheckFailed", "None")

    # When it is translated with and without knowing the guard
    guarded = translate(error, GUARD)
    plain = translate(error)

    # Then only the guarded translation says the task ended
    assert guarded is GUARD.refused and isinstance(guarded, TaskNotProcessing)
    assert isinstance(plain, ConditionFailed) and not isinstance(plain, TaskNotProcessing)


def test_a_guarded_transaction_refused_for_another_reason_keeps_its_usual_error() -> None:
    # Given transactions whose guard held but another item did not
    existing_image = cancelled("None", "ConditionalCheckFailed")
    conflict = cancelled("TransactionConflict", "None")

    # When they are translated with the guard
    # Then they are what they always were: a refused condition, a concurrent update
    refused = translate(existing_image, GUARD)
    assert isinstance(refused, ConditionFailed) and refused.reasons == ["None", "ConditionalCheckFailed"]
    assert isinstance(translate(conflict, GUARD), ConcurrentUpdate)
