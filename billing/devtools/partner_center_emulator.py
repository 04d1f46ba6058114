"""Development emulator of Partner Center operated by 21Vianet for local runs and tests, never for production.

Serves on loopback the token, list, GET and PATCH calls the engine makes, with seeding, faults, refusals, a
request log; and the partner's own invoices from 21Vianet (`GET /v1/invoices`, paged), a few demo ones unless
seeded. It is as strict as the real service, so a test catches what Partner Center would refuse: a token for
any resource but Partner Center's, a call without GUID MS-RequestId and MS-CorrelationId or without
MS-Contract-Version, an If-Match not in double quotes, a stale etag (400, code 2055); every error in Partner
Center's error body.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qs, unquote, urlsplit

SUBSCRIPTION_STATUSES = frozenset({"none", "active", "suspended", "deleted", "expired", "pending", "disabled"})
# A PATCH may only move a subscription between these two; deleted, expired or pending ones cannot be revived.
_CHANGEABLE_STATUSES = frozenset({"active", "suspended"})

DEFAULT_CLIENT_ID = "emulator-client"
DEFAULT_CLIENT_SECRET = "emulator-secret"
DEFAULT_PARTNER_TENANT = "emulator-partner"
# The only resource the token endpoint issues tokens for, as Azure AD knows Partner Center operated by 21Vianet
# (microsoft/Partner-Center-PowerShell, src/PowerShell/Models/Authentication/EnvironmentConstants.cs,
# `ChinaPartnerCenterEndpoint`). Any other is refused as Azure AD refuses an unknown resource principal.
DEFAULT_RESOURCE = "https://partner.partnercenterapi.microsoftonline.cn"
# Azure AD for the China cloud (EnvironmentConstants.ChinaActiveDirectoryEndpoint), named in its error links.
_CHINA_LOGIN = "https://login.chinacloudapi.cn"

_NAMESPACE = uuid.UUID("0a846c45-d379-4a97-9bd6-c0bac978115d")
_DEMO_OFFERS = (
    ("Office 365 E3 operated by 21Vianet", 25),
    ("Microsoft 365 Business Standard operated by 21Vianet", 10),
)
# Partner Center's error codes (https://learn.microsoft.com/partner-center/developer/error-codes, "Error codes");
# a condition that table does not name is answered with its HTTP status as the code.
ACCESS_DENIED = "400"  # 401: the bearer token is missing, unknown or expired
NOT_FOUND = "1000"
SUBSCRIPTION_NOT_FOUND = "20003"
INVALID_REQUEST_INPUT = "800002"
DELETED_SUBSCRIPTION = "2011"  # "Subscription with ID {0} and deleted status can't be updated."
STALE_ETAG = "2055"  # "Etag is no longer valid"
CANNOT_UPDATE_STATUS = "800096"  # "Can't update the status for this subscription"
# What `refuse_status_change` can make a subscription answer to a PATCH: HTTP status and description, as the
# error codes page lists them.
REFUSALS: Mapping[str, tuple[int, str]] = {
    DELETED_SUBSCRIPTION: (400, "Subscription with ID {subscription_id} and deleted status can't be updated."),
    CANNOT_UPDATE_STATUS: (400, "Can't update the status for this subscription"),
    "800082": (409, "Subscription is not ready to be updated. Try again after sometime"),
    "900115": (
        403,
        "Azure plan can't be moved to suspended state since you have one or more Azure Subscriptions in the "
        "active state",
    ),
}
# Answers kept per MS-RequestId; the oldest are forgotten so a long local run does not grow without bound.
_REMEMBERED_ANSWERS = 10_000
# Partner Center pages a collection of invoices; the emulator's pages are small so that paging is exercised.
DEFAULT_INVOICE_PAGE_SIZE = 2


@dataclass(frozen=True)
class RecordedRequest:
    """One request the emulator received, as a test inspects it."""

    at: float  # time.monotonic() when it arrived
    method: str
    path: str
    headers: Mapping[str, str]  # names in lower case
    body: Any  # the JSON body of API calls; a token request's form without its client secret
    status: int  # 0 when the emulator dropped the connection instead of answering

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class _Fault:
    status: int | None  # None: drop the connection without answering
    remaining: int
    retry_after: str | None
    method: str | None


@dataclass
class _Storm:
    until: float  # time.monotonic() when it ends
    statuses: tuple[int, ...]
    retry_after: str | None
    answered: int = 0


@dataclass
class _Refusal:
    code: str
    remaining: int | None  # None: every PATCH


@dataclass(frozen=True)
class _Reply:
    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


class PartnerCenterEmulator:
    """A Partner Center on a free loopback port.

    `with PartnerCenterEmulator() as pc:` then point a client at `pc.base_url` and `pc.token_url` with
    `pc.client_id` and `pc.client_secret`.
    A tenant seen for the first time gets two active demo subscriptions.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        partner_tenant: str = DEFAULT_PARTNER_TENANT,
        resource: str = DEFAULT_RESOURCE,
        token_lifetime: int = 3600,
        state_file: Path | None = None,
        log_requests: bool = False,
    ) -> None:
        _require_loopback(host)
        if token_lifetime < 1:
            raise ValueError("token_lifetime is in whole seconds and at least 1")
        self.client_id = client_id
        self.client_secret = client_secret
        self.partner_tenant = partner_tenant
        self.resource = resource
        self.token_lifetime = token_lifetime
        self.log_requests = log_requests
        self._address = (host, port)
        self._state_file = state_file
        self._lock = threading.Lock()
        self._tenants: dict[str, dict[str, dict[str, Any]]] = {}
        self._answers: OrderedDict[str, tuple[int, dict[str, Any]]] = OrderedDict()
        self._tokens: dict[str, float] = {}  # token → time.monotonic() when it expires
        self._faults: list[_Fault] = []
        self._storm: _Storm | None = None
        self._refusals: dict[tuple[str, str], _Refusal] = {}
        self._concurrent_edits = 0
        self._requests: list[RecordedRequest] = []
        self._invoices: dict[str, dict[str, Any]] = {
            invoice["id"]: invoice for invoice in demo_invoices(datetime.now(UTC).date())
        }
        self.invoice_page_size = DEFAULT_INVOICE_PAGE_SIZE
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        if state_file is not None and state_file.exists():
            self._load(state_file)

    # --- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self._server = _Server(self._address, self)
        # A short poll interval makes stop() quick: shutdown() waits for the serving loop to notice.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="partner-center-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("start the emulator first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/{self.partner_tenant}/oauth2/token"

    # --- what tests arrange and inspect ---------------------------------------------------------------------

    def seed_tenant(
        self,
        tenant_id: str,
        statuses: Mapping[str, str],
        *,
        offer_names: Mapping[str, str] | None = None,
        friendly_names: Mapping[str, str] | None = None,
    ) -> None:
        """Give the tenant exactly these subscriptions (id → status) instead of the demo ones.

        `offer_names` and `friendly_names` (id → name) set a subscription's `offerName` and `friendlyName`;
        left out, it gets a demo offer, and its friendly name is the offer's, as when a partner never named it.
        """
        for status in statuses.values():
            _require_known_status(status)
        offer_names, friendly_names = offer_names or {}, friendly_names or {}
        with self._lock:
            subscriptions = {}
            for n, (subscription_id, status) in enumerate(statuses.items()):
                offer, quantity = _DEMO_OFFERS[n % 2]
                offer = offer_names.get(subscription_id, offer)
                subscriptions[subscription_id] = _new_subscription(
                    tenant_id, subscription_id, status, offer, quantity, friendly_names.get(subscription_id)
                )
            self._tenants[tenant_id] = subscriptions
            self._save()

    def refuse_status_change(
        self, tenant_id: str, subscription_id: str, code: str, *, times: int | None = None
    ) -> None:
        """Answer the next `times` PATCHes of the subscription (every one, if None) with Partner Center's error
        `code`, one of `REFUSALS`, as the real service refuses a subscription it cannot change. The answer is a
        business answer: remembered under its MS-RequestId like any other, and the subscription stays as it is.
        """
        if code not in REFUSALS:
            raise ValueError(f"no documented refusal {code!r}; one of {sorted(REFUSALS)}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._refusals[(tenant_id, subscription_id)] = _Refusal(code, times)
            self._save()

    def subscription(self, tenant_id: str, subscription_id: str) -> dict[str, Any]:
        """A copy of the subscription resource as the emulator holds it now."""
        with self._lock:
            return _copy(self._tenants[tenant_id][subscription_id])

    def inject_fault(
        self,
        status: int | Literal["disconnect"],
        *,
        times: int = 1,
        retry_after: str | None = None,
        method: str | None = None,
    ) -> None:
        """Answer the next `times` API calls (of `method`, if given) with `status`, or drop their connection.

        Token requests are never faulted. Faulted answers are not remembered under their MS-RequestId, as a
        throttled or failed call has not reached the subscription.
        """
        self._add_fault(_Fault(None if status == "disconnect" else status, times, retry_after, method))

    def storm(
        self, seconds: float, statuses: Sequence[int] = (429, 500, 503), *, retry_after: str | None = "1"
    ) -> None:
        """For the next `seconds`, answer every API call with one of `statuses` in turn (429s with `retry_after`),
        as a throttled or failing Partner Center does for a while; token requests are never faulted. Faults
        queued by `inject_fault` are answered first."""
        if seconds <= 0 or not statuses:
            raise ValueError("a storm lasts a positive number of seconds and answers with at least one status")
        with self._lock:
            self._storm = _Storm(time.monotonic() + seconds, tuple(statuses), retry_after)

    def simulate_concurrent_edit(self, times: int = 1) -> None:
        """Before each of the next `times` PATCHes, change the subscription as someone in the portal would."""
        with self._lock:
            self._concurrent_edits += times

    def seed_invoices(self, invoices: Sequence[Mapping[str, Any]]) -> None:
        """Serve exactly these invoices (Invoice resources, e.g. from `invoice_resource`), in this order."""
        with self._lock:
            self._invoices = {str(invoice["id"]): _copy(invoice) for invoice in invoices}
            self._save()

    def add_invoice(self, invoice: Mapping[str, Any]) -> None:
        """Add an invoice, or replace the one with the same id."""
        with self._lock:
            self._invoices[str(invoice["id"])] = _copy(invoice)
            self._save()

    def record_invoice_payment(self, invoice_id: str, amount: Decimal | str) -> None:
        """21Vianet received `amount` against the invoice: `paidAmount` goes down by it (payments are negative)."""
        with self._lock:
            invoice = self._invoices[invoice_id]
            invoice["paidAmount"] = float(Decimal(str(invoice["paidAmount"])) - Decimal(str(amount)))
            self._save()

    def void_invoice(self, invoice_id: str) -> None:
        """21Vianet voided the invoice: it is listed under its own id as a "void_note" from now on, as in the
        response example of https://learn.microsoft.com/partner-center/developer/get-a-collection-of-invoices."""
        with self._lock:
            self._invoices[invoice_id]["documentType"] = "void_note"
            self._save()

    def invoice(self, invoice_id: str) -> dict[str, Any]:
        with self._lock:
            return _copy(self._invoices[invoice_id])

    def invoices(self) -> list[dict[str, Any]]:
        """Copies of every invoice served, in order."""
        with self._lock:
            return [_copy(invoice) for invoice in self._invoices.values()]

    def revoke_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def api_requests(self, method: str | None = None) -> list[RecordedRequest]:
        """The subscription calls received (token requests left out), optionally of one HTTP method."""
        return [
            request
            for request in self.requests
            if request.path.startswith("/v1/") and (method is None or request.method == method)
        ]

    # --- serving --------------------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Mapping[str, str], raw_body: bytes) -> _Reply | None:
        """Answer one request; None means drop the connection. Called by the HTTP handler threads."""
        arrived = time.monotonic()
        parts = urlsplit(target)
        path = parts.path
        with self._lock:
            if path.rstrip("/") == "/v1/invoices":
                reply, recorded_body = self._serve_invoices(method, parse_qs(parts.query), headers), None
            else:
                reply, recorded_body = self._dispatch(method, path, headers, raw_body)
            self._requests.append(
                RecordedRequest(arrived, method, path, dict(headers), recorded_body, reply.status if reply else 0)
            )
        return reply

    def _dispatch(
        self, method: str, path: str, headers: Mapping[str, str], raw_body: bytes
    ) -> tuple[_Reply | None, Any]:
        parts = [unquote(part) for part in path.strip("/").split("/")]
        if len(parts) == 3 and parts[1:] == ["oauth2", "token"]:
            form = {key: values[0] for key, values in parse_qs(raw_body.decode("utf-8", "replace")).items()}
            recorded = {key: value for key, value in form.items() if key != "client_secret"}
            if method != "POST":
                return _Reply(405, {"error": "invalid_request", "error_description": "use POST"}), recorded
            return self._issue_token(parts[0], form), recorded
        if len(parts) in (4, 5) and parts[:2] == ["v1", "customers"] and parts[3] == "subscriptions":
            body = _json_or_none(raw_body)
            subscription_id = parts[4] if len(parts) == 5 else None
            return self._serve_subscriptions(method, parts[2], subscription_id, headers, body), body
        return _error(404, NOT_FOUND, f"Not found: no such endpoint {method} {path}"), None

    def _issue_token(self, tenant: str, form: Mapping[str, str]) -> _Reply:
        if form.get("grant_type") != "client_credentials":
            return _Reply(400, {"error": "unsupported_grant_type", "error_description": "use client_credentials"})
        if not form.get("resource"):
            return _Reply(400, {"error": "invalid_request", "error_description": "the resource is required"})
        known_client = secrets.compare_digest(form.get("client_id", ""), self.client_id)
        if not (known_client and secrets.compare_digest(form.get("client_secret", ""), self.client_secret)):
            return _Reply(401, {"error": "invalid_client", "error_description": "unknown client id or secret"})
        if form["resource"] != self.resource:
            return _unknown_resource(form["resource"], tenant)
        now = time.monotonic()
        self._tokens = {token: expiry for token, expiry in self._tokens.items() if expiry > now}
        token = secrets.token_urlsafe(32)
        self._tokens[token] = now + self.token_lifetime
        issued = int(time.time())
        lifetime = str(self.token_lifetime)
        return _Reply(
            200,
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "expires_on": str(issued + self.token_lifetime),
                "not_before": str(issued),
                "resource": form["resource"],
                "access_token": token,
            },
        )

    def _serve_invoices(self, method: str, query: Mapping[str, list[str]], headers: Mapping[str, str]) -> _Reply | None:
        """`GET /v1/invoices?size=&offset=`: a page of the partner's invoices, with a `next` link while more remain."""
        fault = self._take_fault(method)
        if fault is not None:
            return _fault_reply(fault)
        if not self._authorised(headers.get("authorization", "")):
            return _error(401, ACCESS_DENIED, "Access denied: a valid bearer token is required")
        refused = _refuse_headers(headers)
        if refused is not None:
            return refused
        if method != "GET":
            return _error(405, "405", "the invoice collection takes GET")
        try:
            size = int(query.get("size", [str(self.invoice_page_size)])[0])
            offset = int(query.get("offset", ["0"])[0])
        except ValueError:
            return _error(400, INVALID_REQUEST_INPUT, "Invalid request input: size and offset are whole numbers")
        if size < 1 or offset < 0:
            return _error(400, INVALID_REQUEST_INPUT, "Invalid request input: size is at least 1, offset at least 0")
        size = min(size, self.invoice_page_size)
        invoices = list(self._invoices.values())
        page = [_copy(invoice) for invoice in invoices[offset : offset + size]]
        links: dict[str, Any] = {"self": _link(f"/invoices?size={size}&offset={offset}")}
        if offset + size < len(invoices):
            links["next"] = _link(f"/invoices?size={size}&offset={offset + size}")
        return _Reply(
            200,
            {"totalCount": len(page), "items": page, "links": links, "attributes": {"objectType": "Collection"}},
        )

    def _serve_subscriptions(
        self, method: str, tenant_id: str, subscription_id: str | None, headers: Mapping[str, str], body: Any
    ) -> _Reply | None:
        fault = self._take_fault(method)
        if fault is not None:
            return _fault_reply(fault)
        if not self._authorised(headers.get("authorization", "")):
            return _error(401, ACCESS_DENIED, "Access denied: a valid bearer token is required")
        refused = _refuse_headers(headers)
        if refused is not None:
            return refused
        subscriptions = self._tenant(tenant_id)
        if subscription_id is None:
            if method != "GET":
                return _error(405, "405", "the subscription collection takes GET")
            items = [_copy(resource) for resource in subscriptions.values()]
            return _Reply(
                200,
                {
                    "totalCount": len(items),
                    "items": items,
                    "links": {"self": _link(f"/customers/{tenant_id}/subscriptions")},
                    "attributes": {"objectType": "Collection"},
                },
            )
        if method == "GET":
            resource = subscriptions.get(subscription_id)
            if resource is None:
                return _not_found(tenant_id, subscription_id)
            return _resource_reply(resource)
        if method == "PATCH":
            return self._patch(tenant_id, subscriptions, subscription_id, headers, body)
        return _error(405, "405", "a subscription takes GET or PATCH")

    def _patch(
        self,
        tenant_id: str,
        subscriptions: dict[str, dict[str, Any]],
        subscription_id: str,
        headers: Mapping[str, str],
        body: Any,
    ) -> _Reply:
        if "if-match" in headers and _etag_in(headers["if-match"]) is None:
            return _error(
                400, INVALID_REQUEST_INPUT, 'Invalid request input: If-Match carries the etag in double quotes ("...")'
            )
        request_id = headers.get("ms-requestid")
        if request_id and request_id in self._answers:
            status, answer = self._answers[request_id]
            return _resource_reply(answer) if status == 200 else _Reply(status, answer)
        reply = self._apply_patch(tenant_id, subscriptions, subscription_id, headers, body)
        if request_id:
            self._answers[request_id] = (reply.status, _copy(reply.body))
            while len(self._answers) > _REMEMBERED_ANSWERS:
                self._answers.popitem(last=False)
        self._save()
        return reply

    def _apply_patch(
        self,
        tenant_id: str,
        subscriptions: dict[str, dict[str, Any]],
        subscription_id: str,
        headers: Mapping[str, str],
        body: Any,
    ) -> _Reply:
        resource = subscriptions.get(subscription_id)
        if resource is None:
            return _not_found(tenant_id, subscription_id)
        if self._concurrent_edits:
            self._concurrent_edits -= 1
            resource["attributes"]["etag"] = _new_etag()
        if_match = _etag_in(headers.get("if-match", ""))
        if not if_match:
            return _error(412, "412", "Precondition failed: If-Match with the subscription's etag is required")
        if if_match != resource["attributes"]["etag"]:
            # Partner Center answers a stale etag with 400 and code 2055, not (only) with 412.
            return _error(400, STALE_ETAG, "Etag is no longer valid")
        if not isinstance(body, dict):
            return _error(400, INVALID_REQUEST_INPUT, "Invalid request input: the body is the full subscription")
        if body.get("id", subscription_id) != subscription_id:
            return _error(400, INVALID_REQUEST_INPUT, "Invalid request input: the body's id is not the URL's")
        status = body.get("status")
        if status not in SUBSCRIPTION_STATUSES:
            allowed = ", ".join(sorted(SUBSCRIPTION_STATUSES))
            return _error(
                400, INVALID_REQUEST_INPUT, f"Invalid request input: status {status!r} is not one of {allowed}"
            )
        refused = self._take_refusal(tenant_id, subscription_id)
        if refused is not None:
            return refused
        current = resource["status"]
        if status != current:
            if current == "deleted":
                return _error(
                    400,
                    DELETED_SUBSCRIPTION,
                    f"Subscription with ID {subscription_id} and deleted status can't be updated.",
                )
            if current not in _CHANGEABLE_STATUSES or status not in _CHANGEABLE_STATUSES:
                return _error(400, CANNOT_UPDATE_STATUS, "Can't update the status for this subscription")
            resource["status"] = status
            resource["attributes"]["etag"] = _new_etag()
        return _resource_reply(resource)

    def _take_refusal(self, tenant_id: str, subscription_id: str) -> _Reply | None:
        refusal = self._refusals.get((tenant_id, subscription_id))
        if refusal is None:
            return None
        if refusal.remaining is not None:
            refusal.remaining -= 1
            if refusal.remaining == 0:
                del self._refusals[(tenant_id, subscription_id)]
        status, description = REFUSALS[refusal.code]
        return _error(status, refusal.code, description.format(subscription_id=subscription_id))

    def _take_fault(self, method: str) -> _Fault | None:
        for fault in self._faults:
            if fault.method is None or fault.method == method:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault
        storm = self._storm
        if storm is not None:
            if time.monotonic() >= storm.until:
                self._storm = None
                return None
            status = storm.statuses[storm.answered % len(storm.statuses)]
            storm.answered += 1
            return _Fault(status, 1, storm.retry_after if status == 429 else None, None)
        return None

    def _add_fault(self, fault: _Fault) -> None:
        if fault.remaining < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._faults.append(fault)

    def _authorised(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        expiry = self._tokens.get(token) if scheme.lower() == "bearer" else None
        return expiry is not None and expiry > time.monotonic()

    def _tenant(self, tenant_id: str) -> dict[str, dict[str, Any]]:
        subscriptions = self._tenants.get(tenant_id)
        if subscriptions is None:
            subscriptions = {}
            for n, (offer, quantity) in enumerate(_DEMO_OFFERS, start=1):
                subscription_id = str(uuid.uuid5(_NAMESPACE, f"{tenant_id}/demo/{n}"))
                subscriptions[subscription_id] = _new_subscription(
                    tenant_id, subscription_id, "active", offer, quantity
                )
            self._tenants[tenant_id] = subscriptions
            self._save()
        return subscriptions

    # --- state file -----------------------------------------------------------------------------------------

    def _save(self) -> None:
        if self._state_file is None:
            return
        state = {
            "tenants": self._tenants,
            "invoices": list(self._invoices.values()),
            "answers": [[request_id, status, body] for request_id, (status, body) in self._answers.items()],
            "refusals": [
                [tenant_id, subscription_id, refusal.code, refusal.remaining]
                for (tenant_id, subscription_id), refusal in self._refusals.items()
            ],
        }
        _write_atomically(self._state_file, json.dumps(state, indent=2, ensure_ascii=False))

    def _load(self, path: Path) -> None:
        state = json.loads(path.read_text(encoding="utf-8"))
        self._tenants = state.get("tenants", {})
        if "invoices" in state:
            self._invoices = {invoice["id"]: invoice for invoice in state["invoices"]}
        self._answers = OrderedDict(
            (request_id, (status, body)) for request_id, status, body in state.get("answers", [])
        )
        self._refusals = {
            (tenant_id, subscription_id): _Refusal(code, remaining)
            for tenant_id, subscription_id, code, remaining in state.get("refusals", [])
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: PartnerCenterEmulator) -> None:
        super().__init__(address, _Handler)
        self.emulator = emulator


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real client pools its connections
    disable_nagle_algorithm = True  # headers and body go out as two writes; Nagle would hold the body ~40 ms
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self.server.emulator.handle(self.command, self.path, headers, raw_body)
        if reply is None:
            self.close_connection = True
            return
        payload = json.dumps(reply.body, ensure_ascii=False).encode("utf-8")
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        for echoed in ("MS-RequestId", "MS-CorrelationId"):
            if echoed in self.headers:
                self.send_header(echoed, self.headers[echoed])
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.emulator.log_requests:
            super().log_message(format, *args)


def _require_loopback(host: str) -> None:
    try:
        loopback = host == "localhost" or ipaddress.IPv4Address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"the Partner Center emulator is a development tool and listens on IPv4 loopback only "
            f"(e.g. 127.0.0.1), not {host!r}"
        )


