"""What an operator reads about a lifecycle and who they were: the `operator` of every update (trimmed, bounded,
one line), the Current Details Markdown (the customer's zone named, subscriptions by name, the data deletion
date, the last operator action), the static Details a starter gives the run, the update descriptions that ask
for the operator, and refusals that carry their sentence and no stack trace. Fast: no Temporal server."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import BaseModel, ValidationError
from temporalio.api.failure.v1 import Failure
from temporalio.exceptions import ApplicationError

from billing.encryption import RefusalFailureConverter, data_converter
from billing.lifecycle import ledger_requests, transitions
from billing.lifecycle.next_step import decide
from billing.lifecycle.status import build_status, current_details, static_details, static_summary
from billing.message_catalog import CATALOG
from billing.models import MAX_OPERATOR_LENGTH, CustomerAccount, OperatorAction, Payment, SuspendNow, WriteOff
from billing.partner_center_messages import ActiveSubscriptions, SubscriptionSummary
from billing.policy import CollectionsPolicy
from billing.settings import parse_encryption_keys
from tests.builders import cny
from tests.core_driver import CoreDriver
from tests.test_encryption import key

SHANGHAI = ZoneInfo("Asia/Shanghai")
# 10:00 in Shanghai is 02:00 UTC: a detail that showed UTC would read 02:00.
NOW = datetime(2026, 12, 3, 10, 0, tzinfo=SHANGHAI)
ACCOUNT = CustomerAccount(
    customer_id="C-1001", name="Lotus Trading", email="ap@lotus.example.cn", time_zone="Asia/Shanghai"
)


def customer_billing_updates() -> list[tuple[str, type[BaseModel], str]]:
    [workflow] = [w for w in CATALOG if w.workflow_type == "CustomerBilling"]
    return [(m.name, m.payload, m.description) for m in workflow.messages if m.kind == "update" and m.payload]


# --- the operator field -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "model", "description"), customer_billing_updates())
def test_every_update_takes_an_optional_operator_and_its_description_asks_for_it(
    name: str, model: type[BaseModel], description: str
) -> None:
    assert "operator" in model.model_fields, name
    assert model.model_fields["operator"].is_required() is False, name
    assert '"operator"' in description and "who" in description, description


@pytest.mark.parametrize(
    ("given", "kept"), [("  li.wei  ", "li.wei"), ("张敏", "张敏"), ("", None), ("   ", None), (None, None)]
)
def test_the_operator_is_trimmed_and_blank_is_no_one(given: str | None, kept: str | None) -> None:
    assert WriteOff(invoice_id="INV-1", reason="goodwill", operator=given).operator == kept
    assert OperatorAction.model_validate({"operator": given}).operator == kept


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("li\nwei", "on one line"),
        ("li\twei", "on one line"),
        ("li\u202ewei", "on one line"),  # a right-to-left override would make the audit trail lie
        ("x" * (MAX_OPERATOR_LENGTH + 1), f"at most {MAX_OPERATOR_LENGTH} characters"),
    ],
)
def test_an_operator_that_is_no_name_on_one_line_is_refused(given: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        SuspendNow(reason="fraud_review", note="card testing", operator=given)
    with pytest.raises(ValidationError, match=problem):
        Payment.model_validate(
            {
                "payment_id": "PAY-1",
                "customer_id": "C-1001",
                "amount": {"amount": "1.00", "currency": "CNY"},
                "received_at": NOW.isoformat(),
                "operator": given,
            }
        )


def test_the_audit_entry_names_the_operator_apart_from_the_details() -> None:
    state = CoreDriver(policy=CollectionsPolicy(), account=ACCOUNT, now=NOW).state
    payload = {"invoice_id": "INV-1", "reason": "goodwill", "operator": " li.wei "}

    entry = ledger_requests.audit_entry(state, "write_off", payload, "wf/upd-1", NOW)

    assert (entry.operator, entry.reason, entry.details) == ("li.wei", "goodwill", {"invoice_id": "INV-1"})
    assert ledger_requests.audit_entry(state, "reinstate", {"note": "paid"}, "wf/upd-2", NOW).operator is None


# --- current details --------------------------------------------------------------------------------------


def suspended_customer() -> CoreDriver:
    """Overdue, then suspended by an operator at NOW with two named subscriptions, and the action recorded."""
    driver = CoreDriver(policy=CollectionsPolicy(), account=ACCOUNT, now=NOW)
    driver.issue("INV-1", cny("1234.50"), NOW - timedelta(days=30))
    transitions.time_passed(driver.state, NOW)
    active = ActiveSubscriptions(
        subscription_ids=["3f2a9c1e-sub-office", "8b7d-sub-sales"],
        subscriptions=[
            SubscriptionSummary(
                subscription_id="3f2a9c1e-sub-office",
                offer_name="Office 365 E3 operated by 21Vianet",
                friendly_name="Head office",
            ),
            SubscriptionSummary(subscription_id="8b7d-sub-sales", offer_name="Microsoft 365 Business Standard"),
        ],
    )
    action = SuspendNow(reason="non_payment", note="third broken promise", operator="li.wei")
    transitions.suspended_by_operator(driver.state, action, active, NOW)
    transitions.suspension_confirmed(
        driver.state, [driver.partner_center(i, "suspended") for i in active.subscription_ids], NOW
    )
    transitions.operator_action_recorded(driver.state, "suspend_now", action.note, None, NOW, action.operator)
    return driver


def details_of(driver: CoreDriver, at: datetime = NOW) -> str:
    status = build_status(driver.state, decide(driver.state, driver.policy, at), at)
    return current_details(driver.state, status)


def test_current_details_name_the_customer_and_read_the_customers_clock() -> None:
    details = details_of(suspended_customer())

    assert "**Customer:** Lotus Trading (C-1001), times in Asia/Shanghai" in details
    assert "2026-12-03 10:00 (Asia/Shanghai)" in details
    assert "02:00" not in details and "UTC" not in details and "+00:00" not in details


def test_current_details_show_subscriptions_by_name_and_the_data_deletion_date() -> None:
    details = details_of(suspended_customer())

    assert (
        "**Suspended subscriptions:** Office 365 E3 operated by 21Vianet (Head office), Microsoft 365 Business Standard"
    ) in details
    assert "sub-office" not in details and "sub-sales" not in details
    # 60 days after 2026-12-03, 21Vianet deletes the data (CONTRACT.md): 2027-02-01.
    assert "**Suspended since:** 2026-12-03 10:00 (Asia/Shanghai) (non_payment)" in details
    assert "21Vianet deletes their data on 2027-02-01" in details


def test_current_details_name_who_acted_last_and_why() -> None:
    driver = suspended_customer()
    assert (
        "**Last operator action:** suspend_now by li.wei at 2026-12-03 10:00 (Asia/Shanghai): third broken promise"
        in details_of(driver)
    )

    later = NOW + timedelta(hours=2)
    transitions.operator_action_recorded(driver.state, "write_off", "goodwill", "INV-1", later)
    transitions.books_changed(driver.state, driver.state.balance, later)  # a lifecycle event, not an action
    details = details_of(driver, later)
    assert (
        "**Last operator action:** write_off (INV-1) by an operator who gave no name at 2026-12-03 12:00 "
        "(Asia/Shanghai): goodwill"
    ) in details


def test_a_lifecycle_with_no_suspension_or_action_shows_neither() -> None:
    driver = CoreDriver(policy=CollectionsPolicy(), account=ACCOUNT, now=NOW)
    driver.issue("INV-1", cny("880.00"), NOW + timedelta(days=30))
    details = details_of(driver)
    assert "**Stage:** Current" in details
    assert "Suspended" not in details and "deletes" not in details and "Last operator action" not in details


def test_the_static_details_say_what_stays_and_how_to_act_without_personal_data() -> None:
    account = ACCOUNT.model_copy(update={"tenant_id": "tenant-77"})
    details = static_details(account)
    assert static_summary(account) == "Billing lifecycle of customer C-1001"
    assert "tenant-77" in details and "Asia/Shanghai" in details and "zh-CN" in details
    assert "`status` query" in details and '"operator"' in details and "Current Details" in details
    assert ACCOUNT.name not in details and ACCOUNT.email not in details


# --- refusals carry their sentence only -------------------------------------------------------------------


def raised(error: BaseException) -> BaseException:
    """`error` as a handler raises it: with a traceback."""
    try:
        raise error
    except BaseException as caught:
        return caught


CONVERTERS = {"plain": data_converter(None), "encrypted": data_converter(parse_encryption_keys(key("k")))}


@pytest.mark.parametrize("converter", CONVERTERS.values(), ids=CONVERTERS.keys())
@pytest.mark.parametrize("failure_type", ["Refused", "NotStarted"])
async def test_a_refusal_carries_its_sentence_and_no_stack_trace(converter: Any, failure_type: str) -> None:
    refusal = raised(ApplicationError("cannot write off 5000.00 CNY", type=failure_type, non_retryable=True))
    failure = Failure()

    await converter.encode_failure(refusal, failure)

    assert (failure.message, failure.stack_trace) == ("cannot write off 5000.00 CNY", "")
    assert failure.application_failure_info.type == failure_type and failure.application_failure_info.non_retryable
    assert refusal.__traceback__ is not None  # the exception itself is left as it was raised
    decoded = await converter.decode_failure(failure)
    assert isinstance(decoded, ApplicationError) and decoded.message == "cannot write off 5000.00 CNY"


@pytest.mark.parametrize("converter", CONVERTERS.values(), ids=CONVERTERS.keys())
async def test_a_real_bug_keeps_its_stack_trace(converter: Any) -> None:
    bug = raised(KeyError("suspension"))
    failure = Failure()

    await converter.encode_failure(bug, failure)

    decoded = await converter.decode_failure(failure)
    assert isinstance(decoded, ApplicationError) and decoded.failure is not None
    assert 'File "/' in decoded.failure.stack_trace and "raised" in decoded.failure.stack_trace


def test_what_a_refusal_wraps_keeps_its_trace() -> None:
    try:
        try:
            {}["x"]
        except KeyError as bug:
            raise ApplicationError("the ledger refused", type="Refused") from bug
    except ApplicationError as refusal:
        failure = Failure()
        RefusalFailureConverter().to_failure(refusal, data_converter(None).payload_converter, failure)
    assert failure.stack_trace == ""
    assert 'File "/' in failure.cause.stack_trace
