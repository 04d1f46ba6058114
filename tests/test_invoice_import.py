"""`starter.py import-invoices`: reading CSV and JSON-lines files row by row, checking rows within the file and
against a real SQLite ledger, and the import end to end with the real worker (time-skipping server) and as the
CLI on the dev server."""

from __future__ import annotations

import functools
import io
import uuid
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from billing.invoice_import import (
    ImportFileError,
    ImportReport,
    InvoiceRow,
    Outcome,
    ParsedFile,
    Progress,
    check_against_ledger,
    check_within_file,
    file_format,
    import_invoices,
    parse_invoices,
    read_invoice_file,
)
from billing.ledger import LedgerStore
from billing.ledger_messages import RecordInvoiceRequest, RecordPaymentRequest, RescheduleInvoiceRequest
from billing.models import BillingStatus, CustomerAccount, Invoice, Payment
from billing.money import Money
from cli.customers import issue_invoice
from tests.builders import SHANGHAI, cny
from tests.conftest import SmtpSink
from tests.devserver_fixtures import DevServer, RunningWorker, eventually, run_starter
from tests.temporal_fixtures import Engine, EngineFactory

FILES = Path(__file__).parent / "invoice_files"
CSV_FILE = FILES / "invoices.csv"
JSONL_FILE = FILES / "invoices.jsonl"

# What tests/invoice_files/invoices.csv holds: four good invoices of three customers, an exact repeat of line 2,
# and eight bad rows (line 13 is blank).
CSV_GOOD = {"INV-IMP-0001": 2, "INV-IMP-0002": 3, "INV-IMP-0003": 4, "INV-IMP-0009": 10}
CSV_REJECTED = [5, 6, 7, 8, 9, 12, 14, 15]
CSV_CUSTOMERS = ("C-IMP-LOTUS", "C-IMP-HARBOUR", "C-IMP-PEONY")
LOTUS_NAME = "莲花贸易有限公司"


def parse(text: str, fmt: str = "csv", currency: str = "CNY") -> ParsedFile:
    return parse_invoices(text.encode("utf-8"), fmt, currency)  # type: ignore[arg-type]


def reasons(parsed: ParsedFile | ImportReport) -> dict[int, str]:
    return {rejected.line: rejected.reason for rejected in parsed.rejected}


CSV_HEADER = "invoice_id,customer_id,amount,currency,issued_on,due_on,name,email\n"


# --- reading files ----------------------------------------------------------------------------------------


def test_csv_good_rows_become_contract_models_and_bad_rows_are_reported_by_spreadsheet_row() -> None:
    parsed = read_invoice_file(CSV_FILE, "csv", "CNY")

    assert parsed.rows_read == 13
    # Rows that contradict each other are valid one by one: check_within_file finds them.
    assert [row.line for row in parsed.rows] == [2, 3, 4, 10, 11, 12, 14]
    first = parsed.rows[0]
    # Excel's byte order mark does not end up in the first column's name, and Chinese survives.
    assert first.invoice.invoice_id == "INV-IMP-0001"
    assert first.account.name == LOTUS_NAME
    assert first.invoice.amount == cny("1234.50")
    assert first.invoice.description == "Azure operated by 21Vianet, January"
    assert first.account.locale == "zh-CN" and first.account.time_zone == "Asia/Shanghai"
    assert first.account.tenant_id == "C-IMP-LOTUS"
    harbour = next(row for row in parsed.rows if row.account.customer_id == "C-IMP-HARBOUR")
    assert harbour.invoice.amount == cny("5600.00")  # "cny" is read as CNY
    assert (harbour.account.locale, harbour.account.time_zone, harbour.account.tenant_id) == (
        "en-US",
        "Europe/Berlin",
        "T-HARBOUR",
    )

    problems = reasons(parsed)
    assert problems == {
        5: 'amount "12.345": 3 decimals, CNY has 2: a dot marks decimals; write 12345 if you mean 12,345',
        6: 'currency "RMB1": not an ISO 4217 code such as CNY',
        7: "due_on: empty",
        8: 'issued_on "2030-02-30": no such day in the calendar',
        9: "due_on 2030-01-01 is before issued_on 2030-02-01",
        15: "email: must be an address such as billing@example.cn",
    }
    # The bad address is named as a field, never echoed.
    assert not any("not-an-address" in reason for reason in problems.values())


def test_jsonl_takes_the_contracts_money_object_json_numbers_and_unknown_fields() -> None:
    parsed = read_invoice_file(JSONL_FILE, file_format(JSONL_FILE), "CNY")

    assert parsed.rows_read == 10  # line 6 is blank
    rows, repeats, rejected = check_within_file(parsed.rows, parsed.unit)
    assert [(row.line, row.invoice.invoice_id, row.invoice.amount) for row in rows] == [
        (1, "INV-JL-0001", cny("1234.50")),
        (2, "INV-JL-0002", cny("880.10")),  # the JSON number 880.1, without a float's artefacts
    ]
    assert rows[0].account.name == LOTUS_NAME
    assert repeats == []
    assert reasons(parsed) | {r.line: r.reason for r in rejected} == {
        3: "not JSON: Expecting ',' delimiter at column 99",
        4: "not a JSON object",
        5: "amount: 'abc' is not a decimal number",
        7: "currency: 'US' is not an ISO 4217 code such as CNY",
        8: "name: missing",
        9: "customer C-JL-LOTUS's details differ from line 1 (email); give each customer one set of details in a file",
        10: "amount is in USD; the engine bills in CNY",
        11: "due_at: must be an ISO 8601 datetime with an offset, e.g. 2026-11-24T18:00:00+08:00",
    }


