"""The contract's search attributes (../shared/CONTRACT.md): what every run publishes so operators and the
daily sweep can find it. The one set of keys, for the workflows, the sweep and the servers' registration."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.common import SearchAttributeKey

CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
BILLING_STAGE = SearchAttributeKey.for_keyword("BillingStage")
AMOUNT_DUE = SearchAttributeKey.for_float("AmountDue")  # display only: the books stay Decimal
OLDEST_DUE_DATE = SearchAttributeKey.for_datetime("OldestDueDate")
ESCALATION_REF = SearchAttributeKey.for_keyword("EscalationRef")

ALL = (CUSTOMER_ID, BILLING_STAGE, AMOUNT_DUE, OLDEST_DUE_DATE, ESCALATION_REF)
BY_NAME = {key.name: key for key in ALL}


def registration() -> dict[str, str]:
    """Each key's type as `temporal operator search-attribute create --type` names it (Keyword, Double, ...)."""
    return {
        key.name: IndexedValueType.Name(key.indexed_value_type).removeprefix("INDEXED_VALUE_TYPE_").title()
        for key in ALL
    }
