"""The command line for finance staff and scripts: issue an invoice, report a payment, show a customer's
billing status, take an operator action (the contract's updates), import invoices, run the daily sweep, or drive
demo customers through the ladder. The commands live in `cli/`, one module per area.

Run `python starter.py --help` (or `python starter.py COMMAND --help`) for examples.
"""

import os
import sys

from cli.main import main

if __name__ == "__main__":
    status = main()
    # Skip interpreter finalization: the Temporal client's Rust threads can abort it with SIGABRT after the
    # command succeeded ("PyGILState_Release ... finalizing", temporalio/sdk-python#300), and scripts act on
    # the exit status.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
