"""Partner Center operated by 21Vianet: list a customer's subscriptions, suspend and reinstate them, and list
the partner's own invoices from 21Vianet.

`PartnerCenterClient` speaks the REST API (app-only token, rate limit, retries); the activities wrap it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import random
import re
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx
import structlog
from pydantic import BaseModel, Field, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from billing import metrics
from billing.money import Money
from billing.partner_center_messages import (
    ActiveSubscriptions,
    SubscriptionQuery,
    SubscriptionsChange,
    SubscriptionsChanged,
    SubscriptionStatusChange,
    SubscriptionStatusChanged,
    SubscriptionSummary,
)
from billing.partner_payable import PartnerInvoice

log = structlog.get_logger(__name__)

# httpcore imports the optional `sniffio` inside every lock, event and cancel scope it sets up (each request
# sets up several), and Python does not remember a failed import: without sniffio (anyio 4.11 stopped
# requiring it, agronholm/anyio#1021) each of those imports searches sys.path again, a tenth of the CPU of a
# Partner Center call (encode/httpcore#1103). `None` in sys.modules is Python's own "not installed": the import
# fails at once, as it would anyway, and httpcore takes asyncio as it does then.
if importlib.util.find_spec("sniffio") is None:
    sys.modules.setdefault("sniffio", None)  # type: ignore[assignment]

# The Azure AD resource of Partner Center operated by 21Vianet: the PowerShell module asks for its API root,
# `ChinaPartnerCenterEndpoint` (microsoft/Partner-Center-PowerShell, src/PowerShell/Models/Authentication/
# EnvironmentConstants.cs, used as the scope in src/PowerShell/Commands/ConnectPartnerCenter.cs).
CHINA_API_RESOURCE = "https://partner.partnercenterapi.microsoftonline.cn"
REJECTED = "PartnerCenterRejected"  # non-retryable: Partner Center refused the call as it stands
UNAVAILABLE = "PartnerCenterUnavailable"  # retryable: throttled, failing or unreachable after our own retries
CONFLICT = "PartnerCenterConflict"  # retryable: the subscription kept changing between our GET and PATCH
BUSY = "PartnerCenterBusy"  # retryable: Partner Center answered 409, busy with the subscription; try again later

# Only these two are moved between; a deleted, expired, pending or disabled subscription is left as it is.
_CHANGEABLE_STATUSES = frozenset({"active", "suspended"})
# Answers that mean "not now" rather than "no": request timeout and throttling, retried like server errors.
_TRANSIENT_CLIENT_ERRORS = frozenset({408, 429})
# A 403 is about the caller's rights, not one subscription, except these documented ones (error codes page,
# https://learn.microsoft.com/partner-center/developer/error-codes): 900115 "Azure plan can't be moved to
# suspended state since you have one or more Azure Subscriptions in the active state".
_FORBIDDEN_FOR_THE_SUBSCRIPTION = frozenset({"900115"})
# Every 4xx a subscription call reads itself rather than raise at once; a 401 stays with _call, which renews
# the token once, and the transient ones are retried before any answer is read.
_ANSWERS_ABOUT_THE_SUBSCRIPTION = tuple(
    status for status in range(400, 500) if status != 401 and status not in _TRANSIENT_CLIENT_ERRORS
)
_REQUEST_ID_NAMESPACE = uuid.UUID("6fe71630-d5fa-4c97-b150-b168aab6eaa0")
_MAX_BACKOFF = 10.0
_MAX_ERROR_TEXT = 2000
INVOICE_PAGE_SIZE = 200
# A bound on `links.next` pages, so a service that kept answering with a next link could not hold us for ever.
_MAX_INVOICE_PAGES = 500


def ms_request_id(request_key: str, answered: int = 0) -> str:
    """The MS-RequestId of a step's PATCH: the same GUID for every retry of it, a new one once Partner Center
    has answered it. "If there's a timeout, the retry call should include the same value. Upon receiving a
    response (success or business failure), the value should be reset for the next call"
    (https://learn.microsoft.com/partner-center/developer/headers).

    `answered` counts the answers the step has had (stale etags, a busy 409, refusals); with none the id is the
    one derived from the key alone, as before, so a step under way when this changed keeps its id.
    """
    return str(uuid.uuid5(_REQUEST_ID_NAMESPACE, request_key if not answered else f"{request_key}/{answered}"))


def ms_correlation_id() -> str:
    """A new MS-CorrelationId: a GUID, "reset for every call" (https://learn.microsoft.com/partner-center/developer/
    headers; "use a new Correlation ID for each call": .../developer/test-and-debug). Each call's log line names it
    beside the workflow id, so Partner Center's trace of a call and ours can be found from either side.
    """
    return str(uuid.uuid4())


def if_match(etag: str) -> str:
    """The If-Match value for an etag: in double quotes, exactly once. "ETags values should be included in double
    quotation marks, like a string: If-Match : "eyJpZCI6..."" (https://learn.microsoft.com/partner-center/developer/
    test-and-debug). A resource carries its etag bare (`attributes.etag`); an ETag header already quoted, a weak one
    as W/"..."; those are sent as they are.
    """
    quoted = len(etag) >= 2 and etag.startswith('"') and etag.endswith('"')
    weak = len(etag) >= 4 and etag.startswith('W/"') and etag.endswith('"')
    return etag if quoted or weak else f'"{etag}"'


class RateLimiter:
    """At most `calls` starts in any sliding window of `period` seconds, across every task sharing it."""

    def __init__(
        self,
        calls: int,
        period: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if calls < 1 or period <= 0:
            raise ValueError("a rate limit needs at least one call per positive period")
        self._calls = calls
        self._period = period
        self._clock = clock  # a test hands in a clock it moves itself: the limit is checked without timing
        self._sleep = sleep
        self._starts: deque[float] = deque()
        self._lock = asyncio.Lock()  # FIFO: waiting callers start in the order they asked

    async def acquire(self) -> float:
        """Wait for a free place in the window; returns the moment (of the clock) the call may start."""
        async with self._lock:
            while True:
                now = self._clock()
                while self._starts and now - self._starts[0] >= self._period:
                    self._starts.popleft()
                if len(self._starts) < self._calls:
                    self._starts.append(now)
                    return now
                await self._sleep(self._period - (now - self._starts[0]))


@dataclass(frozen=True)
class SubscriptionResource:
    """A subscription as Partner Center returned it; PATCHed back whole, so fields we do not model survive."""

    resource: Mapping[str, Any]
    etag: str | None

    @property
    def subscription_id(self) -> str:
        return str(self.resource["id"])

    @property
    def status(self) -> str:
        return str(self.resource.get("status", "")).lower()

    def summary(self) -> SubscriptionSummary:
        """Its id, `offerName` and `friendlyName` (the Subscription resource's properties:
        https://learn.microsoft.com/partner-center/developer/subscription-resources)."""
        offer_name, friendly_name = self.resource.get("offerName"), self.resource.get("friendlyName")
        return SubscriptionSummary(
            subscription_id=self.subscription_id,
            offer_name=str(offer_name) if offer_name else None,
            friendly_name=str(friendly_name) if friendly_name else None,
        )

    @classmethod
    def parse(cls, resource: Mapping[str, Any], etag_header: str | None = None) -> SubscriptionResource:
        attributes = resource.get("attributes") or {}
        return cls(resource=resource, etag=attributes.get("etag") or etag_header)


@dataclass(frozen=True)
class PartnerCenterError:
    """An error answer: Partner Center's `{"code", "description", "data", "source"}` with `code` a string
    (https://learn.microsoft.com/partner-center/developer/error-codes, "Error responses"; the .NET SDK's
    ApiFault reads the same fields: microsoft/partner-center-sdk-for-dotNET, Source/PartnerSdk.Models/
    ApiFault.cs), or Azure AD's `{"error", "error_description"}` from the token endpoint.

    `text` is the body as sent (cut to a readable length), so operators see Partner Center's own words.
    """

    status: int
    code: str | None
    description: str | None
    text: str

    @classmethod
    def of(cls, response: httpx.Response) -> PartnerCenterError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        code = body.get("code", body.get("error"))
        description = body.get("description", body.get("error_description"))
        return cls(
            status=response.status_code,
            code=None if code is None else str(code),
            description=None if description is None else str(description),
            text=_text(response),
        )

    @property
    def stale_etag(self) -> bool:
        """The etag sent in If-Match is no longer the resource's: 412, or 400 with code 2055 ("Etag is no longer
        valid", https://learn.microsoft.com/partner-center/developer/error-codes)."""
        return self.status == 412 or (self.status == 400 and self.code == "2055")

    @property
    def refuses_the_subscription(self) -> bool:
        """A permanent answer about this one subscription (800096 "Can't update the status for this subscription",
        2011 deleted, 20003 not found, 900115, any other 4xx): reported, not retried. Not one: the caller's rights
        (401, and 403 but for the codes about a subscription), a stale etag, and 409, whose documented codes say
        the subscription is busy ("Try again after sometime", 800082) rather than unchangeable."""
        if self.status == 403:
            return self.code in _FORBIDDEN_FOR_THE_SUBSCRIPTION
        return 400 <= self.status < 500 and self.status not in (401, 409) and not self.stale_etag

    def refusal(self, subscription_id: str, status: str) -> SubscriptionStatusChanged:
        return SubscriptionStatusChanged(
            subscription_id=subscription_id,
            status=status,
            changed=False,
            refused=True,
            error_code=self.code,
            error_text=self.description or self.text,
        )

    def details(self) -> dict[str, Any]:
        return {"status": self.status, "code": self.code, "description": self.description}


@dataclass(frozen=True)
class _Token:
    value: str
    renew_at: float  # time.monotonic()


class PartnerCenterClient:
    """The subscription calls of the Partner Center REST API, with an app-only (client credentials) token.

    One instance per worker: its token cache and rate limiter are shared by all concurrent activities.
    Token requests go to Azure AD, not Partner Center, and do not count towards the rate limit.
    """

    def __init__(
        self,
        base_url: str,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        resource: str = CHINA_API_RESOURCE,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        max_calls_per_second: int = 8,
        max_attempts: int = 5,
        backoff: float = 0.5,
        max_retry_after: float = 60.0,
        token_renewal_margin: float = 60.0,
        max_conflicts: int = 3,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._token_url = token_url
        self._token_form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
            "resource": resource,
        }
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=timeout,
            headers={"Accept": "application/json", "MS-Contract-Version": "v1"},
        )
        self._limiter = RateLimiter(max_calls_per_second)
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._max_retry_after = max_retry_after
        self._token_renewal_margin = token_renewal_margin
        self._max_conflicts = max_conflicts
        self._token: _Token | None = None
        self._token_lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # --- subscriptions --------------------------------------------------------------------------------------

    async def list_subscriptions(self, tenant_id: str, workflow_id: str) -> list[SubscriptionResource]:
        response = await self._call(
            "GET",
            _subscriptions_path(tenant_id),
            workflow_id=workflow_id,
            context={"tenant_id": tenant_id},
        )
        return [SubscriptionResource.parse(item) for item in response.json().get("items", [])]

    async def get_subscription(self, tenant_id: str, subscription_id: str, workflow_id: str) -> SubscriptionResource:
        response = await self._call(
            "GET",
            _subscriptions_path(tenant_id, subscription_id),
            workflow_id=workflow_id,
            context={"tenant_id": tenant_id, "subscription_id": subscription_id},
        )
        return SubscriptionResource.parse(response.json(), response.headers.get("ETag"))

    async def set_subscription_status(
        self,
        tenant_id: str,
        subscription_id: str,
        status: str,
        request_key: str,
        workflow_id: str,
        *,
        answered: int = 0,
        on_answered: Callable[[int], None] | None = None,
        listed: SubscriptionResource | None = None,
    ) -> SubscriptionStatusChanged:
        """GET the subscription, then PATCH it whole with `status` under its etag; nothing if already there.
        `listed`: the resource as a list of the customer's subscriptions just returned it, etag included; the
        first PATCH uses it instead of a GET of its own, and only a stale etag (the subscription changed since)
        makes it read the subscription again.

        Only an active or suspended subscription is changed; any other is reported with its status, untouched.
        A permanent answer about this subscription comes back as a refusal (`refused`, Partner Center's code and
        words) for the caller to report, so that one subscription cannot hold up the others; the caller's rights
        (401, 403), outages and throttling still raise.

        The PATCH's MS-RequestId is `ms_request_id(request_key, n)`, n the answers Partner Center has already
        given the step: `answered` when called, then one more for each answer but a success. `on_answered(n)`
        hears each new count, so that a caller whose attempt fails can give the next attempt the count.
        """
        context = {"tenant_id": tenant_id, "subscription_id": subscription_id}
        path = _subscriptions_path(tenant_id, subscription_id)
        for conflicts in range(self._max_conflicts + 1):
            if conflicts == 0 and listed is not None and listed.etag:
                current = listed
            else:
                read = await self._call(
                    "GET", path, workflow_id=workflow_id, accept=_ANSWERS_ABOUT_THE_SUBSCRIPTION, context=context
                )
                if not read.is_success:
                    return self._refused_or_raise(f"GET {path}", read, status="", context=context)
                current = SubscriptionResource.parse(read.json(), read.headers.get("ETag"))
            if current.status == status or current.status not in _CHANGEABLE_STATUSES:
                log.info("partner_center.subscription_left_as_is", status=current.status, target=status, **context)
                return SubscriptionStatusChanged(subscription_id=subscription_id, status=current.status, changed=False)
            response = await self._call(
                "PATCH",
                path,
                workflow_id=workflow_id,
                request_id=ms_request_id(request_key, answered),
                headers={"If-Match": if_match(current.etag)} if current.etag else {},
                json={**current.resource, "status": status},
                accept=_ANSWERS_ABOUT_THE_SUBSCRIPTION,
                context=context,
            )
            if response.is_success:
                updated = SubscriptionResource.parse(response.json(), response.headers.get("ETag"))
                log.info("partner_center.subscription_status_changed", status=updated.status, **context)
                return SubscriptionStatusChanged(subscription_id=subscription_id, status=updated.status, changed=True)
            # Partner Center answers a reused MS-RequestId with its first answer, so whatever comes next (the PATCH
            # of the re-read resource, Temporal's next attempt, a retry after a crash) needs a new id.
            answered += 1
            if on_answered is not None:
                on_answered(answered)
            error = PartnerCenterError.of(response)
            if not error.stale_etag:
                return self._refused_or_raise(f"PATCH {path}", response, status=current.status, context=context)
            log.warning(
                "partner_center.subscription_changed_meanwhile",
                conflicts=conflicts + 1,
                status_code=error.status,
                error_code=error.code,
                **context,
            )
        raise ApplicationError(
            f"subscription {subscription_id} of tenant {tenant_id} changed between every GET and PATCH "
            f"({self._max_conflicts + 1} times)",
            type=CONFLICT,
        )

    @staticmethod
    def _refused_or_raise(
        what: str, response: httpx.Response, *, status: str, context: Mapping[str, str]
    ) -> SubscriptionStatusChanged:
        """The refusal a 4xx answer about the subscription is, or the error to raise: busy (409, retryable) or
        rejected (the caller's rights)."""
        error = PartnerCenterError.of(response)
        if error.status == 409:
            raise ApplicationError(
                f"Partner Center is busy with {what}: HTTP 409 {error.text}", error.details(), type=BUSY
            )
        if not error.refuses_the_subscription:
            raise _rejected(what, response)
        # The code only: Partner Center's words go to the caller, who reports them, not to the logs.
        log.warning("partner_center.subscription_refused", status_code=error.status, error_code=error.code, **context)
        return error.refusal(str(context["subscription_id"]), status)

    # --- the partner's invoices from 21Vianet -------------------------------------------------------------

    async def list_partner_invoices(self, workflow_id: str, page_size: int = INVOICE_PAGE_SIZE) -> list[dict[str, Any]]:
        """Every Invoice resource of `GET /v1/invoices?size=&offset=`, following the collection's `links.next`
        (and the headers it names, such as a continuation token) page by page.

        Amounts keep every digit: the JSON numbers are read as `Decimal`, never as floats.
        """
        path = f"/v1/invoices?size={page_size}&offset=0"
        headers: dict[str, str] = {}
        invoices: list[dict[str, Any]] = []
        seen: set[str] = set()
        for _ in range(_MAX_INVOICE_PAGES):
            seen.add(path)
            response = await self._call(
                "GET", path, workflow_id=workflow_id, headers=headers, context={"resource": "invoices"}
            )
            page = response.json(parse_float=Decimal)
            invoices.extend(page.get("items") or [])
            following = (page.get("links") or {}).get("next")
            if not following or not following.get("uri"):
                return invoices
            path = _v1_path(str(following["uri"]))
            headers = {str(h["key"]): str(h["value"]) for h in following.get("headers") or [] if "key" in h}
            if path in seen and not headers:
                raise _paging_error(f"Partner Center sent the invoice page {path} twice")
        raise _paging_error(f"Partner Center kept sending next links after {_MAX_INVOICE_PAGES} invoice pages")

    # --- HTTP -----------------------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        workflow_id: str,
        context: Mapping[str, str],
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        accept: tuple[int, ...] = (),
    ) -> httpx.Response:
        # A read is safe to repeat, so it only needs an id for tracing; a change brings its stable one.
        request_id = request_id or str(uuid.uuid4())
        # Every log line of the call names the MS-CorrelationId of the attempt it is about; send() renews it.
        trace = {**context, "workflow_id": workflow_id, "request_id": request_id, "correlation_id": ""}
        url = f"{self._base_url}{path}"

        async def send() -> httpx.Response:
            token = await self._access_token()
            await self._limiter.acquire()
            trace["correlation_id"] = ms_correlation_id()
            request_headers = {
                **(headers or {}),
                "MS-RequestId": request_id,
                "MS-CorrelationId": trace["correlation_id"],
                "Authorization": f"Bearer {token}",
            }
            return await self._http.request(method, url, headers=request_headers, json=json)

        response = await self._with_retries(send, f"{method} {path}", trace)
        if response.status_code == 401:
            # Tokens can be revoked or expire early (clock skew, a restarted service): fetch a new one, once.
            self._discard_token(response.request.headers.get("Authorization", "").removeprefix("Bearer "))
            log.warning("partner_center.token_refused", method=method, **trace)
            response = await self._with_retries(send, f"{method} {path}", trace)
        log.info("partner_center.call", method=method, status_code=response.status_code, **trace)
        if response.is_success or response.status_code in accept:
            return response
        raise _rejected(f"{method} {path}", response)

    async def _with_retries(
        self, send: Callable[[], Awaitable[httpx.Response]], what: str, context: Mapping[str, str]
    ) -> httpx.Response:
        """Retry throttling (429), request timeouts (408), server errors (5xx) and connection failures a bounded
        number of times."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await send()
            except httpx.TransportError as exc:
                if attempt >= self._max_attempts:
                    raise ApplicationError(
                        f"Partner Center unreachable for {what} ({attempt} attempts): {type(exc).__name__}",
                        type=UNAVAILABLE,
                    ) from exc
                delay = self._backoff_delay(attempt)
                log.warning(
                    "partner_center.retrying",
                    what=what,
                    error=type(exc).__name__,
                    http_attempt=attempt,
                    retry_in=round(delay, 2),
                    **context,
                )
                await asyncio.sleep(delay)
                continue
            status = response.status_code
            if status not in _TRANSIENT_CLIENT_ERRORS and status < 500:
                return response
            retry_after = _retry_after(response) if status == 429 else None
            # A wait longer than the cap is left to Temporal's retry, which holds no activity slot meanwhile.
            too_long = retry_after is not None and retry_after > self._max_retry_after
            if attempt >= self._max_attempts or too_long:
                raise ApplicationError(
                    f"Partner Center answered {what} with HTTP {status} {attempt} time(s): {_text(response)}",
                    type=UNAVAILABLE,
                    next_retry_delay=timedelta(seconds=retry_after) if retry_after else None,
                )
            delay = retry_after if retry_after is not None else self._backoff_delay(attempt)
            log.warning(
                "partner_center.retrying",
                what=what,
                status_code=status,
                http_attempt=attempt,
                retry_in=round(delay, 2),
                **context,
            )
            await asyncio.sleep(delay)

    def _backoff_delay(self, attempt: int) -> float:
        # Jitter spreads out the workers that all met the same outage.
        return min(self._backoff * 2 ** (attempt - 1), _MAX_BACKOFF) * random.uniform(0.5, 1.0)

    # --- token ----------------------------------------------------------------------------------------------

    async def _access_token(self) -> str:
        token = self._token
        if token is not None and time.monotonic() < token.renew_at:
            return token.value
        async with self._token_lock:
            token = self._token
            if token is not None and time.monotonic() < token.renew_at:
                return token.value  # another task renewed it while we waited
            self._token = await self._fetch_token()
            return self._token.value

    async def _fetch_token(self) -> _Token:
        response = await self._with_retries(
            lambda: self._http.post(self._token_url, data=self._token_form), "token request", {}
        )
        if not response.is_success:
            raise _rejected("token request", response)
        body = response.json()
        expires_in = float(body["expires_in"])
        # Renew a minute early, but a short-lived token at least lives half its life before we renew it.
        lifetime = max(expires_in - self._token_renewal_margin, expires_in / 2)
        log.info("partner_center.token_acquired", expires_in=expires_in)
        return _Token(value=str(body["access_token"]), renew_at=time.monotonic() + lifetime)

    def _discard_token(self, value: str) -> None:
        if self._token is not None and self._token.value == value:
            self._token = None


class StepAnswers(BaseModel):
    """Heartbeat details of `change_subscription_status`: how many MS-RequestIds of the step Partner Center has
    answered. Heartbeat details outlive a failed attempt (Temporal hands the last ones to the next attempt in
    `activity.info().heartbeat_details`), so the next attempt starts with an id Partner Center has not seen."""

    answered: int = 0

    @classmethod
    def of(cls, heartbeat_details: Sequence[Any]) -> StepAnswers:
        try:
            return cls.model_validate(heartbeat_details[-1]) if heartbeat_details else cls()
        except ValidationError:
            return cls()  # details of another shape: count from nothing, as a first attempt does


class PartnerCenterActivities:
    """Suspension and reinstatement of a customer's subscriptions, for the collections workflow."""

    def __init__(self, client: PartnerCenterClient) -> None:
        self._client = client

    @activity.defn(name="list_active_subscriptions")
    async def list_active_subscriptions(self, query: SubscriptionQuery) -> ActiveSubscriptions:
        async with heartbeating():
            subscriptions = await self._client.list_subscriptions(query.tenant_id, query.correlation_id)
        active = [subscription for subscription in subscriptions if subscription.status == "active"]
        return ActiveSubscriptions(
            subscription_ids=[subscription.subscription_id for subscription in active],
            subscriptions=[subscription.summary() for subscription in active],
        )

    @activity.defn(name="change_subscriptions")
    async def change_subscriptions(self, change: SubscriptionsChange) -> SubscriptionsChanged:
        """Set every listed subscription to the target in one activity: one list of the tenant's subscriptions,
        then one PATCH each under the etag the list gave (Partner Center's list returns each resource with its
        `attributes.etag`: https://learn.microsoft.com/partner-center/developer/get-all-of-a-customer-s-subscriptions).
        A refusal is that subscription's answer; the others still change."""
        progress = SubscriptionsProgress.of(activity.info().heartbeat_details)

        def answered_for(subscription_id: str) -> Callable[[int], None]:
            def answered(count: int) -> None:
                progress.answered[subscription_id] = count
                activity.heartbeat(progress)

            return answered

        async def change_one(subscription_id: str, listed: SubscriptionResource | None) -> None:
            result = await self._client.set_subscription_status(
                change.tenant_id,
                subscription_id,
                change.target,
                f"{change.request_key}/{subscription_id}",
                change.correlation_id,
                answered=progress.answered.get(subscription_id, 0),
                on_answered=answered_for(subscription_id),
                listed=listed,
            )
            progress.results[subscription_id] = result
            activity.heartbeat(progress)
            _count_answer(result, change.target)

        async with heartbeating(lambda: (progress,)):
            pending = [sid for sid in change.subscription_ids if sid not in progress.results]
            if pending:
                listing = await self._client.list_subscriptions(change.tenant_id, change.correlation_id)
                by_id = {subscription.subscription_id: subscription for subscription in listing}
                # One after the other: the rate limit paces them anyway, and an outage that fails the attempt
                # leaves no call of it running on.
                for subscription_id in pending:
                    await change_one(subscription_id, by_id.get(subscription_id))
        return SubscriptionsChanged(results=[progress.results[sid] for sid in change.subscription_ids])

    @activity.defn(name="change_subscription_status")
    async def change_subscription_status(self, change: SubscriptionStatusChange) -> SubscriptionStatusChanged:
        answers = StepAnswers.of(activity.info().heartbeat_details)

        def answered(count: int) -> None:
            nonlocal answers
            answers = StepAnswers(answered=count)
            activity.heartbeat(answers)

        # Every beat carries the answers so far, so the next attempt starts from them whenever this one dies.
        async with heartbeating(lambda: (answers,)):
            result = await self._client.set_subscription_status(
                change.tenant_id,
                change.subscription_id,
                change.target,
                change.request_key,
                change.correlation_id,
                answered=answers.answered,
                on_answered=answered,
            )
        _count_answer(result, change.target)
        return result


