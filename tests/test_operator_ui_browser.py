"""The Temporal Web UI as finance operators use it, in headless Chromium driven by Playwright: find a suspended
customer with a `BillingStage` query, read its details and current details, see a refused update's message
(and no stack trace under it), and pay the account off with `record_payment`, naming the operator, until the
run completes. Screenshots of each step go to test-artifacts/.

Runs against a dev server started with its UI, the codec server and `worker.py` (payloads encrypted, as
`./dev run` runs them), on a ladder that suspends within seconds. The UI shows the customer's input decrypted
through the codec server, while the history the server stores holds no customer name or email.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Locator, Page, async_playwright, expect
from temporalio.api.history.v1 import History
from temporalio.client import Client

from billing.devtools.partner_center_emulator import PartnerCenterEmulator
from billing.models import BillingStage, BillingStatus, NoticeKind
from tests.builders import SHANGHAI
from tests.conftest import SmtpSink
from tests.devserver_fixtures import (
    FAST_POLICY,
    REPO,
    DevServer,
    RunningCodecServer,
    RunningWorker,
    eventually,
    free_port,
    run_starter,
    running_codec_server,
    running_dev_server,
    running_worker,
)

pytestmark = [pytest.mark.browser, pytest.mark.devserver, pytest.mark.timeout(300)]

CHROMIUM = Path(os.environ.get("BILLING_TEST_CHROMIUM", "/usr/bin/chromium"))
# Headless and quiet: this machine's network is closed, so Chromium must not try to reach Google's services.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "test-artifacts" / "operator-ui"
UI_TIMEOUT_MS = 20_000

# FAST_POLICY's ladder (suspended ~13 s after the invoice), with the data deletion warnings out of the way of a
# test that lingers in the browser while the account is suspended.
UI_POLICY = FAST_POLICY.replace('["PT40S", "PT50S"]', '["PT1H", "PT2H"]')
SUBSCRIPTIONS = {"sub-office": "active", "sub-m365": "active"}
# As Partner Center names them: the operator reads these, not the ids.
OFFERS = {"sub-office": "Office 365 E3 operated by 21Vianet", "sub-m365": "Microsoft 365 Business Standard"}
FRIENDLY = {"sub-office": "Head office", "sub-m365": "Sales team"}
CUSTOMER_NAME, CUSTOMER_EMAIL = "Lotus Trading UI test", "ap@ui-lotus.example.cn"


@dataclass(frozen=True)
class OperatorUi:
    server: DevServer
    worker: RunningWorker
    codec: RunningCodecServer
    url: str


@pytest.fixture
async def operator_ui(
    tmp_path: Path, partner_center_emulator: PartnerCenterEmulator, smtp_sink: SmtpSink
) -> AsyncIterator[OperatorUi]:
    """A dev server with its Web UI on a free port reading payloads through the codec server, as `./dev run`
    starts them, and `worker.py` (encrypting) on the seconds-long ladder."""
    assert "PT1H" in UI_POLICY, "FAST_POLICY changed: keep the data deletion warnings out of this test's way"
    ui_port = free_port()
    async with (
        running_codec_server(tmp_path, cors_origins=f"http://127.0.0.1:{ui_port}") as codec,
        running_dev_server(tmp_path, ui=True, ui_port=ui_port, codec_endpoint=codec.url) as server,
        running_worker(tmp_path, server, partner_center_emulator, smtp_sink, UI_POLICY) as worker,
    ):
        assert server.ui_url is not None
        yield OperatorUi(server, worker, codec, server.ui_url)


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """Debian's Chromium, headless, with a fresh profile; Playwright never downloads a browser of its own."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: install Debian's package with "
            "`apt-get update && apt-get install -y chromium` (.ci/run does so when it is missing)"
        )
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile",
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
            timezone_id="UTC",
        )
        context.set_default_timeout(UI_TIMEOUT_MS)
        expect.set_options(timeout=UI_TIMEOUT_MS)
        try:
            yield context
        finally:
            await context.close()