def _require_known_status(status: str) -> None:
    if status not in SUBSCRIPTION_STATUSES:
        raise ValueError(f"unknown subscription status {status!r}; one of {sorted(SUBSCRIPTION_STATUSES)}")


def _new_subscription(
    tenant_id: str, subscription_id: str, status: str, offer: str, quantity: int, friendly_name: str | None = None
) -> dict[str, Any]:
    """A Subscription resource with the properties Partner Center documents for it
    (https://learn.microsoft.com/partner-center/developer/subscription-resources), those this emulator uses."""
    created = datetime.now(UTC).replace(microsecond=0)
    return {
        "id": subscription_id,
        "offerId": str(uuid.uuid5(_NAMESPACE, f"offer/{offer}")).upper(),
        "offerName": offer,
        "friendlyName": friendly_name or offer,
        "quantity": quantity,
        "unitType": "Licenses",
        "creationDate": created.isoformat(),
        "effectiveStartDate": created.isoformat(),
        "commitmentEndDate": (created + timedelta(days=365)).isoformat(),
        "status": status,
        "autoRenewEnabled": True,
        "billingType": "license",
        "billingCycle": "monthly",
        "contractType": "subscription",
        "orderId": str(uuid.uuid5(_NAMESPACE, f"order/{tenant_id}/{subscription_id}")),
        "links": {"self": _link(f"/customers/{tenant_id}/subscriptions/{subscription_id}")},
        "attributes": {"etag": _new_etag(), "objectType": "Subscription"},
    }