def test_a_quoted_line_break_stays_in_its_row_and_wrong_value_counts_are_reported() -> None:
    parsed = parse(
        CSV_HEADER
        + 'INV-1,C-1,100.00,CNY,2030-01-05,2030-02-04,"Lotus\nTrading",ap@lotus.example.cn\n'
        + "INV-2,C-2,100.00,CNY,2030-01-05,2030-02-04,Peony\n"
        + "\n"
        + "INV-3,C-3,1.00.0,CNY,2030-01-05,2030-02-04,Peony,ap@peony.example.cn\n"
    )
    assert [row.line for row in parsed.rows] == [2]
    assert parsed.rows[0].account.name == "Lotus\nTrading"
    # Rows as a spreadsheet numbers them: the quoted line break does not start a row.
    assert reasons(parsed) == {
        3: "7 values for the 8 columns of the header",
        5: 'amount "1.00.0": use a dot for decimals only, with no dots between thousands, e.g. 8800.00',
    }


def test_a_file_that_cannot_be_read_as_a_whole_is_refused_with_a_reason() -> None:
    with pytest.raises(ImportFileError, match=r"row 1: the header lacks the column\(s\) due_on, email"):
        parse("invoice_id,customer_id,amount,currency,issued_on,name\n")
    with pytest.raises(ImportFileError, match="the file is empty"):
        parse("")
    with pytest.raises(ImportFileError, match="column amount appears more than once"):
        parse(CSV_HEADER.replace("currency", "amount"))
    with pytest.raises(ImportFileError, match=r"name it \.xlsx, \.csv, \.jsonl or \.ndjson, or give --format"):
        file_format(Path("invoices.txt"))
    assert file_format(Path("INVOICES.NDJSON")) == "jsonl"
    assert file_format(Path("invoices.txt"), "csv") == "csv"


def test_unknown_csv_columns_are_named_and_ignored() -> None:
    parsed = parse(
        CSV_HEADER.replace("\n", ",sales_rep\n")
        + "INV-1,C-1,100.00,CNY,2030-01-05,2030-02-04,Lotus,ap@x.example.cn,Li\n"
    )
    assert parsed.ignored_columns == ["sales_rep"]
    assert [row.invoice.invoice_id for row in parsed.rows] == ["INV-1"]


def test_the_due_moment_is_the_one_the_workflow_books() -> None:
    """The ledger refuses an invoice booked again with another due moment, so the import books the one the
    lifecycle does: the start of the day after due_on in the customer's zone when no due_at is given."""
    parsed = read_invoice_file(CSV_FILE, "csv", "CNY")
    exact = [row for row in parsed.rows if row.invoice.due_at is not None]
    assert exact and all(row.due_at == row.invoice.due_at for row in exact)
    for row in parsed.rows:
        if row.invoice.due_at is None:
            local = row.due_at.astimezone(row.account.zone)
            assert (local.date(), local.time()) == (row.invoice.due_on + timedelta(days=1), time(0))
    harbour = next(row for row in parsed.rows if row.account.customer_id == "C-IMP-HARBOUR")
    assert harbour.due_at == datetime(2030, 2, 6, tzinfo=ZoneInfo("Europe/Berlin"))


def test_one_invoice_id_with_different_content_rejects_every_line_of_it_and_exact_repeats_are_left_alone() -> None:
    rows, repeats, rejected = check_within_file(read_invoice_file(CSV_FILE, "csv", "CNY").rows)
    assert {row.invoice.invoice_id: row.line for row in rows} == CSV_GOOD
    assert [row.line for row in repeats] == [11]
    assert {r.line: r.reason for r in rejected} == {
        12: "invoice INV-IMP-0010 is also on row(s) 14 with different content; none of them is imported",
        14: "invoice INV-IMP-0010 is also on row(s) 12 with different content; none of them is imported",
    }


# --- against the ledger -----------------------------------------------------------------------------------


def _row(line: int, invoice_id: str, amount: str = "500.00", customer_id: str = "C-L", **changes: Any) -> InvoiceRow:
    account = CustomerAccount(customer_id=customer_id, name=LOTUS_NAME, email="ap@lotus.example.cn")
    fields: dict[str, Any] = {"issued_on": date(2030, 1, 5), "due_on": date(2030, 2, 4)} | changes
    invoice = Invoice(invoice_id=invoice_id, customer_id=customer_id, amount=cny(amount), **fields)
    return InvoiceRow(line, account, invoice)


def _book(ledger: LedgerStore, row: InvoiceRow) -> None:
    ledger.record_invoice(RecordInvoiceRequest(account=row.account, invoice=row.invoice, due_at=row.due_at))