class Screenshots:
    """Numbered full-page screenshots in test-artifacts/operator-ui/, the latest run's only."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.taken: list[Path] = []
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for old in ARTIFACTS.glob("*.png"):
            old.unlink()

    async def take(self, name: str) -> Path:
        path = ARTIFACTS / f"{len(self.taken) + 1:02d}-{name}.png"
        await self.page.screenshot(path=path, full_page=True)
        self.taken.append(path)
        return path


async def send_update(page: Page, name: str, payload: dict[str, object]) -> Locator:
    """Workflow page → More Actions → Send an Update → the update by name → JSON data → Submit; returns the
    dialog (it stays open when the update is refused)."""
    await page.get_by_role("button", name="More Actions").click()
    await page.get_by_role("menuitem", name="Send an Update").click()
    dialog = page.get_by_role("dialog", name="Send an Update")
    await dialog.get_by_role("button", name="Select an Update").click()
    # Each option reads "<name> <description>": the descriptions tell operators what JSON to send.
    option = dialog.get_by_role("option", name=re.compile(rf"^{name} "))
    await expect(option).to_contain_text("JSON")
    await option.click()
    editor = dialog.get_by_role("textbox", name="Data")
    await editor.click()
    await page.keyboard.press("ControlOrMeta+A")
    await page.keyboard.insert_text(json.dumps(payload))
    # The JSON editor hands its text to the form when it loses focus.
    await page.keyboard.press("Tab")
    await dialog.get_by_role("button", name="Submit").click()
    return dialog


async def workflow_status_reads(page: Page, label: str, within: float = 30) -> None:
    """Wait for the status badge of the workflow page to read `label`, reloading now and then: the page polls
    the server, but a missed poll must not fail the test."""
    badge = page.get_by_role("main").get_by_role("status").first
    deadline = time.monotonic() + within
    while True:
        try:
            await expect(badge).to_have_text(re.compile(label, re.IGNORECASE), timeout=5_000)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await page.reload()


async def test_operator_finds_a_suspended_customer_sees_a_refusal_and_pays_the_account_off_in_the_ui(
    browser: BrowserContext,  # first: without Chromium the test fails before starting any server
    operator_ui: OperatorUi,
    partner_center_emulator: PartnerCenterEmulator,
) -> None:
    client = operator_ui.server.client
    tag = uuid.uuid4().hex[:6].upper()
    suspended_id, current_id = f"C-UI-{tag}", f"C-OK-{tag}"
    suspended_wf, current_wf = f"customer-billing-{suspended_id}", f"customer-billing-{current_id}"
    invoice_id = f"INV-UI-{tag}"
    partner_center_emulator.seed_tenant(suspended_id, SUBSCRIPTIONS, offer_names=OFFERS, friendly_names=FRIENDLY)
    partner_center_emulator.seed_tenant(current_id, SUBSCRIPTIONS, offer_names=OFFERS, friendly_names=FRIENDLY)

    # One customer who does not pay (suspended within seconds) and one whose invoice is not due yet, so that
    # the query visibly filters.
    # Dates as the customer's zone reads them (starter.py's default --time-zone): between 16:00 and 24:00 UTC
    # it is already tomorrow in Shanghai, and a UTC date would fall before the invoice's issue date.
    now = datetime.now(UTC)
    issued_on = now.astimezone(SHANGHAI).date()
    for customer_id, invoice, amount, due_at in [
        (suspended_id, invoice_id, "1234.50", now + timedelta(seconds=6)),
        (current_id, f"INV-OK-{tag}", "880.00", now + timedelta(days=30)),
    ]:
        issued = await run_starter(
            operator_ui.server,
            operator_ui.worker.task_queue,
            "invoice",
            *("--customer-id", customer_id, "--name", f"{CUSTOMER_NAME} {customer_id}", "--email", CUSTOMER_EMAIL),
            *("--invoice-id", invoice, "--amount", amount),
            *("--time-zone", "Asia/Shanghai", "--issued-on", issued_on.isoformat()),
            *(
                "--due-on",
                due_at.astimezone(SHANGHAI).date().isoformat(),
                "--due-at",
                due_at.isoformat(timespec="seconds"),
            ),
        )
        assert issued.returncode == 0, issued.stderr

    handle = client.get_workflow_handle(suspended_wf, result_type=BillingStatus)

    async def settled_in_suspension() -> bool:
        # Suspended, the suspension notice sent and the stage indexed: the screen stops changing.
        status = await handle.query("status", result_type=BillingStatus)
        if status.stage is not BillingStage.SUSPENDED or status.notices_sent[-1].kind is not NoticeKind.SUSPENSION:
            return False
        query = f'BillingStage = "Suspended" AND CustomerId = "{suspended_id}"'
        return [execution.id async for execution in client.list_workflows(query)] == [suspended_wf]

    await eventually("the customer suspended and indexed", settled_in_suspension, 45, operator_ui.worker.stderr)

    page = browser.pages[0] if browser.pages else await browser.new_page()
    shots = Screenshots(page)
    try:
        # 1. The workflow list, narrowed with the saved-view query operators use.
        await page.goto(f"{operator_ui.url}/namespaces/default/workflows")
        await expect(page.get_by_role("link", name=current_wf)).to_be_visible()
        await page.get_by_test_id("toggle-manual-query").click()  # the "</>" button: an icon without a label
        query_box = page.get_by_placeholder("Enter a query")
        await query_box.fill('BillingStage = "Suspended"')
        await query_box.press("Enter")
        await expect(page.get_by_role("link", name=suspended_wf)).to_be_visible()
        await expect(page.get_by_role("link", name=current_wf)).to_have_count(0)
        assert "query=BillingStage" in page.url
        await shots.take("suspended-customers-query")

        # 2. The customer's page: the input decrypted through the codec server, the summary set at start and the
        # Markdown current details.
        await page.get_by_role("link", name=suspended_wf).click()
        await expect(page.get_by_role("heading", level=1)).to_contain_text(suspended_wf)
        await workflow_status_reads(page, "Running")
        # The input is the customer's account: the UI shows it decrypted by the codec server (the Temporal
        # server stores only ciphertext: checked below), and says so with its codec badge.
        workflow_input = page.get_by_role("textbox", name="Input")
        await expect(workflow_input).to_contain_text(f'"name": "{CUSTOMER_NAME} {suspended_id}"')
        await expect(workflow_input).to_contain_text(f'"email": "{CUSTOMER_EMAIL}"')
        await expect(page.get_by_label("Codec Server succesfully converted content").first).to_be_visible()
        await shots.take("input-decrypted-by-the-codec-server")
        await page.get_by_role("tab", name="User Metadata").click()
        summary = page.frame_locator("iframe#user-metadata-summary").locator("body")
        await expect(summary).to_contain_text(f"Billing lifecycle of customer {suspended_id}")
        static = page.frame_locator("iframe#user-metadata-details").locator("body")
        await expect(static).to_contain_text("Time zone: Asia/Shanghai")
        await expect(static).to_contain_text('"operator": "your name or login"')
        details = page.frame_locator("iframe#user-metadata-current-details").locator("body")
        await expect(details).to_contain_text(f"Customer: {CUSTOMER_NAME} {suspended_id} ({suspended_id})")
        await expect(details).to_contain_text("Stage: Suspended")
        await expect(details).to_contain_text("Amount due: 1234.50 CNY")
        await expect(details).to_contain_text(
            "Suspended subscriptions: Office 365 E3 operated by 21Vianet (Head office), "
            "Microsoft 365 Business Standard (Sales team)"
        )
        await expect(details).to_contain_text("Last notice: suspension at ")
        await expect(details).to_contain_text(invoice_id)
        # Times on the customer's clock, the zone named; the day 21Vianet deletes the suspended data.
        await expect(details).to_contain_text("(Asia/Shanghai)")
        await expect(details).not_to_contain_text("UTC")
        await expect(details).to_contain_text("21Vianet deletes their data on ")
        await shots.take("current-details")

        # 3. A write-off of more than is owed: the validator's refusal shows in the dialog; nothing changes.
        dialog = await send_update(
            page,
            "write_off",
            {"invoice_id": invoice_id, "amount": {"amount": "5000.00", "currency": "CNY"}, "reason": "goodwill"},
        )
        refusal = f"cannot write off 5000.00 CNY: only 1234.50 CNY is outstanding on {invoice_id}"
        await expect(dialog).to_contain_text(refusal)
        # The sentence and nothing else: no stack trace of the worker under it (its frames read 'File "/...').
        shown = await dialog.inner_text()
        assert 'File "/' not in shown and "Traceback" not in shown and ".py" not in shown, shown
        await shots.take("write-off-refused")
        await dialog.get_by_role("button", name="Cancel").last.click()
        await expect(dialog).to_be_hidden()
        unchanged = await handle.query("status", result_type=BillingStatus)
        assert unchanged.stage is BillingStage.SUSPENDED
        assert str(unchanged.amount_due) == "1234.50 CNY"
        assert unchanged.timeline == []

        # 4. The whole amount recorded as a payment: the dialog closes, the run reinstates and completes.
        dialog = await send_update(
            page,
            "record_payment",
            {
                "payment_id": f"PAY-UI-{tag}",
                "customer_id": suspended_id,
                "amount": {"amount": "1234.50", "currency": "CNY"},
                "received_at": datetime.now(UTC).isoformat(),
                "operator": "ui.tester",
            },
        )
        await expect(dialog).to_be_hidden()
        await expect(page.get_by_text("Update successful").first).to_be_visible()  # a toast
        await shots.take("payment-recorded")
        await workflow_status_reads(page, "Completed")
        # The details are read when the page opens; "r" reads them again (the UI says "Press the R for freshness").
        await page.get_by_role("tab", name="User Metadata").click()
        await page.keyboard.press("r")
        await expect(details).to_contain_text("Stage: Resolved")
        await expect(details).to_contain_text("Amount due: 0.00 CNY")
        await expect(details).to_contain_text("Last notice: close_the_loop")
        await expect(details).to_contain_text(f"Last operator action: record_payment (PAY-UI-{tag}) by ui.tester at ")
        await shots.take("completed-details")
        await page.get_by_role("tab", name="Timeline").click()
        result = page.get_by_role("textbox", name="Result")
        await expect(result).to_contain_text('"stage": "Resolved"')
        await expect(result).to_contain_text('"amount": "0.00"')
        await shots.take("completed-result")
    except Exception:
        await shots.take("failed")
        raise

    final = await handle.result()
    assert final.stage is BillingStage.RESOLVED
    assert [(entry.action, entry.operator) for entry in final.timeline] == [("record_payment", "ui.tester")]
    assert final.notices_sent[-1].kind is NoticeKind.CLOSE_THE_LOOP
    assert {sid: partner_center_emulator.subscription(suspended_id, sid)["status"] for sid in SUBSCRIPTIONS} == {
        "sub-office": "active",
        "sub-m365": "active",
    }
    assert all(path.stat().st_size > 0 for path in shots.taken)

    # What the Temporal server stores, read without the codec: no customer name or email anywhere.
    outsider = Client(client.service_client, namespace=client.namespace)
    for workflow_id in (suspended_wf, current_wf):
        history = await outsider.get_workflow_handle(workflow_id).fetch_history()
        stored = History(events=history.events).SerializeToString()
        assert history.events and CUSTOMER_NAME.encode() not in stored and b"UI test" not in stored
        assert CUSTOMER_EMAIL.encode() not in stored and b"ui-lotus" not in stored
    # The UI reached the codec server from the browser (the Temporal server never calls it).
    requests = [
        json.loads(line) for line in operator_ui.codec.log.read_text().splitlines() if '"codec request"' in line
    ]
    assert {(r["method"], r["path"], r["status"]) for r in requests} >= {
        ("POST", "/decode", 200),
        ("OPTIONS", "/decode", 204),
    }