def invoice_resource(
    invoice_id: str,
    invoice_date: date,
    total: Decimal | str,
    currency: str,
    *,
    paid: Decimal | str = "0",
    invoice_type: str = "Recurring",
    document_type: str = "invoice",
    amends_of: str | None = None,
) -> dict[str, Any]:
    """An Invoice resource as Partner Center returns it; `paid` is what 21Vianet received (shown negative).

    `document_type` is written as Partner Center writes it: "invoice", or "void_note" for a voided invoice
    listed under its own id, "adjustment_note" or "credit_note" for a document that `amends_of` another (as in
    the response example of https://learn.microsoft.com/partner-center/developer/get-a-collection-of-invoices).
    """
    period_end = invoice_date - timedelta(days=1)
    period_start = period_end.replace(day=1)
    symbols = {"CNY": "¥", "USD": "$", "EUR": "€", "JPY": "¥"}
    return {
        "id": invoice_id,
        "invoiceDate": f"{invoice_date.isoformat()}T00:00:00Z",
        "billingPeriodStartDate": f"{period_start.isoformat()}T00:00:00Z",
        "billingPeriodEndDate": f"{period_end.isoformat()}T00:00:00Z",
        "totalCharges": float(Decimal(str(total))),
        "paidAmount": float(-Decimal(str(paid))),
        "currencyCode": currency,
        "currencySymbol": symbols.get(currency, currency),
        "invoiceType": invoice_type,
        "documentType": document_type,
        **({"amendsOf": amends_of} if amends_of else {}),
        "invoiceDetails": [
            {
                "invoiceLineItemType": "billing_line_items",
                "billingProvider": "office" if invoice_type == "Recurring" else "one_time",
                "links": {"self": _link(f"/invoices/{invoice_id}/lineitems")},
                "attributes": {"objectType": "InvoiceDetail"},
            }
        ],
        "links": {"self": _link(f"/invoices/{invoice_id}")},
        "attributes": {"objectType": "Invoice"},
    }