def test_the_ledger_decides_new_already_recorded_settled_or_conflicting(sqlite_ledger: LedgerStore) -> None:
    owed, settled, extended, changed = (_row(2, "INV-OWED"), _row(3, "INV-PAID"), _row(4, "INV-EXT"), _row(5, "INV-X"))
    for row in (owed, settled, extended, changed):
        _book(sqlite_ledger, row)
    sqlite_ledger.record_payment(
        RecordPaymentRequest(
            payment=Payment(
                payment_id="PAY-1",
                customer_id="C-L",
                amount=cny("500.00"),
                received_at=datetime(2030, 1, 10, tzinfo=SHANGHAI),
                invoice_id="INV-PAID",
            )
        )
    )
    # An extended due date is still the same invoice: the file keeps the date it was issued with.
    sqlite_ledger.reschedule_invoice(
        RescheduleInvoiceRequest(
            change_id="EXT-1",
            customer_id="C-L",
            invoice_id="INV-EXT",
            due_on=date(2030, 3, 4),
            due_at=datetime(2030, 3, 5, tzinfo=SHANGHAI),
            reason="budget approval",
        )
    )
    rows = [
        owed,
        settled,
        extended,
        _row(5, "INV-X", amount="600.00"),
        _row(6, "INV-X2", due_on=date(2030, 2, 10)),
        _row(7, "INV-NEW"),
    ]
    _book(sqlite_ledger, _row(0, "INV-X2"))
    usd = CustomerAccount(customer_id="C-USD", name="Harbour", email="ap@harbour.example.com")
    sqlite_ledger.record_invoice(
        RecordInvoiceRequest(
            account=usd,
            invoice=Invoice(
                invoice_id="INV-USD",
                customer_id="C-USD",
                amount=Money(amount=Decimal("10.00"), currency="USD"),
                issued_on=date(2030, 1, 5),
                due_on=date(2030, 2, 4),
            ),
            due_at=datetime(2030, 2, 5, tzinfo=SHANGHAI),
        )
    )
    rows.append(_row(8, "INV-C-USD", customer_id="C-USD"))

    planned, rejected = check_against_ledger(rows, sqlite_ledger, "CNY")

    assert [(item.row.line, item.outcome) for item in planned] == [
        (2, Outcome.ALREADY_RECORDED),
        (3, Outcome.SETTLED),
        (4, Outcome.ALREADY_RECORDED),
        (7, Outcome.RECORDED),
    ]
    assert {r.line: r.reason for r in rejected} == {
        5: "invoice INV-X is already on the books with a different amount 500.00 CNY (file: 600.00 CNY); "
        "a corrected invoice needs a new invoice id",
        6: "invoice INV-X2 is already on the books with a different due_on 2030-02-04 (file: 2030-02-10), "
        "due_at 2030-02-05T00:00:00+08:00 (file: 2030-02-11T00:00:00+08:00); a corrected invoice needs a new "
        "invoice id",
        8: "customer C-USD's account is kept in USD; an amount in CNY cannot be booked on it",
    }


