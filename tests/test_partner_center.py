"""The Partner Center client and activities against the local emulator, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import importlib.machinery
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.partner_center import (
    BUSY,
    CHINA_API_RESOURCE,
    CONFLICT,
    REJECTED,
    UNAVAILABLE,
    PartnerCenterActivities,
    PartnerCenterClient,
    RateLimiter,
    StepAnswers,
    if_match,
    ms_request_id,
)
from billing.devtools.partner_center_emulator import DEFAULT_RESOURCE, PartnerCenterEmulator
from billing.partner_center_messages import (
    ActiveSubscriptions,
    SubscriptionQuery,
    SubscriptionsChange,
    SubscriptionStatusChange,
    SubscriptionStatusChanged,
    SubscriptionSummary,
)
from billing.settings import Settings, settings_from_environment
from worker import partner_center_client

TENANT = "8c1f2a9e-0d1b-4d5e-9a53-6c2b7d8e9f01"
WORKFLOW_ID = "customer-billing-c-1001"
REQUEST_KEY = f"{WORKFLOW_ID}/suspension/1/sub-1"
REQUEST_ID = ms_request_id(REQUEST_KEY)


def client_for(emulator: PartnerCenterEmulator, **options: Any) -> PartnerCenterClient:
    return PartnerCenterClient(
        emulator.base_url,
        emulator.token_url,
        emulator.client_id,
        emulator.client_secret,
        backoff=0.01,
        **options,
    )


@pytest.fixture
async def client(partner_center_emulator: PartnerCenterEmulator) -> AsyncIterator[PartnerCenterClient]:
    async with client_for(partner_center_emulator) as client:
        yield client


def token_requests(emulator: PartnerCenterEmulator) -> list[Any]:
    return [request for request in emulator.requests if request.path.endswith("/oauth2/token")]


async def emulator_token(http: httpx.AsyncClient, emulator: PartnerCenterEmulator) -> str:
    answer = await http.post(
        emulator.token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": emulator.client_id,
            "client_secret": emulator.client_secret,
            "resource": emulator.resource,
        },
    )
    return str(answer.json()["access_token"])


def api_headers(token: str, **headers: str) -> dict[str, str]:
    """What Partner Center requires of every call, for tests that talk to the emulator themselves."""
    return {
        "Authorization": f"Bearer {token}",
        "MS-RequestId": str(uuid.uuid4()),
        "MS-CorrelationId": str(uuid.uuid4()),
        "MS-Contract-Version": "v1",
        **headers,
    }


def is_guid(value: str | None) -> bool:
    try:
        return value is not None and str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


# --- token ------------------------------------------------------------------------------------------------


async def test_token_is_fetched_once_even_by_concurrent_calls_and_reused(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    await asyncio.gather(*(client.list_subscriptions(TENANT, WORKFLOW_ID) for _ in range(5)))
    await client.list_subscriptions(TENANT, WORKFLOW_ID)

    assert len(token_requests(partner_center_emulator)) == 1
    calls = partner_center_emulator.api_requests()
    assert len(calls) == 6
    assert len({call.header("Authorization") for call in calls}) == 1


async def test_token_is_renewed_before_it_expires() -> None:
    with PartnerCenterEmulator(token_lifetime=2) as emulator:
        async with client_for(emulator) as client:
            await client.list_subscriptions(TENANT, WORKFLOW_ID)
            await client.list_subscriptions(TENANT, WORKFLOW_ID)
            await asyncio.sleep(1.1)  # past half of the 2 s lifetime, where a short-lived token is renewed
            await client.list_subscriptions(TENANT, WORKFLOW_ID)

        calls = emulator.api_requests()
        assert len(token_requests(emulator)) == 2
        assert [call.status for call in calls] == [200, 200, 200]  # an expired token was never sent
        assert calls[0].header("Authorization") == calls[1].header("Authorization")
        assert calls[2].header("Authorization") != calls[1].header("Authorization")


async def test_refused_token_is_replaced_and_the_call_repeated_once(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    await client.list_subscriptions(TENANT, WORKFLOW_ID)
    partner_center_emulator.revoke_tokens()

    subscriptions = await client.list_subscriptions(TENANT, WORKFLOW_ID)

    assert len(subscriptions) == 2
    assert [call.status for call in partner_center_emulator.api_requests()] == [200, 401, 200]
    assert len(token_requests(partner_center_emulator)) == 2


async def test_token_is_asked_for_the_china_partner_center_resource(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    await client.list_subscriptions(TENANT, WORKFLOW_ID)

    (token,) = token_requests(partner_center_emulator)
    assert token.body["resource"] == "https://partner.partnercenterapi.microsoftonline.cn"
    assert "client_secret" not in token.body
    assert CHINA_API_RESOURCE == DEFAULT_RESOURCE == Settings.model_fields["partner_center_resource"].default


async def test_token_for_another_resource_is_refused_with_azure_ads_invalid_resource(
    partner_center_emulator: PartnerCenterEmulator,
) -> None:
    wrong = "https://api.partnercenterapi.microsoftonline.cn"  # what this client asked for before issue 11

    async with client_for(partner_center_emulator, resource=wrong) as client:
        with pytest.raises(ApplicationError) as failed:
            await client.list_subscriptions(TENANT, WORKFLOW_ID)
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            partner_center_emulator.token_url,
            data={
                "grant_type": "client_credentials",
                "client_id": partner_center_emulator.client_id,
                "client_secret": partner_center_emulator.client_secret,
                "resource": wrong,
            },
        )

    assert failed.value.type == REJECTED
    assert failed.value.non_retryable
    assert "HTTP 400" in failed.value.message
    assert f"AADSTS500011: The resource principal named {wrong} was not found" in failed.value.message
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"] == "invalid_resource"
    assert body["error_codes"] == [500011]
    assert body["error_description"].startswith("AADSTS500011: The resource principal named")
    assert partner_center_emulator.api_requests() == []


def worker_settings(emulator: PartnerCenterEmulator, **environment: str) -> Settings:
    return settings_from_environment(
        {
            "BILLING_PARTNER_CENTER_URL": emulator.base_url,
            "BILLING_PARTNER_CENTER_TOKEN_URL": emulator.token_url,
            "BILLING_PARTNER_CENTER_CLIENT_ID": emulator.client_id,
            "BILLING_PARTNER_CENTER_CLIENT_SECRET": emulator.client_secret,
            **environment,
        }
    )


async def test_worker_asks_for_the_resource_of_billing_partner_center_resource() -> None:
    with PartnerCenterEmulator(resource="https://partner-center.example.cn") as emulator:
        configured = worker_settings(emulator, BILLING_PARTNER_CENTER_RESOURCE="https://partner-center.example.cn")
        async with partner_center_client(configured) as client:
            subscriptions = await client.list_subscriptions(TENANT, WORKFLOW_ID)
        unconfigured = worker_settings(emulator)
        async with partner_center_client(unconfigured) as client:
            with pytest.raises(ApplicationError, match="AADSTS500011"):
                await client.list_subscriptions(TENANT, WORKFLOW_ID)

    assert len(subscriptions) == 2
    assert unconfigured.partner_center_resource == CHINA_API_RESOURCE


# --- suspension and reinstatement -------------------------------------------------------------------------


async def test_suspending_an_active_subscription_reads_it_then_patches_it_whole_under_its_etag(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active"})
    before = partner_center_emulator.subscription(TENANT, "sub-1")

    result = await client.set_subscription_status(TENANT, "sub-1", "suspended", REQUEST_KEY, WORKFLOW_ID)

    assert result == SubscriptionStatusChanged(subscription_id="sub-1", status="suspended", changed=True)
    get, patch = partner_center_emulator.api_requests()
    assert (get.method, patch.method) == ("GET", "PATCH")
    assert patch.path == f"/v1/customers/{TENANT}/subscriptions/sub-1"
    assert patch.header("If-Match") == f'"{before["attributes"]["etag"]}"'
    assert patch.header("MS-RequestId") == REQUEST_ID
    assert patch.header("MS-Contract-Version") == "v1"
    assert is_guid(get.header("MS-CorrelationId")) and is_guid(patch.header("MS-CorrelationId"))
    assert get.header("MS-CorrelationId") != patch.header("MS-CorrelationId")
    assert patch.body == {**before, "status": "suspended"}
    after = partner_center_emulator.subscription(TENANT, "sub-1")
    assert after["status"] == "suspended"
    assert after["attributes"]["etag"] != before["attributes"]["etag"]


async def test_patch_retried_after_a_server_error_keeps_its_request_id(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active"})
    partner_center_emulator.inject_fault(503, method="PATCH")

    result = await client.set_subscription_status(TENANT, "sub-1", "suspended", REQUEST_KEY, WORKFLOW_ID)

    assert result.changed
    patches = partner_center_emulator.api_requests("PATCH")
    assert [patch.status for patch in patches] == [503, 200]
    assert {patch.header("MS-RequestId") for patch in patches} == {REQUEST_ID}
    assert len({patch.header("MS-CorrelationId") for patch in patches}) == 2  # a new one for every call
    assert all(patch.header("If-Match") for patch in patches)


async def test_every_call_has_a_fresh_guid_correlation_id_logged_beside_the_workflow_id(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    partner_center_emulator.inject_fault(503)

    with capture_logs() as logs:
        await client.list_subscriptions(TENANT, WORKFLOW_ID)
        await client.list_subscriptions(TENANT, WORKFLOW_ID)

    sent = [call.header("MS-CorrelationId") for call in partner_center_emulator.api_requests()]
    assert len(sent) == 3 and all(is_guid(value) for value in sent)
    assert len(set(sent)) == 3  # the retry of the 503 too: "the value should be reset for every call"
    retried = [entry for entry in logs if entry["event"] == "partner_center.retrying"]
    answered = [entry for entry in logs if entry["event"] == "partner_center.call"]
    assert [entry["correlation_id"] for entry in retried + answered] == sent
    assert {entry["workflow_id"] for entry in retried + answered} == {WORKFLOW_ID}


@pytest.mark.parametrize(
    ("etag", "sent"),
    [
        ("eyJpZCI6IjQyMjI2ZWQ2In0=", '"eyJpZCI6IjQyMjI2ZWQ2In0="'),
        ('"abc"', '"abc"'),
        ('W/"abc"', 'W/"abc"'),
    ],
    ids=["bare", "quoted", "weak"],
)
def test_if_match_carries_the_etag_in_double_quotes_exactly_once(etag: str, sent: str) -> None:
    assert if_match(etag) == sent


async def test_emulator_refuses_calls_without_guid_ids_a_contract_version_or_a_quoted_if_match(
    partner_center_emulator: PartnerCenterEmulator,
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active"})
    url = f"/v1/customers/{TENANT}/subscriptions/sub-1"
    async with httpx.AsyncClient(base_url=partner_center_emulator.base_url) as http:
        token = await emulator_token(http, partner_center_emulator)
        resource = (await http.get(url, headers=api_headers(token))).json()
        etag = resource["attributes"]["etag"]
        suspend = {**resource, "status": "suspended"}
        without_correlation = api_headers(token, **{"If-Match": f'"{etag}"'})
        del without_correlation["MS-CorrelationId"]
        without_version = api_headers(token, **{"If-Match": f'"{etag}"'})
        del without_version["MS-Contract-Version"]
        answers = {
            "no correlation id": await http.patch(url, headers=without_correlation, json=suspend),
            "workflow id as correlation id": await http.patch(
                url,
                headers=api_headers(token, **{"MS-CorrelationId": WORKFLOW_ID, "If-Match": f'"{etag}"'}),
                json=suspend,
            ),
            "request key as request id": await http.patch(
                url,
                headers=api_headers(token, **{"MS-RequestId": "c-1001/suspension/1", "If-Match": f'"{etag}"'}),
                json=suspend,
            ),
            "no contract version": await http.patch(url, headers=without_version, json=suspend),
            "unquoted if-match": await http.patch(url, headers=api_headers(token, **{"If-Match": etag}), json=suspend),
        }
        quoted = await http.patch(url, headers=api_headers(token, **{"If-Match": f'"{etag}"'}), json=suspend)

    for why, answer in answers.items():
        assert (answer.status_code, answer.json()["code"]) == (400, "800002"), why
    assert "MS-CorrelationId must be a GUID" in answers["workflow id as correlation id"].json()["description"]
    assert "MS-RequestId must be a GUID" in answers["request key as request id"].json()["description"]
    assert "MS-Contract-Version" in answers["no contract version"].json()["description"]
    assert "double quotes" in answers["unquoted if-match"].json()["description"]
    assert quoted.status_code == 200
    assert partner_center_emulator.subscription(TENANT, "sub-1")["status"] == "suspended"


async def test_activity_retried_by_temporal_sends_the_same_request_id(
    partner_center_emulator: PartnerCenterEmulator,
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active"})
    partner_center_emulator.inject_fault(503, times=2, method="PATCH")
    change = SubscriptionStatusChange(
        tenant_id=TENANT,
        subscription_id="sub-1",
        target="suspended",
        request_key=f"{WORKFLOW_ID}/suspension/1/sub-1",
        correlation_id=WORKFLOW_ID,
    )
    first, second = ActivityEnvironment(), ActivityEnvironment()
    heartbeats: list[Any] = []
    first.on_heartbeat = lambda *details: heartbeats.append(details)
    async with client_for(partner_center_emulator, max_attempts=2) as client:
        activities = PartnerCenterActivities(client)
        with pytest.raises(ApplicationError) as failed:
            await first.run(activities.change_subscription_status, change)
        # Temporal's next attempt: a later attempt number, and the heartbeat details the first one left (none).
        second.info = replace(first.info, attempt=2, heartbeat_details=[d for beat in heartbeats for d in beat])
        result = await second.run(activities.change_subscription_status, change)

    assert failed.value.type == UNAVAILABLE
    assert not failed.value.non_retryable
    # A 503 is no answer: the id stays (the activity's regular beats carry no answer either).
    assert all(beat == (StepAnswers(answered=0),) for beat in heartbeats)
    assert result == SubscriptionStatusChanged(subscription_id="sub-1", status="suspended", changed=True)
    patches = partner_center_emulator.api_requests("PATCH")
    assert [patch.status for patch in patches] == [503, 503, 200]
    assert {patch.header("MS-RequestId") for patch in patches} == {ms_request_id(change.request_key)}


async def test_activity_retried_by_temporal_after_a_busy_answer_sends_a_new_request_id(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active"})
    # 409 800082 "Subscription is not ready to be updated. Try again after sometime", remembered under its id.
    partner_center_emulator.refuse_status_change(TENANT, "sub-1", "800082", times=1)
    change = SubscriptionStatusChange(
        tenant_id=TENANT,
        subscription_id="sub-1",
        target="suspended",
        request_key=REQUEST_KEY,
        correlation_id=WORKFLOW_ID,
    )
    first, second = ActivityEnvironment(), ActivityEnvironment()
    heartbeats: list[Any] = []
    first.on_heartbeat = lambda *details: heartbeats.append(details)
    activities = PartnerCenterActivities(client)

    with pytest.raises(ApplicationError) as busy:
        await first.run(activities.change_subscription_status, change)
    second.info = replace(first.info, attempt=2, heartbeat_details=[d for beat in heartbeats for d in beat])
    result = await second.run(activities.change_subscription_status, change)

    assert busy.value.type == BUSY
    assert not busy.value.non_retryable
    assert "Subscription is not ready to be updated" in busy.value.message
    # The busy answer is reported at once; the regular beats carry the count so far.
    assert heartbeats[-1] == (StepAnswers(answered=1),)
    assert all(beat in ((StepAnswers(answered=0),), (StepAnswers(answered=1),)) for beat in heartbeats)
    assert (result.changed, result.status) == (True, "suspended")
    patches = partner_center_emulator.api_requests("PATCH")
    assert [patch.status for patch in patches] == [409, 200]
    assert [patch.header("MS-RequestId") for patch in patches] == [REQUEST_ID, ms_request_id(REQUEST_KEY, 1)]


async def test_busy_answer_to_the_read_is_retryable_too(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active"})
    partner_center_emulator.inject_fault(409, method="GET")

    with pytest.raises(ApplicationError) as busy:
        await client.set_subscription_status(TENANT, "sub-1", "suspended", REQUEST_KEY, WORKFLOW_ID)

    assert (busy.value.type, busy.value.non_retryable) == (BUSY, False)
    assert partner_center_emulator.api_requests("PATCH") == []


@workflow.defn(name="ChangeOneSubscription")
class ChangeOneSubscription:
    """Runs the activity with a quick retry policy, so a test sees what Temporal carries between attempts."""

    @workflow.run
    async def run(self, change: SubscriptionStatusChange) -> SubscriptionStatusChanged:
        return await workflow.execute_activity_method(
            PartnerCenterActivities.change_subscription_status,
            change,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=3),
        )


async def test_a_real_temporal_retry_after_a_busy_answer_sends_a_new_request_id(
    time_skipping_env: WorkflowEnvironment, partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active"})
    partner_center_emulator.refuse_status_change(TENANT, "sub-1", "800082", times=1)
    change = SubscriptionStatusChange(
        tenant_id=TENANT,
        subscription_id="sub-1",
        target="suspended",
        request_key=REQUEST_KEY,
        correlation_id=WORKFLOW_ID,
    )
    task_queue = f"partner-center-{uuid.uuid4()}"
    async with Worker(
        time_skipping_env.client,
        task_queue=task_queue,
        workflows=[ChangeOneSubscription],
        activities=[PartnerCenterActivities(client).change_subscription_status],
        workflow_runner=UnsandboxedWorkflowRunner(),  # the workflow lives in this test module
    ):
        result = await time_skipping_env.client.execute_workflow(
            ChangeOneSubscription.run, change, id=f"change-{uuid.uuid4()}", task_queue=task_queue
        )

    assert (result.changed, result.status) == (True, "suspended")
    patches = partner_center_emulator.api_requests("PATCH")
    assert [patch.status for patch in patches] == [409, 200]
    assert [patch.header("MS-RequestId") for patch in patches] == [REQUEST_ID, ms_request_id(REQUEST_KEY, 1)]


async def test_already_suspended_subscription_is_not_patched(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "suspended"})

    result = await client.set_subscription_status(TENANT, "sub-1", "suspended", REQUEST_KEY, WORKFLOW_ID)

    assert result == SubscriptionStatusChanged(subscription_id="sub-1", status="suspended", changed=False)
    assert [call.method for call in partner_center_emulator.api_requests()] == ["GET"]


@pytest.mark.parametrize("status", ["deleted", "pending", "expired", "disabled"])
async def test_only_an_active_subscription_is_suspended(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient, status: str
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": status})

    result = await client.set_subscription_status(TENANT, "sub-1", "suspended", REQUEST_KEY, WORKFLOW_ID)

    assert result == SubscriptionStatusChanged(subscription_id="sub-1", status=status, changed=False)
    assert partner_center_emulator.api_requests("PATCH") == []
    assert partner_center_emulator.subscription(TENANT, "sub-1")["status"] == status


async def test_reinstatement_patches_the_subscription_back_to_active(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "suspended"})
    change = SubscriptionStatusChange(
        tenant_id=TENANT,
        subscription_id="sub-1",
        target="active",
        request_key=f"{WORKFLOW_ID}/reinstatement/1/sub-1",
        correlation_id=WORKFLOW_ID,
    )

    result = await ActivityEnvironment().run(PartnerCenterActivities(client).change_subscription_status, change)

    assert result == SubscriptionStatusChanged(subscription_id="sub-1", status="active", changed=True)
    (patch,) = partner_center_emulator.api_requests("PATCH")
    assert patch.body["status"] == "active"
    assert patch.header("MS-RequestId") == ms_request_id(change.request_key)
    assert partner_center_emulator.subscription(TENANT, "sub-1")["status"] == "active"


@pytest.mark.parametrize(
    ("seeded", "refusal", "expected"),
    [
        ("deleted", None, SubscriptionStatusChanged(subscription_id="sub-1", status="deleted", changed=False)),
        ("expired", None, SubscriptionStatusChanged(subscription_id="sub-1", status="expired", changed=False)),
        (
            "suspended",
            "800096",
            SubscriptionStatusChanged(
                subscription_id="sub-1",
                status="suspended",
                changed=False,
                refused=True,
                error_code="800096",
                error_text="Can't update the status for this subscription",
            ),
        ),
    ],
    ids=["deleted", "expired", "refused"],
)
async def test_reinstatement_that_does_not_take_reports_the_status_partner_center_kept(
    partner_center_emulator: PartnerCenterEmulator,
    client: PartnerCenterClient,
    seeded: str,
    refusal: str | None,
    expected: SubscriptionStatusChanged,
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": seeded})
    if refusal is not None:
        partner_center_emulator.refuse_status_change(TENANT, "sub-1", refusal)
    change = SubscriptionStatusChange(
        tenant_id=TENANT,
        subscription_id="sub-1",
        target="active",
        request_key=f"{WORKFLOW_ID}/reinstatement/1/sub-1",
        correlation_id=WORKFLOW_ID,
    )

    result = await ActivityEnvironment().run(PartnerCenterActivities(client).change_subscription_status, change)

    assert result == expected
    assert partner_center_emulator.subscription(TENANT, "sub-1")["status"] == seeded


async def test_list_active_subscriptions_leaves_out_every_other_status(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    partner_center_emulator.seed_tenant(
        TENANT, {"a": "active", "s": "suspended", "d": "deleted", "b": "active", "p": "pending"}
    )

    result = await ActivityEnvironment().run(
        PartnerCenterActivities(client).list_active_subscriptions,
        SubscriptionQuery(tenant_id=TENANT, correlation_id=WORKFLOW_ID),
    )

    assert result.subscription_ids == ["a", "b"]


async def test_list_active_subscriptions_names_each_by_its_offer_name_and_friendly_name(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    e3, standard = "Office 365 E3 operated by 21Vianet", "Microsoft 365 Business Standard operated by 21Vianet"
    partner_center_emulator.seed_tenant(
        TENANT,
        {"a": "active", "s": "suspended", "b": "active"},
        offer_names={"a": e3, "s": e3, "b": standard},
        friendly_names={"a": "Shanghai office", "s": "Old seats"},
    )

    result = await ActivityEnvironment().run(
        PartnerCenterActivities(client).list_active_subscriptions,
        SubscriptionQuery(tenant_id=TENANT, correlation_id=WORKFLOW_ID),
    )

    assert result.subscription_ids == ["a", "b"]
    assert result.subscriptions == [
        SubscriptionSummary(subscription_id="a", offer_name=e3, friendly_name="Shanghai office"),
        SubscriptionSummary(subscription_id="b", offer_name=standard, friendly_name=standard),  # never renamed
    ]


def test_results_recorded_before_names_and_refusals_still_decode() -> None:
    listed = ActiveSubscriptions.model_validate_json('{"subscription_ids": ["a", "b"]}')
    changed = SubscriptionStatusChanged.model_validate_json(
        '{"subscription_id": "a", "status": "suspended", "changed": true}'
    )

    assert (listed.subscription_ids, listed.subscriptions) == (["a", "b"], [])
    assert (changed.refused, changed.error_code, changed.error_text) == (False, None, None)


@pytest.mark.parametrize("stale_answer", [400, 412], ids=["400-code-2055", "412"])
async def test_subscription_changed_between_get_and_patch_is_read_again_and_patched(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient, stale_answer: int
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active"})
    if stale_answer == 400:
        partner_center_emulator.simulate_concurrent_edit()  # the emulator answers a stale etag as 400/2055
    else:
        partner_center_emulator.inject_fault(412, method="PATCH")

    result = await client.set_subscription_status(TENANT, "sub-1", "suspended", REQUEST_KEY, WORKFLOW_ID)

    assert result == SubscriptionStatusChanged(subscription_id="sub-1", status="suspended", changed=True)
    calls = partner_center_emulator.api_requests()
    assert [(call.method, call.status) for call in calls] == [
        ("GET", 200),
        ("PATCH", stale_answer),
        ("GET", 200),
        ("PATCH", 200),
    ]
    first, second = calls[1], calls[3]
    if stale_answer == 400:
        assert first.header("If-Match") != second.header("If-Match")
    # Partner Center would answer a reused id with the stale etag again, so the second PATCH has an id of its own.
    assert first.header("MS-RequestId") == REQUEST_ID
    assert second.header("MS-RequestId") == ms_request_id(REQUEST_KEY, 1) != REQUEST_ID


async def test_subscription_that_keeps_changing_gives_up_with_a_retryable_conflict(
    partner_center_emulator: PartnerCenterEmulator,
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active"})
    partner_center_emulator.simulate_concurrent_edit(times=3)

    answers: list[int] = []
    async with client_for(partner_center_emulator, max_conflicts=2) as client:
        with pytest.raises(ApplicationError) as failed:
            await client.set_subscription_status(
                TENANT, "sub-1", "suspended", REQUEST_KEY, WORKFLOW_ID, on_answered=answers.append
            )

    assert failed.value.type == CONFLICT
    assert not failed.value.non_retryable
    patches = partner_center_emulator.api_requests("PATCH")
    assert [patch.header("MS-RequestId") for patch in patches] == [ms_request_id(REQUEST_KEY, n) for n in range(3)]
    assert answers == [1, 2, 3]  # what the next attempt starts from, so it sends none of these ids again


# --- throttling, outages and refusals ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "minimum_wait"),
    [
        (lambda: "1", 1.0),
        (lambda: format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True), 0.9),
    ],
    ids=["seconds", "http-date"],
)
async def test_throttled_call_waits_for_retry_after_then_succeeds(
    partner_center_emulator: PartnerCenterEmulator,
    client: PartnerCenterClient,
    retry_after: Any,
    minimum_wait: float,
) -> None:
    partner_center_emulator.inject_fault(429, retry_after=retry_after())

    subscriptions = await client.list_subscriptions(TENANT, WORKFLOW_ID)

    assert len(subscriptions) == 2
    throttled, retried = partner_center_emulator.api_requests()
    assert (throttled.status, retried.status) == (429, 200)
    assert retried.at - throttled.at >= minimum_wait


async def test_throttling_longer_than_the_cap_is_left_to_temporal(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    partner_center_emulator.inject_fault(429, retry_after="120")

    with pytest.raises(ApplicationError) as failed:
        await client.list_subscriptions(TENANT, WORKFLOW_ID)

    assert failed.value.type == UNAVAILABLE
    assert not failed.value.non_retryable
    assert failed.value.next_retry_delay == timedelta(seconds=120)
    assert len(partner_center_emulator.api_requests()) == 1


async def test_unavailable_service_is_retried_with_backoff_then_succeeds(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    partner_center_emulator.inject_fault(503, times=2)

    subscriptions = await client.list_subscriptions(TENANT, WORKFLOW_ID)

    assert len(subscriptions) == 2
    assert [call.status for call in partner_center_emulator.api_requests()] == [503, 503, 200]


async def test_dropped_connection_is_retried(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    partner_center_emulator.inject_fault("disconnect")

    subscriptions = await client.list_subscriptions(TENANT, WORKFLOW_ID)

    assert len(subscriptions) == 2
    assert [call.status for call in partner_center_emulator.api_requests()] == [0, 200]


async def test_lasting_outage_gives_up_with_a_retryable_error(
    partner_center_emulator: PartnerCenterEmulator,
) -> None:
    partner_center_emulator.inject_fault(500, times=3)

    async with client_for(partner_center_emulator, max_attempts=3) as client:
        with pytest.raises(ApplicationError) as failed:
            await client.list_subscriptions(TENANT, WORKFLOW_ID)

    assert failed.value.type == UNAVAILABLE
    assert not failed.value.non_retryable
    assert "HTTP 500" in failed.value.message
    assert len(partner_center_emulator.api_requests()) == 3


async def test_bad_request_is_a_refusal_at_once_with_partner_centers_words(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active"})

    result = await client.set_subscription_status(TENANT, "sub-1", "frozen", REQUEST_KEY, WORKFLOW_ID)

    assert (result.refused, result.changed, result.status, result.error_code) == (True, False, "active", "800002")
    assert result.error_text is not None and "'frozen' is not one of" in result.error_text
    assert len(partner_center_emulator.api_requests("PATCH")) == 1
    assert partner_center_emulator.subscription(TENANT, "sub-1")["status"] == "active"


async def test_unknown_subscription_is_a_refusal_at_once_with_partner_centers_words(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active"})

    result = await client.set_subscription_status(TENANT, "sub-gone", "suspended", REQUEST_KEY, WORKFLOW_ID)

    assert result == SubscriptionStatusChanged(
        subscription_id="sub-gone",
        status="",
        changed=False,
        refused=True,
        error_code="20003",
        error_text="Subscription with ID sub-gone not found.",
    )
    assert len(partner_center_emulator.api_requests()) == 1


@pytest.mark.parametrize(
    ("code", "text"),
    [
        ("800096", "Can't update the status for this subscription"),
        ("900115", "Azure plan can't be moved to suspended state since you have one or more Azure Subscriptions"),
        ("2011", "Subscription with ID sub-1 and deleted status can't be updated."),
    ],
)
async def test_subscription_partner_center_refuses_is_reported_not_retried(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient, code: str, text: str
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active", "sub-2": "active"})
    partner_center_emulator.refuse_status_change(TENANT, "sub-1", code)
    activities = PartnerCenterActivities(client)

    refused, other = [
        await ActivityEnvironment().run(
            activities.change_subscription_status,
            SubscriptionStatusChange(
                tenant_id=TENANT,
                subscription_id=subscription_id,
                target="suspended",
                request_key=f"{WORKFLOW_ID}/suspension/1/{subscription_id}",
                correlation_id=WORKFLOW_ID,
            ),
        )
        for subscription_id in ("sub-1", "sub-2")
    ]

    assert (refused.refused, refused.changed, refused.status, refused.error_code) == (True, False, "active", code)
    assert refused.error_text is not None and refused.error_text.startswith(text)
    assert (other.refused, other.changed, other.status) == (False, True, "suspended")
    patches = [call for call in partner_center_emulator.api_requests("PATCH") if call.path.endswith("/sub-1")]
    assert [call.status for call in patches] == [403 if code == "900115" else 400]  # once: not retried
    assert partner_center_emulator.subscription(TENANT, "sub-1")["status"] == "active"


@pytest.mark.parametrize(("status", "times"), [(401, 2), (403, 1)])
async def test_the_callers_rights_refused_still_fail_the_call(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient, status: int, times: int
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active"})
    partner_center_emulator.inject_fault(status, times=times, method="PATCH")

    with pytest.raises(ApplicationError) as failed:
        await client.set_subscription_status(TENANT, "sub-1", "suspended", REQUEST_KEY, WORKFLOW_ID)

    assert failed.value.type == REJECTED
    assert failed.value.non_retryable
    assert f"HTTP {status}" in failed.value.message
    assert [call.status for call in partner_center_emulator.api_requests("PATCH")] == [status] * times


async def test_request_timeout_is_retried_like_a_server_error(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active"})
    partner_center_emulator.inject_fault(408, method="PATCH")

    result = await client.set_subscription_status(TENANT, "sub-1", "suspended", REQUEST_KEY, WORKFLOW_ID)

    assert (result.changed, result.refused) == (True, False)
    assert [call.status for call in partner_center_emulator.api_requests("PATCH")] == [408, 200]


async def test_rejection_carries_partner_centers_code_and_description_as_details(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active"})

    with pytest.raises(ApplicationError) as failed:
        await client.get_subscription(TENANT, "sub-gone", WORKFLOW_ID)

    assert failed.value.details == (
        {"status": 404, "code": "20003", "description": "Subscription with ID sub-gone not found."},
    )


async def test_wrong_client_secret_is_rejected_at_once(
    partner_center_emulator: PartnerCenterEmulator,
) -> None:
    async with PartnerCenterClient(
        partner_center_emulator.base_url,
        partner_center_emulator.token_url,
        "emulator-client",
        "not-the-secret-7f3a",
    ) as client:
        with pytest.raises(ApplicationError) as failed:
            await client.list_subscriptions(TENANT, WORKFLOW_ID)

    assert failed.value.type == REJECTED
    assert failed.value.non_retryable
    assert "HTTP 401" in failed.value.message
    assert "invalid_client" in failed.value.message
    assert "not-the-secret-7f3a" not in failed.value.message
    assert partner_center_emulator.api_requests() == []


# --- rate limit -------------------------------------------------------------------------------------------


async def test_no_more_than_eight_calls_start_within_any_second() -> None:
    """The limiter on a clock the test moves: exact, whatever else the machine is doing (a wall-clock version
    of this test failed on a loaded machine)."""
    now = 100.0

    async def sleep(seconds: float) -> None:
        nonlocal now
        now += seconds
        await asyncio.sleep(0)

    limiter = RateLimiter(8, clock=lambda: now, sleep=sleep)
    starts = await asyncio.gather(*(limiter.acquire() for _ in range(20)))
    moments = sorted(starts)
    assert len(moments) == 20 and moments[:8] == [100.0] * 8
    assert all(ninth - first >= 1.0 for first, ninth in zip(moments, moments[8:], strict=False))
    assert moments[-1] - moments[0] < 3.0  # and it does not wait longer than it must


async def test_the_client_starts_every_call_through_its_rate_limiter(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    await asyncio.gather(*(client.list_subscriptions(TENANT, WORKFLOW_ID) for _ in range(12)))
    # Twelve calls at eight a second: the last four wait for the window. Only a lower bound, with room for
    # the first call's own latency: a loaded machine can only make the batch take longer.
    arrivals = sorted(call.at for call in partner_center_emulator.api_requests())
    assert len(arrivals) == 12 and arrivals[-1] - arrivals[0] >= 0.5


# --- the emulator itself ----------------------------------------------------------------------------------


async def test_new_tenant_gets_two_active_demo_subscriptions_with_stable_ids(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    first = await client.list_subscriptions(TENANT, WORKFLOW_ID)
    with PartnerCenterEmulator() as other_emulator:
        async with client_for(other_emulator) as other_client:
            again = await other_client.list_subscriptions(TENANT, WORKFLOW_ID)
            other_tenant = await other_client.list_subscriptions("another-tenant", WORKFLOW_ID)

    assert [s.status for s in first] == ["active", "active"]
    assert [s.subscription_id for s in first] == [s.subscription_id for s in again]
    assert {s.subscription_id for s in first}.isdisjoint(s.subscription_id for s in other_tenant)


async def test_emulator_requires_a_bearer_token_a_current_etag_and_a_known_status(
    partner_center_emulator: PartnerCenterEmulator,
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active"})
    url = f"/v1/customers/{TENANT}/subscriptions/sub-1"
    async with httpx.AsyncClient(base_url=partner_center_emulator.base_url) as http:
        assert (await http.get(url)).status_code == 401
        token = await emulator_token(http, partner_center_emulator)
        resource = (await http.get(url, headers=api_headers(token))).json()
        etag = resource["attributes"]["etag"]
        suspend, freeze = {**resource, "status": "suspended"}, {**resource, "status": "frozen"}

        without_etag = await http.patch(url, headers=api_headers(token), json=suspend)
        stale = await http.patch(url, headers=api_headers(token, **{"If-Match": '"stale"'}), json=suspend)
        unknown = await http.patch(url, headers=api_headers(token, **{"If-Match": f'"{etag}"'}), json=freeze)

    assert without_etag.status_code == 412
    assert (stale.status_code, stale.json()["code"]) == (400, "2055")
    assert (unknown.status_code, unknown.json()["code"]) == (400, "800002")
    assert partner_center_emulator.subscription(TENANT, "sub-1")["attributes"]["etag"] == etag


async def test_emulator_answers_every_error_in_partner_centers_error_shape(
    partner_center_emulator: PartnerCenterEmulator,
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active"})
    async with httpx.AsyncClient(base_url=partner_center_emulator.base_url) as http:
        token = await emulator_token(http, partner_center_emulator)
        url = f"/v1/customers/{TENANT}/subscriptions/sub-1"
        resource = (await http.get(url, headers=api_headers(token))).json()
        suspend = {**resource, "status": "suspended"}
        answers = [
            await http.get(url),
            await http.get("/v1/nowhere", headers=api_headers(token)),
            await http.get(f"/v1/customers/{TENANT}/subscriptions/sub-gone", headers=api_headers(token)),
            await http.patch(url, headers=api_headers(token, **{"If-Match": '"stale"'}), json=suspend),
        ]
        partner_center_emulator.inject_fault(503)
        answers.append(await http.get(url, headers=api_headers(token)))

    assert [answer.status_code for answer in answers] == [401, 404, 404, 400, 503]
    for answer in answers:
        body = answer.json()
        assert set(body) == {"code", "description", "data", "source"}
        assert isinstance(body["code"], str) and body["description"]
        assert isinstance(body["data"], list)
    assert [answer.json()["code"] for answer in answers] == ["400", "1000", "20003", "2055", "503"]


@pytest.mark.parametrize(
    ("status", "code"), [("deleted", "2011"), ("expired", "800096"), ("pending", "800096"), ("disabled", "800096")]
)
async def test_emulator_refuses_to_revive_a_subscription_that_is_not_active_or_suspended(
    partner_center_emulator: PartnerCenterEmulator, status: str, code: str
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": status})
    url = f"/v1/customers/{TENANT}/subscriptions/sub-1"
    async with httpx.AsyncClient(base_url=partner_center_emulator.base_url) as http:
        token = await emulator_token(http, partner_center_emulator)
        resource = (await http.get(url, headers=api_headers(token))).json()
        etag = resource["attributes"]["etag"]
        answer = await http.patch(
            url, headers=api_headers(token, **{"If-Match": f'"{etag}"'}), json={**resource, "status": "active"}
        )

    assert (answer.status_code, answer.json()["code"]) == (400, code)
    assert partner_center_emulator.subscription(TENANT, "sub-1")["status"] == status


async def test_emulator_keeps_a_refusal_across_a_restart_and_forgets_it_once_used(tmp_path: Path) -> None:
    state_file = tmp_path / "partner-center-emulator.json"
    with PartnerCenterEmulator(state_file=state_file) as emulator:
        emulator.seed_tenant(TENANT, {"sub-1": "active"})
        emulator.refuse_status_change(TENANT, "sub-1", "800096", times=1)

    with PartnerCenterEmulator(state_file=state_file) as restarted:
        async with client_for(restarted) as client:
            first = await client.set_subscription_status(TENANT, "sub-1", "suspended", REQUEST_KEY, WORKFLOW_ID)
            again = await client.set_subscription_status(TENANT, "sub-1", "suspended", "another step", WORKFLOW_ID)

    assert (first.refused, first.error_code) == (True, "800096")
    assert (again.refused, again.changed, again.status) == (False, True, "suspended")


async def test_emulator_answers_a_replayed_patch_as_it_did_the_first_time(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active"})
    await client.set_subscription_status(TENANT, "sub-1", "suspended", REQUEST_KEY, WORKFLOW_ID)
    (patch,) = partner_center_emulator.api_requests("PATCH")
    after_first = partner_center_emulator.subscription(TENANT, "sub-1")

    async with httpx.AsyncClient(base_url=partner_center_emulator.base_url) as http:
        # The same request again: its If-Match is stale by now, yet the remembered answer comes back.
        replay = await http.patch(
            patch.path,
            headers={
                name: value
                for name, value in patch.headers.items()
                if name in ("authorization", "if-match", "ms-requestid", "ms-correlationid", "ms-contract-version")
            },
            json=patch.body,
        )

    assert replay.status_code == 200
    assert replay.json() == after_first
    assert partner_center_emulator.subscription(TENANT, "sub-1") == after_first


async def test_emulator_keeps_subscriptions_across_a_restart(tmp_path: Path) -> None:
    state_file = tmp_path / "partner-center-emulator.json"
    with PartnerCenterEmulator(state_file=state_file) as emulator:
        async with client_for(emulator) as client:
            suspended, kept = await client.list_subscriptions(TENANT, WORKFLOW_ID)
            await client.set_subscription_status(
                TENANT, suspended.subscription_id, "suspended", REQUEST_KEY, WORKFLOW_ID
            )

    with PartnerCenterEmulator(state_file=state_file) as restarted:
        async with client_for(restarted) as client:
            statuses = {s.subscription_id: s.status for s in await client.list_subscriptions(TENANT, WORKFLOW_ID)}

    assert statuses == {suspended.subscription_id: "suspended", kept.subscription_id: "active"}


def test_emulator_command_prints_its_urls_and_stops_cleanly_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "billing.devtools.partner_center_emulator", "--port", "0", "--quiet"],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = [process.stdout.readline() for _ in range(7)]
        urls = dict(line.strip().split("=", 1) for line in banner if "=" in line)
        token = httpx.post(
            urls["BILLING_PARTNER_CENTER_TOKEN_URL"],
            data={
                "grant_type": "client_credentials",
                "client_id": urls["BILLING_PARTNER_CENTER_CLIENT_ID"],
                "client_secret": urls["BILLING_PARTNER_CENTER_CLIENT_SECRET"],
                "resource": urls["BILLING_PARTNER_CENTER_RESOURCE"],
            },
        )
        assert token.status_code == 200
        assert urls["BILLING_PARTNER_CENTER_RESOURCE"] == DEFAULT_RESOURCE
        assert urls["BILLING_PARTNER_CENTER_URL"].startswith("http://127.0.0.1:")
        process.send_signal(signal.SIGTERM)
        remaining_output, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    assert "stopped" in remaining_output


async def test_activities_heartbeat_while_partner_center_keeps_them_waiting(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 429 with Retry-After holds the call inside one attempt: the activity keeps beating, so a worker killed
    meanwhile is noticed within the heartbeat timeout (seconds) instead of the 5-minute start-to-close."""
    from activities import heartbeat

    monkeypatch.setattr(heartbeat, "EVERY_SECONDS", 0.2)
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active"})
    partner_center_emulator.inject_fault(429, times=1, retry_after="1")
    environment = ActivityEnvironment()
    beats: list[Any] = []
    environment.on_heartbeat = lambda *details: beats.append(details)
    activities = PartnerCenterActivities(client)

    active = await environment.run(
        activities.list_active_subscriptions, SubscriptionQuery(tenant_id=TENANT, correlation_id=WORKFLOW_ID)
    )

    assert active.subscription_ids == ["sub-1"]
    assert len(beats) >= 3  # every 0.2 s through the second Partner Center asked us to wait