def demo_invoices(today: date) -> list[dict[str, Any]]:
    """21Vianet's documents to the partner around `today`: invoices (one paid, one overdue, one current, one in US
    dollars), a voided invoice and a credit note, which are not bills."""
    first = today.replace(day=1)
    months = [first]
    for _ in range(3):
        months.append((months[-1] - timedelta(days=1)).replace(day=1))
    this, last, before, oldest = months
    return [
        invoice_resource(f"G{oldest:%Y%m}0001", oldest, "98000.00", "CNY", paid="98000.00"),
        invoice_resource(f"G{before:%Y%m}0001", before, "45600.00", "CNY", paid="10000.00"),
        invoice_resource(f"G{last:%Y%m}0001", last, "52300.00", "CNY"),
        invoice_resource(f"G{this:%Y%m}0002", this, "1200.00", "USD", invoice_type="OneTime"),
        invoice_resource(f"G{last:%Y%m}0002", last, "3000.00", "CNY", document_type="void_note"),
        invoice_resource(
            f"G{this:%Y%m}0003", this, "800.00", "CNY", document_type="credit_note", amends_of=f"G{last:%Y%m}0001"
        ),
    ]


def _link(uri: str) -> dict[str, Any]:
    return {"uri": uri, "method": "GET", "headers": []}


