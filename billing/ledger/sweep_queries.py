"""The daily sweep's reads of the books: the customers owing money, whose invoices these are, who owes nothing."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine, Row, select

from billing import refusals
from billing.ledger.rows import _invoice_balance
from billing.ledger.schema import customers, invoices, unapplied_credits
from billing.ledger_messages import AccountBalance, OwedAccount
from billing.models import DEFAULT_TIME_ZONE, CustomerAccount
from billing.money import Money


class SweepQueries:
    """`LedgerStore`'s reads for the daily sweep."""

    _engine: Engine

    def owed_accounts(self, after_customer_id: str | None, limit: int) -> list[OwedAccount]:
        """The next `limit` customers (by customer id, after `after_customer_id`) with money owed on an invoice,
        each with their open invoices. Reads only the rows of the owed-invoices index, so a page costs the same
        whether the books hold a thousand customers or a million."""
        if limit < 1:
            raise ValueError("a page holds at least one customer")
        owed = invoices.c.outstanding > 0
        page = select(invoices.c.customer_id).where(owed).group_by(invoices.c.customer_id)
        if after_customer_id is not None:
            page = page.where(invoices.c.customer_id > after_customer_id)
        page = page.order_by(invoices.c.customer_id).limit(limit)
        with self._engine.connect() as connection:
            customer_ids = list(connection.execute(page).scalars())
            if not customer_ids:
                return []
            accounts = {
                row.customer_id: row
                for row in connection.execute(select(customers).where(customers.c.customer_id.in_(customer_ids)))
            }
            open_rows: dict[str, list[Row[Any]]] = {customer_id: [] for customer_id in customer_ids}
            for row in connection.execute(
                select(invoices)
                .where(owed, invoices.c.customer_id.in_(customer_ids))
                .order_by(invoices.c.customer_id, invoices.c.due_at, invoices.c.issued_on, invoices.c.invoice_id)
            ):
                open_rows[row.customer_id].append(row)
            credits: dict[str, Decimal] = {}
            for customer_id, remaining in connection.execute(
                select(unapplied_credits.c.customer_id, unapplied_credits.c.remaining).where(
                    unapplied_credits.c.customer_id.in_(customer_ids)
                )
            ):
                credits[customer_id] = credits.get(customer_id, Decimal(0)) + remaining
        return [
            _owed_account(accounts[customer_id], open_rows[customer_id], credits.get(customer_id, Decimal(0)))
            for customer_id in customer_ids
        ]

    def invoice_owners(self, invoice_ids: Iterable[str]) -> dict[str, str]:
        """Of `invoice_ids`, those on the books, each with the customer it is booked for."""
        wanted = set(invoice_ids)
        if not wanted:
            return {}
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(invoices.c.invoice_id, invoices.c.customer_id).where(invoices.c.invoice_id.in_(wanted))
            ).all()
        return {row.invoice_id: row.customer_id for row in rows}

    def currencies_of_customers_owing_nothing(self, customer_ids: Iterable[str]) -> dict[str, str]:
        """Of `customer_ids`, those on the books who owe nothing at all, each with its account's currency."""
        wanted = set(customer_ids)
        if not wanted:
            return {}
        owing = select(invoices.c.customer_id).where(invoices.c.outstanding > 0, invoices.c.customer_id.in_(wanted))
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(customers.c.customer_id, customers.c.currency).where(
                    customers.c.customer_id.in_(wanted), customers.c.customer_id.not_in(owing)
                )
            ).all()
        return {row.customer_id: row.currency for row in rows}


def _owed_account(account: Row[Any], rows: list[Row[Any]], credit: Decimal) -> OwedAccount:
    currency = account.currency
    balance = AccountBalance(
        customer_id=account.customer_id,
        currency=currency,
        invoices=[_invoice_balance(row) for row in rows],
        unapplied_credit=Money(amount=credit, currency=currency),
        amount_due=Money(amount=sum((row.outstanding for row in rows), Decimal(0)), currency=currency),
    )
    try:
        details = CustomerAccount(
            customer_id=account.customer_id,
            name=account.name or "",
            email=account.email or "",
            locale=account.locale or "zh-CN",
            time_zone=account.time_zone or DEFAULT_TIME_ZONE,
            tenant_id=account.tenant_id or "",
        )
    except ValidationError as error:
        problems = refusals.reason(error)
        return OwedAccount(customer_id=account.customer_id, account=None, account_problem=problems, balance=balance)
    return OwedAccount(customer_id=account.customer_id, account=details, balance=balance)