async def test_a_call_partner_center_answers_at_once_sends_no_heartbeat(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    """A heartbeat that reaches the server is a Temporal Cloud action: a call over before the first beat (2 s)
    sends none."""
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active"})
    environment = ActivityEnvironment()
    beats: list[Any] = []
    environment.on_heartbeat = lambda *details: beats.append(details)

    await environment.run(
        PartnerCenterActivities(client).list_active_subscriptions,
        SubscriptionQuery(tenant_id=TENANT, correlation_id=WORKFLOW_ID),
    )

    assert beats == []


async def test_emulator_storm_answers_429_and_5xx_in_turn_until_it_ends(
    partner_center_emulator: PartnerCenterEmulator,
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active"})
    url = f"{partner_center_emulator.base_url}/v1/customers/{TENANT}/subscriptions"
    async with httpx.AsyncClient() as http:
        token = await emulator_token(http, partner_center_emulator)  # token requests are never stormed
        partner_center_emulator.storm(0.5, retry_after="2")
        during = [await http.get(url, headers=api_headers(token)) for _ in range(4)]
        await asyncio.sleep(0.6)
        after = await http.get(url, headers=api_headers(token))

    assert [answer.status_code for answer in during] == [429, 500, 503, 429]
    assert during[0].headers["Retry-After"] == "2" and "Retry-After" not in during[1].headers
    assert after.status_code == 200


# --- change_subscriptions: one activity for all of a customer's subscriptions -----------------------------------


def subscriptions_change(*subscription_ids: str, target: str = "suspended") -> SubscriptionsChange:
    return SubscriptionsChange(
        tenant_id=TENANT,
        subscription_ids=list(subscription_ids),
        target=target,  # type: ignore[arg-type]
        request_key=f"{WORKFLOW_ID}/suspension-1",
        correlation_id=WORKFLOW_ID,
    )


async def test_one_activity_lists_once_then_patches_each_subscription_under_the_listed_etag(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active", "sub-2": "active", "sub-3": "suspended"})
    listed = {s.subscription_id: s.etag for s in await client.list_subscriptions(TENANT, WORKFLOW_ID)}
    before = len(partner_center_emulator.api_requests())

    changed = await ActivityEnvironment().run(
        PartnerCenterActivities(client).change_subscriptions, subscriptions_change("sub-1", "sub-2")
    )

    assert changed.results == [
        SubscriptionStatusChanged(subscription_id="sub-1", status="suspended", changed=True),
        SubscriptionStatusChanged(subscription_id="sub-2", status="suspended", changed=True),
    ]
    calls = partner_center_emulator.api_requests()[before:]
    assert [call.method for call in calls] == ["GET", "PATCH", "PATCH"]  # no GET of its own before each PATCH
    assert calls[0].path.endswith(f"/customers/{TENANT}/subscriptions")
    patches = {call.path.rsplit("/", 1)[-1]: call for call in calls[1:]}
    assert {sid: call.header("If-Match") for sid, call in patches.items()} == {
        sid: if_match(listed[sid]) for sid in ("sub-1", "sub-2")
    }
    assert {call.header("MS-RequestId") for call in patches.values()} == {
        ms_request_id(f"{WORKFLOW_ID}/suspension-1/sub-1"),
        ms_request_id(f"{WORKFLOW_ID}/suspension-1/sub-2"),
    }


async def test_a_subscription_changed_since_the_list_is_read_again_and_the_others_still_change(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active", "sub-2": "active"})
    partner_center_emulator.inject_fault(412, method="PATCH", times=1)

    changed = await ActivityEnvironment().run(
        PartnerCenterActivities(client).change_subscriptions, subscriptions_change("sub-1", "sub-2")
    )

    assert [result.status for result in changed.results] == ["suspended", "suspended"]
    calls = [(call.method, call.status) for call in partner_center_emulator.api_requests()]
    assert calls.count(("PATCH", 412)) == 1
    assert calls.count(("GET", 200)) == 2  # the list, and the one re-read after the stale etag


async def test_the_next_attempt_keeps_what_the_failed_one_changed_and_patches_only_the_rest(
    partner_center_emulator: PartnerCenterEmulator,
) -> None:
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active", "sub-2": "active"})
    first, second = ActivityEnvironment(), ActivityEnvironment()
    heartbeats: list[Any] = []

    faulted = False

    def beat(*details: Any) -> None:
        nonlocal faulted
        heartbeats.append(tuple(d.model_copy(deep=True) for d in details))
        if not faulted and details[0].results.keys() == {"sub-1"}:
            faulted = True
            partner_center_emulator.inject_fault(503, method="PATCH")  # sub-2's PATCH meets an outage

    first.on_heartbeat = beat
    async with client_for(partner_center_emulator, max_attempts=1) as client:
        activities = PartnerCenterActivities(client)
        with pytest.raises(ApplicationError) as failed:
            await first.run(activities.change_subscriptions, subscriptions_change("sub-1", "sub-2"))
        second.info = replace(first.info, attempt=2, heartbeat_details=list(heartbeats[-1]))
        changed = await second.run(activities.change_subscriptions, subscriptions_change("sub-1", "sub-2"))

    assert failed.value.type == UNAVAILABLE
    # The first attempt suspended sub-1 before sub-2's PATCH failed: the next attempt reports sub-1 as suspended
    # by this step (changed), not as found already suspended, and does not ask Partner Center about it again.
    assert [(result.status, result.changed) for result in changed.results] == [
        ("suspended", True),
        ("suspended", True),
    ]
    patched = [(call.path.rsplit("/", 1)[-1], call.status) for call in partner_center_emulator.api_requests("PATCH")]
    assert patched == [("sub-1", 200), ("sub-2", 503), ("sub-2", 200)]


# --- what a call costs ----------------------------------------------------------------------------------------


async def test_a_call_does_not_search_the_path_for_the_optional_sniffio_again_and_again(
    partner_center_emulator: PartnerCenterEmulator, client: PartnerCenterClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpcore imports `sniffio` (optional, and not installed here) in every lock and event of a request; a
    failed import is not remembered, so each one searched sys.path again (encode/httpcore#1103)."""
    partner_center_emulator.seed_tenant(TENANT, {"sub-1": "active"})
    await client.list_subscriptions(TENANT, WORKFLOW_ID)  # the token and the connection: not what is counted
    searched: list[str] = []
    find_spec = importlib.machinery.PathFinder.find_spec

    def spying(name: str, path: Any = None, target: Any = None) -> Any:
        searched.append(name)
        return find_spec(name, path, target)

    monkeypatch.setattr(importlib.machinery.PathFinder, "find_spec", spying)
    await client.set_subscription_status(TENANT, "sub-1", "suspended", REQUEST_KEY, WORKFLOW_ID)

    assert "sniffio" not in searched