def _new_etag() -> str:
    return secrets.token_urlsafe(16)


def _resource_reply(resource: Mapping[str, Any]) -> _Reply:
    return _Reply(200, _copy(resource), {"ETag": f'"{resource["attributes"]["etag"]}"'})


def _not_found(tenant_id: str, subscription_id: str) -> _Reply:
    return _error(404, SUBSCRIPTION_NOT_FOUND, f"Subscription with ID {subscription_id} not found.")


def _refuse_headers(headers: Mapping[str, str]) -> _Reply | None:
    """Partner Center's required headers (https://learn.microsoft.com/partner-center/developer/headers):
    MS-RequestId and MS-CorrelationId are GUIDs, MS-Contract-Version is required (v1 for these calls)."""
    for name in ("MS-RequestId", "MS-CorrelationId"):
        value = headers.get(name.lower(), "")
        if not _is_guid(value):
            shown = f"{value!r}" if value else "missing"
            return _error(400, INVALID_REQUEST_INPUT, f"Invalid request input: {name} must be a GUID ({shown})")
    if headers.get("ms-contract-version", "").strip() != "v1":
        return _error(400, INVALID_REQUEST_INPUT, "Invalid request input: MS-Contract-Version: v1 is required")
    return None


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _etag_in(if_match: str) -> str | None:
    """The etag an If-Match names, which must be in double quotes ("..." or weak W/"..."); None when it is not
    ("ETags values should be included in double quotation marks": https://learn.microsoft.com/partner-center/
    developer/test-and-debug). An absent If-Match names the empty etag."""
    if not if_match:
        return ""
    tag = if_match.strip().removeprefix("W/")
    if len(tag) < 2 or not (tag.startswith('"') and tag.endswith('"')) or '"' in tag[1:-1]:
        return None
    return tag[1:-1]


