"""The aging report's HTML file in headless Chromium (Debian's, driven by Playwright), in zh-CN and en-US: the
totals shown equal the ledger's, a click on a column header sorts the customers, and the page asks for nothing
beyond its own file. Screenshots go to test-artifacts/aging-report/ (the path is printed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Route, async_playwright, expect
from sqlalchemy import func, select

from billing.ledger import LedgerStore
from billing.ledger.schema import invoices
from billing.models import Locale
from billing.money import Money
from billing.notices.formatting import format_money
from billing.reports.aging import aging_report
from billing.reports.render import ReportContext, render_aging
from tests.aging_book import AS_OF, BUCKET_NAMES, expected_totals, seed_book
from tests.devserver_fixtures import REPO
from tests.test_aging_report import EDGE_TOTALS, GENERATED, _add, book_edges
from tests.test_operator_ui_browser import CHROMIUM, CHROMIUM_FLAGS

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

ARTIFACTS = REPO / "test-artifacts" / "aging-report"
LISTED = 60


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: `apt-get install -y chromium`")
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile",
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1600, "height": 1000},
            timezone_id="UTC",
        )
        context.set_default_timeout(20_000)
        try:
            yield context
        finally:
            await context.close()


@pytest.mark.parametrize("locale", ["zh-CN", "en-US"])
async def test_aging_html_shows_the_ledgers_totals_sorts_and_loads_nothing_else(
    browser: BrowserContext, tmp_path: Path, locale: Locale
) -> None:
    store = LedgerStore.from_url(f"sqlite:///{tmp_path}/ledger.db")
    seeded = seed_book(store, 200)
    book_edges(store)
    with store.engine.connect() as connection:
        owed = dict(
            connection.execute(
                select(invoices.c.currency, func.sum(invoices.c.outstanding)).group_by(invoices.c.currency)
            ).all()
        )
    report = aging_report(store.engine, AS_OF)
    store.close()
    html_file = tmp_path / f"aging-{locale}.html"
    # Fewer customers listed than the book has (the HTML lists the most overdue): the totals are still all of them.
    context = ReportContext(locale=locale, generated_at=GENERATED)
    html_file.write_text(render_aging(report, context, "html", top=LISTED), "utf-8")

    requested: list[str] = []

    async def refuse_network(route: Route) -> None:
        if route.request.url.startswith("file://"):
            await route.continue_()
        else:
            await route.abort()

    await browser.route("**/*", refuse_network)
    page = await browser.new_page()
    page.on("request", lambda request: requested.append(request.url))
    await page.goto(html_file.as_uri())

    expected = _add(expected_totals(seeded), EDGE_TOTALS)
    for currency in ("CNY", "USD"):
        section = page.locator(f'section[data-currency="{currency}"]')
        totals = await section.locator("tfoot td").all_inner_texts()
        # The SUM of the ledger's outstanding column, read back through its money type (exact on both databases).
        ledger_total = owed[currency]
        assert isinstance(ledger_total, Decimal)
        assert totals[8] == format_money(Money(amount=ledger_total, currency=currency), locale)
        assert totals[3:8] == [
            format_money(Money(amount=expected[currency][bucket], currency=currency), locale) for bucket in BUCKET_NAMES
        ]
        assert "<svg" in await section.inner_html()

    cny = page.locator('section[data-currency="CNY"]')
    cny_table = report.table("CNY")
    assert cny_table is not None and len(cny_table.customers) > LISTED
    await expect(cny.locator("tbody tr")).to_have_count(LISTED)
    await expect(cny.locator("p.listed-note")).to_contain_text(f"{len(cny_table.customers):,}")
    total_header = cny.locator("thead th").nth(8)
    await total_header.click()
    await expect(total_header).to_have_attribute("aria-sort", "ascending")
    ascending = [
        Decimal(v)
        for v in await cny.locator("tbody tr td:nth-child(9)").evaluate_all("c => c.map(e => e.dataset.sort)")
    ]
    assert ascending == sorted(ascending) and ascending[0] < ascending[-1]
    await total_header.click()
    await expect(total_header).to_have_attribute("aria-sort", "descending")
    descending = [
        Decimal(v)
        for v in await cny.locator("tbody tr td:nth-child(9)").evaluate_all("c => c.map(e => e.dataset.sort)")
    ]
    assert descending == sorted(ascending, reverse=True)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / f"aging-{locale}.png"
    await page.screenshot(path=screenshot, full_page=False)
    print(f"aging report screenshot ({locale}): {screenshot}")
    assert requested and all(url.startswith("file://") for url in requested), requested