# --- progress ---------------------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Clock:
    """A clock the test moves: each reading is `step` seconds after the one before."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_progress_shows_once_a_step_takes_over_a_second_as_a_bar_on_a_terminal_and_ten_lines_in_a_log() -> None:
    log = io.StringIO()
    progress = Progress(log, 2000, clock=_Clock(0.01))  # 20 s in all: the first second is quiet
    for _ in range(2000):
        progress.advance()
    progress.close()
    lines = log.getvalue().splitlines()
    assert lines[0] == "100/2000 rows (0%)"  # the first row after a second
    assert len(lines) == 11  # and every tenth after it
    assert lines[-1] == "2000/2000 rows (100%)"

    quick = io.StringIO()
    progress = Progress(quick, 2000, clock=_Clock(0.0001))  # 0.2 s: nothing to show
    for _ in range(2000):
        progress.advance()
    progress.close()
    assert quick.getvalue() == ""

    terminal = _Terminal()
    progress = Progress(terminal, 40, clock=_Clock(0.5))
    for _ in range(40):
        progress.advance()
    progress.close()
    assert terminal.getvalue().endswith(f"\r[{'#' * 30}] 40/40 rows\n")


# --- end to end: the real worker on the time-skipping server ----------------------------------------------


async def _run_import(
    engine: Engine | None, ledger: LedgerStore, path: Path = CSV_FILE, *, skip_bad_rows: bool = True
) -> ImportReport:
    """The mixed test file imported with --skip-bad-rows unless told otherwise: its good rows go in."""
    starter = None
    if engine is not None:
        engine.started.update(f"customer-billing-{customer_id}" for customer_id in CSV_CUSTOMERS)
        starter = functools.partial(issue_invoice, engine.client, engine.settings.task_queue)
    return await import_invoices(
        read_invoice_file(path, file_format(path), "CNY"),
        source=path.name,
        ledger=ledger,
        currency="CNY",
        start_lifecycle=starter,
        skip_bad_rows=skip_bad_rows,
    )


def _booked(ledger: LedgerStore, customer_id: str) -> dict[str, Money]:
    return {i.invoice_id: i.amount for i in ledger.balance(customer_id, "CNY", list(CSV_GOOD)).invoices}


async def _status_after_signals(engine: Engine, customer_id: str) -> BillingStatus:
    """The status once the lifecycle has taken every signal sent before this call: an update is applied after
    the messages that arrived before it (a pause and its resume change nothing else)."""
    handle = engine.handle(customer_id)
    await handle.execute_update("pause_dunning", {"reason": "import test"}, result_type=BillingStatus)
    return await handle.execute_update("resume_dunning", {"reason": "import test"}, result_type=BillingStatus)


async def _latest_run(engine: Engine, customer_id: str) -> tuple[str, WorkflowExecutionStatus]:
    """The latest run of the customer's lifecycle, read raw: the SDK's describe() cannot decode the search
    attributes of a completed lifecycle on the time-skipping server."""
    response = await engine.client.workflow_service.describe_workflow_execution(
        DescribeWorkflowExecutionRequest(
            namespace=engine.client.namespace,
            execution=WorkflowExecution(workflow_id=f"customer-billing-{customer_id}"),
        )
    )
    info = response.workflow_execution_info
    return info.execution.run_id, WorkflowExecutionStatus(info.status)


def _invoice_notices(sink: SmtpSink) -> list[tuple[str, str]]:
    return sorted(
        (str(m["X-Billing-Customer"]), str(m["Subject"]))
        for m in sink.messages
        if m["X-Billing-Notice"] == "invoice" and str(m["X-Billing-Customer"]).startswith("C-IMP-")
    )


async def test_import_books_invoices_starts_lifecycles_and_a_second_run_changes_nothing(
    time_skipping_env: WorkflowEnvironment,
    engine_factory: EngineFactory,
    sqlite_ledger: LedgerStore,
    smtp_sink: SmtpSink,
) -> None:
    async with engine_factory(time_skipping_env.client) as engine:
        first = await _run_import(engine, sqlite_ledger)

        assert first.rows_read == 13
        assert first.count(Outcome.RECORDED) == 4
        assert [r.line for r in first.rejected] == CSV_REJECTED
        assert len(first.repeats) == 1
        assert sorted(first.signalled) == sorted(CSV_GOOD)
        assert first.exit_status == 2
        assert _booked(sqlite_ledger, "C-IMP-LOTUS") == {"INV-IMP-0001": cny("1234.50"), "INV-IMP-0002": cny("880.00")}
        assert _booked(sqlite_ledger, "C-IMP-HARBOUR") == {"INV-IMP-0003": cny("5600.00")}
        assert _booked(sqlite_ledger, "C-IMP-PEONY") == {"INV-IMP-0009": cny("450.00")}

        lotus = await _status_after_signals(engine, "C-IMP-LOTUS")
        # Oldest due first: INV-IMP-0002 is due at 18:00, INV-IMP-0001 at the end of the same day.
        assert [i.invoice_id for i in lotus.invoices] == ["INV-IMP-0002", "INV-IMP-0001"]
        assert lotus.amount_due == cny("2114.50")
        harbour = await _status_after_signals(engine, "C-IMP-HARBOUR")
        assert harbour.invoices[0].due_at == datetime(2030, 2, 6, tzinfo=ZoneInfo("Europe/Berlin"))
        assert len((await _status_after_signals(engine, "C-IMP-PEONY")).invoices) == 1
        runs = {c: await _latest_run(engine, c) for c in CSV_CUSTOMERS}

        second = await _run_import(engine, sqlite_ledger)

        assert second.count(Outcome.RECORDED) == 0
        assert second.count(Outcome.ALREADY_RECORDED) == 4
        assert sorted(second.signalled) == sorted(CSV_GOOD)
        assert [r.line for r in second.rejected] == CSV_REJECTED
        for customer_id, count in (("C-IMP-LOTUS", 2), ("C-IMP-HARBOUR", 1), ("C-IMP-PEONY", 1)):
            status = await _status_after_signals(engine, customer_id)
            assert len(status.invoices) == count  # a known invoice is taken once
            assert status.rejected == []
            assert await _latest_run(engine, customer_id) == runs[customer_id]  # joined, not a new run
        assert _booked(sqlite_ledger, "C-IMP-LOTUS") == {"INV-IMP-0001": cny("1234.50"), "INV-IMP-0002": cny("880.00")}

        async def four_invoice_notices() -> list[tuple[str, str]]:
            return _invoice_notices(smtp_sink) if len(_invoice_notices(smtp_sink)) >= 4 else []

        await eventually("the invoice notices", four_invoice_notices, 15)
        assert [customer for customer, _ in _invoice_notices(smtp_sink)] == [
            "C-IMP-HARBOUR",
            "C-IMP-LOTUS",
            "C-IMP-LOTUS",
            "C-IMP-PEONY",
        ]
        to_lotus = next(m for m in smtp_sink.messages if m["X-Billing-Customer"] == "C-IMP-LOTUS")
        assert to_lotus["To"].addresses[0].display_name == LOTUS_NAME


async def test_a_settled_invoice_starts_no_lifecycle_when_the_file_is_imported_again(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, sqlite_ledger: LedgerStore
) -> None:
    async with engine_factory(time_skipping_env.client) as engine:
        await _run_import(engine, sqlite_ledger)
        handle = engine.handle("C-IMP-HARBOUR")
        now = await time_skipping_env.get_current_time()
        payment = Payment(
            payment_id=f"PAY-{uuid.uuid4().hex[:6]}",
            customer_id="C-IMP-HARBOUR",
            amount=cny("5600.00"),
            received_at=now,
        )
        await handle.signal("payment_received", payment)
        paid = await handle.result()
        assert paid.amount_due == cny("0.00")
        completed = await _latest_run(engine, "C-IMP-HARBOUR")
        assert completed[1] == WorkflowExecutionStatus.COMPLETED

        again = await _run_import(engine, sqlite_ledger)

        assert again.count(Outcome.SETTLED) == 1
        assert again.count(Outcome.ALREADY_RECORDED) == 3
        assert sorted(again.signalled) == ["INV-IMP-0001", "INV-IMP-0002", "INV-IMP-0009"]
        assert await _latest_run(engine, "C-IMP-HARBOUR") == completed  # no new run for a settled invoice


async def test_a_run_that_stopped_after_booking_is_completed_by_running_the_file_again(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, sqlite_ledger: LedgerStore
) -> None:
    """Booking comes before the start: a crash between the two leaves invoices on the books without a
    lifecycle, the state this test sets up; the rerun starts them."""
    parsed = read_invoice_file(CSV_FILE, "csv", "CNY")
    for row in parsed.rows[:2]:  # LOTUS's two invoices were booked, then the import died
        _book(sqlite_ledger, row)
    async with engine_factory(time_skipping_env.client) as engine:
        rerun = await _run_import(engine, sqlite_ledger)

        assert rerun.count(Outcome.ALREADY_RECORDED) == 2
        assert rerun.count(Outcome.RECORDED) == 2
        assert sorted(rerun.signalled) == sorted(CSV_GOOD)
        lotus = await _status_after_signals(engine, "C-IMP-LOTUS")
        assert lotus.amount_due == cny("2114.50")


async def test_a_dry_run_checks_against_the_ledger_and_writes_nothing(sqlite_ledger: LedgerStore) -> None:
    """Nothing is signalled either: a dry run has no lifecycle starter (the CLI test checks the server)."""
    _book(sqlite_ledger, read_invoice_file(CSV_FILE, "csv", "CNY").rows[0])

    report = await _run_import(None, sqlite_ledger)

    assert report.dry_run
    assert report.count(Outcome.ALREADY_RECORDED) == 1
    assert report.count(Outcome.RECORDED) == 3
    assert report.signalled == []
    assert "would be recorded                    3" in report.render()
    assert "row 5, 6, 7, 8, 9, 12, 14, 15" in report.render()
    assert _booked(sqlite_ledger, "C-IMP-LOTUS") == {"INV-IMP-0001": cny("1234.50")}
    assert _booked(sqlite_ledger, "C-IMP-PEONY") == _booked(sqlite_ledger, "C-IMP-HARBOUR") == {}


async def test_an_invoice_id_booked_for_another_customer_is_rejected_with_its_line(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, sqlite_ledger: LedgerStore, tmp_path: Path
) -> None:
    customer_id = f"C-IMP-{uuid.uuid4().hex[:6]}"
    _book(sqlite_ledger, _row(0, "INV-TAKEN", customer_id="C-IMP-FIRST"))
    path = tmp_path / "taken.csv"
    path.write_text(
        CSV_HEADER + f"\nINV-TAKEN,{customer_id},500.00,CNY,2030-01-05,2030-02-04,{LOTUS_NAME},ap@lotus.example.cn\n",
        encoding="utf-8",
    )
    async with engine_factory(time_skipping_env.client) as engine:
        report = await _run_import(engine, sqlite_ledger, path)

    assert reasons(report) == {
        3: f"invoice INV-TAKEN is already on the books with a different customer C-IMP-FIRST (now {customer_id}); "
        "a corrected invoice needs a new invoice id"
    }
    assert report.signalled == []
    assert report.exit_status == 2
    with pytest.raises(RPCError) as missing:
        await time_skipping_env.client.get_workflow_handle(f"customer-billing-{customer_id}").describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND


async def test_a_dry_run_already_names_an_invoice_id_booked_for_another_customer(
    sqlite_ledger: LedgerStore, tmp_path: Path
) -> None:
    _book(sqlite_ledger, _row(0, "INV-TAKEN-DRY", customer_id="C-IMP-FIRST"))
    path = tmp_path / "taken.csv"
    path.write_text(
        CSV_HEADER + f"\nINV-TAKEN-DRY,C-IMP-OTHER,500.00,CNY,2030-01-05,2030-02-04,{LOTUS_NAME},ap@lotus.example.cn\n",
        encoding="utf-8",
    )

    report = await _run_import(None, sqlite_ledger, path)

    assert report.dry_run
    assert reasons(report) == {
        3: "invoice INV-TAKEN-DRY is already on the books with a different customer C-IMP-FIRST (now C-IMP-OTHER); "
        "a corrected invoice needs a new invoice id"
    }
    assert report.count(Outcome.RECORDED) == 0


# --- end to end: the command line on the dev server -------------------------------------------------------


@pytest.mark.devserver
async def test_the_command_line_imports_a_file_reports_bad_lines_and_is_idempotent(
    dev_server: DevServer, billing_worker_process: RunningWorker, tmp_path: Path
) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"  # the worker's ledger (worker_environment)
    queue = billing_worker_process.task_queue

    dry = await run_starter(
        dev_server, queue, "import-invoices", str(CSV_FILE), "--ledger-url", ledger_url, "--dry-run"
    )

    assert dry.returncode == 2, dry.stderr
    assert "13 rows read (dry run: nothing was written or signalled)" in dry.stdout
    assert "would be recorded                    0" in dry.stdout
    assert "good rows, held back                 4" in dry.stdout
    assert 'row 5, amount "12.345": 3 decimals, CNY has 2' in dry.stderr

    held = await run_starter(dev_server, queue, "import-invoices", str(CSV_FILE), "--ledger-url", ledger_url)

    assert held.returncode == 2, held.stderr
    assert "recorded                             0" in held.stdout
    assert "good rows, held back                 4" in held.stdout
    assert [line for line in held.stderr.splitlines() if line.startswith("row ")] == [
        line for line in dry.stderr.splitlines() if line.startswith("row ")
    ]
    ledger = LedgerStore.from_url(ledger_url)
    try:
        assert _booked(ledger, "C-IMP-LOTUS") == {}
        listed = [w.id async for w in dev_server.client.list_workflows('WorkflowType = "CustomerBilling"')]
        assert listed == []

        assert _booked(ledger, "C-IMP-LOTUS") == {}
        first = await run_starter(
            dev_server, queue, "import-invoices", str(CSV_FILE), "--ledger-url", ledger_url, "--skip-bad-rows"
        )

        assert first.returncode == 2, first.stderr
        assert (
            'row 5, amount "12.345": 3 decimals, CNY has 2: a dot marks decimals; write 12345 if you mean 12,345'
            in first.stderr
        )
        assert "row 9, due_on 2030-01-01 is before issued_on 2030-02-01" in first.stderr
        assert [line.split(",")[0] for line in first.stderr.splitlines() if line.startswith("row ")] == [
            f"row {n}" for n in CSV_REJECTED
        ]
        assert "rejected                             8   row 5, 6, 7, 8, 9, 12, 14, 15" in first.stdout
        assert "invoices signalled                   4   (starting or joining 3 lifecycles)" in first.stdout
        assert _booked(ledger, "C-IMP-LOTUS") == {"INV-IMP-0001": cny("1234.50"), "INV-IMP-0002": cny("880.00")}

        async def three_lifecycles() -> list[str]:
            query = 'WorkflowType = "CustomerBilling" AND ExecutionStatus = "Running"'
            ids = sorted([w.id async for w in dev_server.client.list_workflows(query)])
            return ids if len(ids) == 3 else []

        running = await eventually("three lifecycles in visibility", three_lifecycles, 15)
        assert running == sorted(f"customer-billing-{c}" for c in CSV_CUSTOMERS)

        second = await run_starter(
            dev_server, queue, "import-invoices", str(CSV_FILE), "--ledger-url", ledger_url, "--skip-bad-rows"
        )

        assert second.returncode == 2, second.stderr
        assert "recorded                             0" in second.stdout
        assert "already recorded, still owed         4" in second.stdout
        assert "invoices signalled                   4   (starting or joining 3 lifecycles)" in second.stdout
        assert [line for line in second.stderr.splitlines() if not line.startswith("row ")] == []
        rerun = [w async for w in dev_server.client.list_workflows('WorkflowType = "CustomerBilling"')]
        assert len(rerun) == 3  # the second run joined the three open lifecycles, it started none
    finally:
        ledger.close()


# --- finance files as they really are: .xlsx, GB18030 and BOM CSVs, thousands separators ------------------

GB18030_FILE = FILES / "invoices-gb18030.csv"
BOM_FILE = FILES / "invoices-bom.csv"
YEAR_FIRST = (
    "write the year first, e.g. 2026-11-24: with the year last, the month comes first in some countries and the "
    "day in others"
)


def test_a_gb18030_csv_from_chinese_excel_is_read_with_its_chinese_headers_names_and_amounts() -> None:
    """Excel's "CSV" in a Chinese locale: GB18030, a title row above the header, Chinese column names,
    full-width digits, thousands separators, 人民币 for the currency, and a 备注 column that stays unread."""
    parsed = read_invoice_file(GB18030_FILE, "csv", "CNY")

    assert parsed.encoding == "gb18030"
    assert parsed.skipped == [1]  # the title row
    assert parsed.ignored_columns == ["备注"]
    assert [(row.line, row.invoice.invoice_id, row.invoice.amount, row.invoice.issued_on) for row in parsed.rows] == [
        (3, "INV-GB-0001", cny("8800.00"), date(2030, 1, 5)),
        (4, "INV-GB-0002", cny("12345.60"), date(2030, 1, 5)),  # "１２，３４５．６０", 人民币, 2030年1月5日
        (5, "INV-GB-0003", cny("880.00"), date(2030, 1, 5)),  # ¥880 with the currency column saying CNY
    ]
    assert parsed.rows[0].account.name == LOTUS_NAME
    assert parsed.rows[2].account.name == "牡丹科技（上海）有限公司"
    assert reasons(parsed) == {
        6: '金额 "8.800,00": use a dot for decimals, e.g. 8800.00',
        7: f'开票日期 "01/05/2030": {YEAR_FIRST}; 到期日 "02/04/2030": {YEAR_FIRST}',
        # Unambiguous alone, but this file writes decimals with a comma (row 6): 8,800 may be 8.8.
        8: '金额 "8,800": row 6 writes decimals with a comma, so this may be 8800 or 8.8: write it without the comma',
        9: '金额 "8.800": 3 decimals, CNY has 2: a dot marks decimals; write 8800 if you mean 8,800',
        10: '金额 "¥300.00": ¥ is not USD',
    }


def test_the_encoding_can_be_given_and_a_file_in_neither_utf8_nor_gb18030_is_refused() -> None:
    data = GB18030_FILE.read_bytes()
    assert parse_invoices(data, "csv", "CNY", encoding="gb18030").rows[0].account.name == LOTUS_NAME
    with pytest.raises(ImportFileError, match="row 1 is not utf-8: invalid continuation byte"):
        parse_invoices(data, "csv", "CNY", encoding="utf-8")
    with pytest.raises(ImportFileError, match=r"row 2 is neither UTF-8 nor GB18030: save the file as \"CSV UTF-8\""):
        parse_invoices(
            CSV_HEADER.encode() + b"INV-1,C-1,1.00,CNY,2030-01-05,2030-02-04,\x81\x20,a@b.cn\n", "csv", "CNY"
        )
    with pytest.raises(ImportFileError, match="UTF-16"):
        parse_invoices(CSV_HEADER.encode("utf-16"), "csv", "CNY")


def test_a_utf8_bom_csv_with_english_headers_reads_currency_beside_the_amount_and_local_due_times() -> None:
    parsed = read_invoice_file(BOM_FILE, "csv", "CNY")

    assert parsed.encoding == "utf-8-sig"
    berlin = ZoneInfo("Europe/Berlin")
    assert [(row.invoice.invoice_id, row.invoice.amount, row.due_at) for row in parsed.rows] == [
        ("INV-BOM-0001", cny("1234567.89"), datetime(2030, 2, 5, 18, tzinfo=berlin)),  # "2030-02-05 18:00"
        ("INV-BOM-0002", cny("5600.00"), datetime(2030, 2, 6, tzinfo=berlin)),  # "5600 RMB"
    ]
    assert reasons(parsed) == {
        4: 'Amount "5600.00": no currency: add a currency column, or write it with the amount, e.g. CNY 5600.00',
        5: 'Due Time "2030-10-27 02:30": 2030-10-27 02:30 happens twice in Europe/Berlin (the clocks go back): add '
        "the offset, +0200 for the first or +0100 for the second",
    }


def _workbook(path: Path) -> Path:
    """An .xlsx as finance exports it: a title row, number and text amounts, date cells and date text, an id
    typed as a number, an empty row in the table, a merged note under it; a second sheet for --sheet."""
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "十一月"
    sheet.append(["2030年1月应收发票"])
    sheet.append(["发票号", "客户编号", "金额", "币种", "开票日期", "到期日", "客户名称", "邮箱", "到期时间"])
    lotus = ("C-XL-LOTUS", None)
    rows: list[list[Any]] = [
        ["INV-XL-0001", lotus[0], 8800, "CNY", datetime(2030, 1, 5), datetime(2030, 2, 4)],
        ["INV-XL-0002", lotus[0], 1234.5600000000001, "CNY", datetime(2030, 1, 5), "2030/02/04"],
        ["INV-XL-0003", lotus[0], "8,800.00", "CNY", "2030年1月5日", datetime(2030, 2, 4)],
        [],
        [
            1004,
            lotus[0],
            300.5,
            "CNY",
            datetime(2030, 1, 5),
            datetime(2030, 2, 4),
            None,
            None,
            datetime(2030, 2, 4, 18),
        ],
        ["INV-XL-0005", lotus[0], "8.800,00", "CNY", datetime(2030, 1, 5), datetime(2030, 2, 4)],
        ["INV-XL-0006", lotus[0], 12.345, "CNY", datetime(2030, 1, 5), "11/24/2030"],
        ["INV-XL-0007", lotus[0], datetime(2030, 1, 5), "CNY", datetime(2030, 1, 5), datetime(2030, 2, 4, 18)],
    ]
    for row in rows:
        sheet.append([*row, LOTUS_NAME, "ap@lotus.example.cn"] if len(row) == 6 else row)
    sheet.cell(7, 7, LOTUS_NAME)
    sheet.cell(7, 8, "ap@lotus.example.cn")
    sheet.append([])
    sheet.append(["制表：财务部"])
    sheet.merge_cells(start_row=12, start_column=1, end_row=12, end_column=9)
    other = workbook.create_sheet("十二月")
    other.append(["invoice_id", "customer_id", "amount", "currency", "issued_on", "due_on", "name", "email"])
    other.append(["INV-XL-1201", "C-XL-LOTUS", "CNY 99.00", None, "2030-02-05", "2030-03-07", LOTUS_NAME, "a@b.cn"])
    workbook.save(path)
    return path


def test_an_xlsx_workbook_reads_number_and_text_cells_date_cells_and_skips_titles_blank_rows_and_notes(
    tmp_path: Path,
) -> None:
    path = _workbook(tmp_path / "invoices-2030-01.xlsx")
    parsed = read_invoice_file(path, file_format(path), "CNY")

    assert parsed.unit == "row" and parsed.skipped == [1, 12]  # the title; the merged note (row 11 is blank)
    assert [(row.line, row.invoice.invoice_id, row.invoice.amount, row.invoice.due_on) for row in parsed.rows] == [
        (3, "INV-XL-0001", cny("8800.00"), date(2030, 2, 4)),
        (4, "INV-XL-0002", cny("1234.56"), date(2030, 2, 4)),  # the double as Excel shows it
        (5, "INV-XL-0003", cny("8800.00"), date(2030, 2, 4)),
        (7, "1004", cny("300.50"), date(2030, 2, 4)),  # an id typed as a number
    ]
    assert parsed.rows[3].due_at == datetime(2030, 2, 4, 18, tzinfo=SHANGHAI)  # a date-time cell, local time
    assert reasons(parsed) == {
        8: '金额 "8.800,00": use a dot for decimals, e.g. 8800.00',
        9: f'金额 "12.345": more than 2 decimals for CNY; 到期日 "11/24/2030": {YEAR_FIRST}',
        10: '金额 "2030-01-05": a date or time, not an amount: format the column as numbers or text; '
        '到期日 "2030-02-04 18:00": 2030-02-04 18:00 has a time of day: give the day alone, e.g. 2026-11-24',
    }

    december = read_invoice_file(path, "xlsx", "CNY", sheet="十二月")
    assert [(row.line, row.invoice.amount) for row in december.rows] == [(2, cny("99.00"))]
    with pytest.raises(ImportFileError, match="no sheet 'March'; the workbook has '十一月', '十二月'"):
        read_invoice_file(path, "xlsx", "CNY", sheet="March")
    with pytest.raises(ImportFileError, match=r"not an Excel \.xlsx workbook"):
        parse_invoices(CSV_FILE.read_bytes(), "xlsx", "CNY")


def test_headers_may_name_a_column_twice_only_once() -> None:
    with pytest.raises(ImportFileError, match="row 1: column amount and 金额 both mean amount"):
        parse(CSV_HEADER.replace("\n", ",金额\n"))


class _Lifecycles:
    """The lifecycle port as the import sees it, recording what it was asked to start (the end-to-end tests
    above start real lifecycles on the time-skipping server)."""

    def __init__(self) -> None:
        self.started: list[str] = []

    async def __call__(self, account: CustomerAccount, invoice: Invoice) -> str:
        self.started.append(invoice.invoice_id)
        return "run"


async def test_a_file_with_a_bad_row_imports_nothing_and_once_fixed_imports_each_invoice_once(
    sqlite_ledger: LedgerStore, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    good_rows = (
        f'INV-FIX-1,C-FIX,"8,800.00",CNY,2030/01/05,2030/02/04,{LOTUS_NAME},ap@lotus.example.cn\n'
        f"INV-FIX-2,C-FIX,880.00,CNY,2030-01-05,2030-02-04,{LOTUS_NAME},ap@lotus.example.cn\n"
    )
    bad.write_text(
        CSV_HEADER
        + good_rows
        + f'INV-FIX-3,C-FIX,"1.200,00",CNY,2030-01-05,2030-02-04,{LOTUS_NAME},ap@lotus.example.cn\n',
        encoding="utf-8",
    )
    lifecycles = _Lifecycles()

    async def run(path: Path, **options: Any) -> ImportReport:
        return await import_invoices(
            read_invoice_file(path, "csv", "CNY"),
            source=path.name,
            ledger=sqlite_ledger,
            currency="CNY",
            start_lifecycle=lifecycles,
            **options,
        )

    held = await run(bad)

    assert held.held and held.exit_status == 2
    assert held.problems() == ['row 4, amount "1.200,00": use a dot for decimals, e.g. 1200.00']
    assert lifecycles.started == [] and _booked(sqlite_ledger, "C-FIX") == {}
    assert "good rows, held back                 2" in held.render()

    fixed = tmp_path / "fixed.csv"
    fixed.write_text(bad.read_text(encoding="utf-8").replace('"1.200,00"', "1200.00"), encoding="utf-8")
    first, again = await run(fixed), await run(fixed)

    assert first.count(Outcome.RECORDED) == 3 and first.exit_status == 0
    assert again.count(Outcome.RECORDED) == 0 and again.count(Outcome.ALREADY_RECORDED) == 3
    balance = sqlite_ledger.balance("C-FIX", "CNY", ["INV-FIX-1", "INV-FIX-2", "INV-FIX-3"])
    assert sorted((i.invoice_id, i.amount) for i in balance.invoices) == [
        ("INV-FIX-1", cny("8800.00")),
        ("INV-FIX-2", cny("880.00")),
        ("INV-FIX-3", cny("1200.00")),
    ]

    skipping = await run(bad, skip_bad_rows=True)  # the good rows of the old file: already there
    assert not skipping.held and skipping.count(Outcome.ALREADY_RECORDED) == 2


def test_a_dry_run_of_the_command_shows_each_bad_row_in_the_operators_words(tmp_path: Path) -> None:
    import subprocess
    import sys

    workbook = _workbook(tmp_path / "invoices.xlsx")
    finished = subprocess.run(
        [
            sys.executable,
            "starter.py",
            "import-invoices",
            str(workbook),
            "--dry-run",
            "--ledger-url",
            f"sqlite:///{tmp_path / 'none.db'}",
        ],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert finished.returncode == 2, finished.stderr
    problems = [line for line in finished.stderr.splitlines() if line.startswith("row ")]
    assert problems[0] == 'row 8, 金额 "8.800,00": use a dot for decimals, e.g. 8800.00'
    assert [line.split(",")[0] for line in problems] == ["row 8", "row 9", "row 10"]
    assert "skipped row(s) 1, 12 above the header or below the table" in finished.stderr
    assert not any("Value error" in line or "input_value" in line for line in finished.stderr.splitlines())
    assert "good rows, held back                 4" in finished.stdout