def _fault_reply(fault: _Fault) -> _Reply | None:
    if fault.status is None:
        return None
    extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
    return _error(
        fault.status, str(fault.status), f"{HTTPStatus(fault.status).phrase} (injected by the emulator)", extra
    )


def _error(status: int, code: str, description: str, headers: Mapping[str, str] | None = None) -> _Reply:
    """Partner Center's error body: `code` (a string), `description`, `data` (a list) and `source`, as the
    error codes page's "Error responses" shows it and the .NET SDK reads it (microsoft/partner-center-sdk-for-dotNET,
    Source/PartnerSdk.Models/ApiFault.cs; Test/PartnerSdk.UnitTests/DefaultPartnerServiceErrorHandlerTests.cs)."""
    body = {"code": code, "description": description, "data": [], "source": "PartnerCenterEmulator"}
    return _Reply(status, body, headers or {})


def _unknown_resource(resource: str, tenant: str) -> _Reply:
    """Azure AD's answer to a token request for a resource it does not know: HTTP 400, `invalid_resource`,
    AADSTS500011, in the shape of the token endpoint's error body (as quoted from a real response in
    https://github.com/rootinc/laravel-azure-middleware/issues/51)."""
    timestamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    description = (
        f"AADSTS500011: The resource principal named {resource} was not found in the tenant named {tenant}. "
        "This can happen if the application has not been installed by the administrator of the tenant or "
        "consented to by any user in the tenant. You might have sent your authentication request to the wrong "
        f"tenant.\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}"
    )
    return _Reply(
        400,
        {
            "error": "invalid_resource",
            "error_description": description,
            "error_codes": [500011],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"{_CHINA_LOGIN}/error?code=500011",
        },
    )