def _count_answer(result: SubscriptionStatusChanged, target: str) -> None:
    """A suspension or reinstatement Partner Center made, or its refusal by code. Counted once per answer: a
    retried attempt keeps the answers an earlier one heartbeat, and a change made meanwhile comes back unchanged."""
    if result.refused:
        metrics.count_in_activity(metrics.PARTNER_CENTER_REFUSALS, code=result.error_code or "unknown", target=target)
    elif result.changed:
        metrics.count_in_activity(metrics.SUBSCRIPTIONS_CHANGED, target=target)


class SubscriptionsProgress(BaseModel):
    """Heartbeat details of `change_subscriptions`: Partner Center's answers so far, per subscription, and how
    many MS-RequestIds of each it has answered. The next attempt keeps the answers (a subscription this attempt
    suspended is reported as suspended by it, not as "already suspended") and starts each id afresh."""

    answered: dict[str, int] = Field(default_factory=dict)
    results: dict[str, SubscriptionStatusChanged] = Field(default_factory=dict)

    @classmethod
    def of(cls, heartbeat_details: Sequence[Any]) -> SubscriptionsProgress:
        try:
            return cls.model_validate(heartbeat_details[-1]) if heartbeat_details else cls()
        except ValidationError:
            return cls()


class UnreadableInvoice(ValueError):
    """An Invoice resource this engine cannot read as a bill to pay (the message says which field and why)."""


