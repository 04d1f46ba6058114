"""`DailySweep`: once a day, make the running lifecycles agree with the ledger, which is the truth.

It pages through the customers who owe something (starting a lifecycle where none is open and telling the
out-of-step ones), then through the running lifecycles that believe money is owed (telling those the books
call settled). It continues-as-new every `pages_per_run` pages, so a hundred thousand customers never come
near Temporal's history limits, and its result says what it did.
"""

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from billing import metrics
    from billing.partner_center_messages import PartnerInvoicesTracked, TrackPartnerInvoicesRequest
    from billing.sweep import (
        OwedCustomersPage,
        PageOutcome,
        PartnerInvoicesOutcome,
        RunningLifecyclesPage,
        SweepInput,
        SweepReport,
    )

# Ledger or Temporal unreachable: keep trying; the schedule's run timeout ends a sweep stuck for a day.
PAGE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=2))
PAGE_TIMEOUT = timedelta(minutes=10)
PAGE_HEARTBEAT = timedelta(minutes=2)
# Partner Center down must not hold up the customers: try for a quarter of an hour, then report it and go on
# (tomorrow's sweep, or `starter.py sweep run`, tries again).
PARTNER_CENTER_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=1))
PARTNER_CENTER_GIVE_UP_AFTER = timedelta(minutes=15)


@workflow.defn(name="DailySweep")
class DailySweep:
    @workflow.init
    def __init__(self, start: SweepInput) -> None:
        self._report = start.report or SweepReport(started_at=workflow.now())

    @workflow.query(
        name="status",
        description="What the sweep has done so far: customers owing, lifecycles started, in step and told the "
        "ledger changed, running lifecycles checked, 21Vianet invoices tracked, problems.",
    )
    def status(self) -> SweepReport:
        return self._report

    @workflow.run
    async def run(self, start: SweepInput) -> SweepReport:
        phase, after, token = start.phase, start.after_customer_id, start.page_token
        pages = 0
        while phase != "done":
            if pages >= start.pages_per_run or workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(
                    start.model_copy(
                        update={
                            "phase": phase,
                            "after_customer_id": after,
                            "page_token": token,
                            "report": self._report.model_copy(update={"runs": self._report.runs + 1}),
                        }
                    )
                )
            self._show(phase)
            if phase == "partner_invoices":
                self._report = self._report.model_copy(
                    update={"partner_invoices": await self._track_partner_invoices()}
                )
                phase = "owed_customers"
                continue
            if phase == "owed_customers":
                outcome = await self._page(
                    "reconcile_owed_customers",
                    OwedCustomersPage(
                        sweep_id=workflow.info().workflow_id,
                        after_customer_id=after,
                        page_size=start.page_size,
                        checked_at=workflow.now(),
                    ),
                    f"Reconcile owed customers after {after or 'the first'}",
                )
                self._report = self._report.add(outcome, owed=True)
                after = outcome.next_after_customer_id
                if outcome.last_page:
                    # A metric is no command (and the meter records nothing while replaying): no patch needed.
                    metrics.publish_owing(workflow.metric_meter(), self._report.owing, workflow.now())
                    phase = "running_lifecycles"
            else:
                outcome = await self._page(
                    "reconcile_running_lifecycles",
                    RunningLifecyclesPage(
                        sweep_id=workflow.info().workflow_id,
                        page_token=token,
                        page_size=start.page_size,
                        checked_at=workflow.now(),
                    ),
                    "Check running lifecycles the ledger calls settled",
                )
                self._report = self._report.add(outcome, owed=False)
                token = outcome.next_page_token
                phase = "done" if outcome.last_page else phase
            pages += 1
        self._report = self._report.model_copy(update={"phase": "done", "finished_at": workflow.now()})
        self._show("done")
        workflow.logger.info(
            "daily sweep complete",
            extra={
                "customers_owing": self._report.customers_owing,
                "lifecycles_started": self._report.lifecycles_started,
                "lifecycles_told": self._report.lifecycles_told,
                "failures": self._report.failures,
            },
        )
        return self._report

    async def _page(
        self, activity: str, request: OwedCustomersPage | RunningLifecyclesPage, summary: str
    ) -> PageOutcome:
        return await workflow.execute_activity(
            activity,
            request,
            start_to_close_timeout=PAGE_TIMEOUT,
            heartbeat_timeout=PAGE_HEARTBEAT,
            retry_policy=PAGE_RETRY,
            result_type=PageOutcome,
            summary=summary,
        )

    async def _track_partner_invoices(self) -> PartnerInvoicesOutcome:
        """A `PartnerPayable` for every 21Vianet invoice to the partner that still needs paying."""
        try:
            tracked = await workflow.execute_activity(
                "track_partner_invoices",
                TrackPartnerInvoicesRequest(correlation_id=workflow.info().workflow_id, checked_at=workflow.now()),
                start_to_close_timeout=PAGE_TIMEOUT,
                schedule_to_close_timeout=PARTNER_CENTER_GIVE_UP_AFTER,
                retry_policy=PARTNER_CENTER_RETRY,
                result_type=PartnerInvoicesTracked,
                summary="Track 21Vianet's invoices to the partner",
            )
        except ActivityError as error:
            cause = error.cause or error
            workflow.logger.warning("partner invoices not tracked", extra={"reason": str(cause)})
            return PartnerInvoicesOutcome(problem=f"Partner Center's invoices could not be read: {cause}")
        return PartnerInvoicesOutcome(
            seen=tracked.seen,
            started=len(tracked.started),
            already_tracked=len(tracked.already_tracked),
            settled=len(tracked.settled),
            not_bills=len(tracked.not_bills),
            told_paid=len(tracked.told_paid),
            told_voided=len(tracked.told_voided),
            unreadable=tracked.unreadable,
        )

    def _show(self, phase: str) -> None:
        if self._report.phase != phase:
            self._report = self._report.model_copy(update={"phase": phase})
        workflow.set_current_details(self._report.details())
