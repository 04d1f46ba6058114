"""What the engine asks of Partner Center operated by 21Vianet and what it answers: a customer's subscriptions,
their status changes (and refusals), and the partner's own invoices."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from billing.models import FrozenMessage


class SubscriptionProblem(FrozenMessage):
    """A subscription Partner Center would not change as asked: why, in Partner Center's words."""

    subscription_id: str
    name: str | None = None  # as the customer knows it (offer and friendly name), when Partner Center gave one
    status: str | None = None  # what Partner Center reports it is now, e.g. "active", "deleted", "expired"
    error_code: str | None = None
    error_text: str | None = None


SubscriptionStatusTarget = Literal["suspended", "active"]


class SubscriptionQuery(FrozenMessage):
    tenant_id: str
    correlation_id: str  # the workflow id, logged beside each call's own MS-CorrelationId (a fresh GUID)


class SubscriptionSummary(FrozenMessage):
    """One subscription as a notice names it, from Partner Center's Subscription resource."""

    subscription_id: str
    offer_name: str | None = None  # `offerName`: what was bought, e.g. "Office 365 E3 operated by 21Vianet"
    friendly_name: str | None = None  # `friendlyName`: the partner's own name for it, to tell like ones apart


class ActiveSubscriptions(FrozenMessage):
    subscription_ids: list[str]
    subscriptions: list[SubscriptionSummary] = Field(default_factory=list)  # the same ones, in order, with names


class SubscriptionStatusChange(FrozenMessage):
    tenant_id: str
    subscription_id: str
    target: SubscriptionStatusTarget
    request_key: str  # stable across retries: becomes the MS-RequestId
    correlation_id: str  # the workflow id, logged beside each call's own MS-CorrelationId (a fresh GUID)


class SubscriptionStatusChanged(FrozenMessage):
    subscription_id: str
    # The status Partner Center reports after the call: the target once changed; otherwise the status it kept
    # (a deleted or expired subscription stays so); empty when Partner Center did not know the subscription.
    status: str
    changed: bool  # False when it already had the target status, could not be changed, or was refused
    # Partner Center refused to change this one subscription (a permanent answer about it, not an outage): reported,
    # not retried. `error_code` is Partner Center's code (a string, e.g. "800096"), `error_text` its own words.
    refused: bool = False
    error_code: str | None = None
    error_text: str | None = None


class SubscriptionsChange(FrozenMessage):
    """`change_subscriptions`: set these subscriptions of the tenant to `target`, in one activity."""

    tenant_id: str
    subscription_ids: list[str]
    target: SubscriptionStatusTarget
    request_key: str  # stable across retries; each subscription's MS-RequestId comes from "{request_key}/{id}"
    correlation_id: str  # the workflow id, logged beside each call's own MS-CorrelationId (a fresh GUID)


class SubscriptionsChanged(FrozenMessage):
    """Partner Center's answer for each subscription of a `SubscriptionsChange`, in the order asked."""

    results: list[SubscriptionStatusChanged]


class TrackPartnerInvoicesRequest(FrozenMessage):
    """`track_partner_invoices`: start a `PartnerPayable` for each 21Vianet invoice with money owed."""

    correlation_id: str  # the caller's workflow id, logged beside each call's own MS-CorrelationId (a fresh GUID)
    checked_at: datetime | None = None  # the caller's now, the `as_of` of what it reads; absent: the clock's


class PartnerInvoicesTracked(FrozenMessage):
    """What `track_partner_invoices` found; ids are 21Vianet's invoice ids."""

    seen: int  # invoices Partner Center listed
    started: list[str] = Field(default_factory=list)  # a PartnerPayable was started for each
    already_tracked: list[str] = Field(default_factory=list)  # a PartnerPayable exists or existed
    settled: list[str] = Field(default_factory=list)  # nothing owed (paid, or for nothing): never started
    # "id: what it is" for a void note, adjustment note, credit note or amendment: not a bill, never started
    not_bills: list[str] = Field(default_factory=list)
    unreadable: list[str] = Field(default_factory=list)  # "id: why", left for a person to look at
    # A running payable knew of less paid than Partner Center shows: sent `partner_center_paid`.
    told_paid: list[str] = Field(default_factory=list)
    # A running payable's invoice is now listed as a void note: sent `partner_center_voided`.
    told_voided: list[str] = Field(default_factory=list)