class DocumentType(StrEnum):
    """What an Invoice resource is, by its `documentType`, in the snake_case Partner Center writes on the wire.

    Sources: the Invoice resource's reference names "Invoice" and "Credit Note"
    (https://learn.microsoft.com/partner-center/developer/invoice-resources); the Partner Center SDK's
    `DocumentType` enum has Invoice, VoidNote and AdjustmentNote, read from snake_case JSON (microsoft/
    Partner-Center-PowerShell, src/PartnerCenter/Models/Invoices/DocumentType.cs and
    Models/JsonConverters/EnumJsonConverter.cs); and the response example of "Get a collection of invoices"
    (https://learn.microsoft.com/partner-center/developer/get-a-collection-of-invoices) lists a voided invoice
    under its own id as "void_note", with an "adjustment_note" among its `amendments` naming it in `amendsOf`.
    """

    INVOICE = "invoice"
    VOID_NOTE = "void_note"
    ADJUSTMENT_NOTE = "adjustment_note"
    CREDIT_NOTE = "credit_note"


_KNOWN_DOCUMENT_TYPES = frozenset(DocumentType)
_NOT_A_BILL = {
    DocumentType.VOID_NOTE: "a void note",
    DocumentType.ADJUSTMENT_NOTE: "an adjustment note",
    DocumentType.CREDIT_NOTE: "a credit note",
}