def _json_or_none(raw_body: bytes) -> Any:
    try:
        return json.loads(raw_body) if raw_body else None
    except ValueError:
        return None


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m billing.devtools.partner_center_emulator",
        description="Development emulator of Partner Center operated by 21Vianet (local runs only).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--state", type=Path, help="JSON file keeping the subscriptions across restarts")
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    parser.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET)
    parser.add_argument("--partner-tenant", default=DEFAULT_PARTNER_TENANT)
    parser.add_argument("--resource", default=DEFAULT_RESOURCE, help="the only resource tokens are issued for")
    parser.add_argument("--token-lifetime", type=int, default=3600, help="seconds a bearer token is valid")
    parser.add_argument("--quiet", action="store_true", help="do not print a line per request")
    args = parser.parse_args(argv)
    try:
        emulator = PartnerCenterEmulator(
            args.host,
            args.port,
            client_id=args.client_id,
            client_secret=args.client_secret,
            partner_tenant=args.partner_tenant,
            resource=args.resource,
            token_lifetime=args.token_lifetime,
            state_file=args.state,
            log_requests=not args.quiet,
        ).start()
    except (OSError, ValueError) as exc:
        print(f"partner center emulator: {exc}", file=sys.stderr)
        return 1

    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    print(
        f"Partner Center emulator (development only, never for production) on {emulator.base_url}\n"
        f"  BILLING_PARTNER_CENTER_URL={emulator.base_url}\n"
        f"  BILLING_PARTNER_CENTER_TOKEN_URL={emulator.token_url}\n"
        f"  BILLING_PARTNER_CENTER_CLIENT_ID={emulator.client_id}\n"
        f"  BILLING_PARTNER_CENTER_CLIENT_SECRET={emulator.client_secret}\n"
        f"  BILLING_PARTNER_CENTER_RESOURCE={emulator.resource}\n"
        f"  state: {args.state or 'in memory only'}\n"
        "Stop with Ctrl+C.",
        flush=True,
    )
    while not stopping.wait(0.5):
        pass
    emulator.stop()
    print("Partner Center emulator stopped.", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
