"""How long the workflows wait for each outside system and how they retry it: one set, for every workflow.

The books must be reachable for anything to proceed, so the ledger is retried until it answers. Mail and
Partner Center are retried for a while; then the step is marked failed and tried again later, so an outage of
either never stops payments from being taken in.
"""

from datetime import timedelta

from temporalio.common import RetryPolicy

SETTINGS_TIMEOUT = timedelta(seconds=10)
LEDGER_TIMEOUT = timedelta(seconds=30)
LEDGER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=1),
    non_retryable_error_types=["LedgerRejection"],
)
OUTSIDE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(minutes=2),
    non_retryable_error_types=[
        "MailRejected",
        "MailerNotConfigured",
        "InvalidRecipient",
        "InvalidNotice",
        "PartnerCenterRejected",
    ],
)
OUTSIDE_GIVE_UP_AFTER = timedelta(minutes=30)
MAIL_TIMEOUT = timedelta(seconds=60)
# The client itself waits out 429s (Retry-After up to a minute) and 5xx a few times within one attempt.
PARTNER_CENTER_CALL_TIMEOUT = timedelta(minutes=5)
# Partner Center and mail activities beat every 2 s (activities/heartbeat.py): a worker killed mid-call is
# noticed this soon, and another worker retries then instead of after the start-to-close timeout.
HEARTBEAT_TIMEOUT = timedelta(seconds=10)
# The ledger and the mailer run in the lifecycle's own worker (local activities). A retry due sooner than this
# waits in the worker; a later one waits on a workflow timer, so an outage of the books or the mail server holds
# no workflow task open (https://docs.temporal.io/local-activity).
LOCAL_RETRY_THRESHOLD = timedelta(seconds=10)