def document_type(resource: Mapping[str, Any]) -> str:
    """The resource's `documentType` as snake_case ("Credit Note", "CreditNote" and "credit_note" alike read
    "credit_note"). A resource without one reads as an invoice, as this engine always read it, so that no bill
    is missed for want of the field."""
    written = str(resource.get("documentType") or "").strip()
    if not written:
        return DocumentType.INVOICE
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", written)
    return "_".join(part for part in re.split(r"[\s_-]+", words.lower()) if part)


def not_a_bill(resource: Mapping[str, Any]) -> str | None:
    """What the document is when it is not a bill to pay, or None for a plain invoice.

    Only a plain invoice is paid: a void note, an adjustment note, a credit note, and any document that amends
    another (`amendsOf`: "The reference number of the document of which this document is an amendment", per
    the Invoice resource's reference) never start a `PartnerPayable`.
    """
    kind = document_type(resource)
    if kind not in _KNOWN_DOCUMENT_TYPES:
        # A type this engine has not met may be a bill or not: a person decides, the sweep does not guess.
        raise UnreadableInvoice(
            f"invoice {resource.get('id') or '(no id)'}: documentType {resource.get('documentType')!r} is not "
            "one this engine knows, so it is not tracked as a bill"
        )
    amends = str(resource.get("amendsOf") or "").strip()
    if kind == DocumentType.INVOICE and not amends:
        return None
    what = _NOT_A_BILL.get(kind, "an amendment")
    return f"{what} of {amends}" if amends else what


def partner_invoice(resource: Mapping[str, Any]) -> PartnerInvoice:
    """21Vianet's Invoice resource as the engine's `PartnerInvoice`; amounts in the invoice's `currencyCode`.

    Partner Center reports a payment it received as a negative `paidAmount` ("Negative if a payment was
    received", per the Invoice resource's reference); what was paid is its magnitude.
    """
    invoice_id = str(resource.get("id") or "")
    try:
        currency = str(resource["currencyCode"])
        total = _decimal(resource["totalCharges"])
        paid = abs(_decimal(resource.get("paidAmount") or 0))
        period_start = _date(resource.get("billingPeriodStartDate"))
        period_end = _date(resource.get("billingPeriodEndDate"))
        return PartnerInvoice(
            invoice_id=invoice_id,
            invoice_date=_date(resource["invoiceDate"]),
            amount=Money(amount=total, currency=currency),
            paid=Money(amount=min(paid, total), currency=currency),
            billing_period_start=period_start,
            billing_period_end=period_end,
            invoice_type=str(resource["invoiceType"]) if resource.get("invoiceType") else None,
        )
    except KeyError as missing:
        raise UnreadableInvoice(f"invoice {invoice_id or '(no id)'} has no {missing.args[0]}") from None
    except (ValueError, TypeError, InvalidOperation) as error:
        raise UnreadableInvoice(f"invoice {invoice_id or '(no id)'}: {error}") from None


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an amount")
    return Decimal(str(value))


def _date(value: Any) -> date | None:
    """A UTC date-time string such as 2026-11-01T00:00:00Z as its (UTC) date; None stays None."""
    if value is None:
        return None
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment.astimezone(UTC).date() if moment.tzinfo else moment.date()


def _v1_path(uri: str) -> str:
    """A collection link's uri (`/invoices?...`, relative to /v1, or already `/v1/...`) as a request path."""
    return uri if uri.startswith("/v1/") else f"/v1{uri if uri.startswith('/') else '/' + uri}"


def _paging_error(message: str) -> ApplicationError:
    return ApplicationError(message, type=REJECTED, non_retryable=True)


def _subscriptions_path(tenant_id: str, subscription_id: str | None = None) -> str:
    path = f"/v1/customers/{quote(tenant_id, safe='')}/subscriptions"
    return f"{path}/{quote(subscription_id, safe='')}" if subscription_id is not None else path


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds, given as seconds or as an HTTP date; None when absent or unreadable."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max((moment - datetime.now(UTC)).total_seconds(), 0.0)


def _text(response: httpx.Response) -> str:
    return response.text[:_MAX_ERROR_TEXT]


def _rejected(what: str, response: httpx.Response) -> ApplicationError:
    error = PartnerCenterError.of(response)
    return ApplicationError(
        f"Partner Center rejected {what}: HTTP {error.status} {error.text}",
        error.details(),
        type=REJECTED,
        non_retryable=True,
    )
