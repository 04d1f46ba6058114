"""The command line for finance staff and scripts: issue an invoice, report a payment, show a customer's
billing status, take an operator action (the contract's updates), import invoices, run the daily sweep, or drive
demo customers through the ladder. The commands live in `cli/`, one module per area.

Run `python starter.py --help` (or `python starter.py COMMAND --help`) for examples.
"""

import os
import sys

from cli.main import main

# What a Unix tool ends with when the reader of its output went away (`starter.py status | head`): 128 + SIGPIPE.
CUT_SHORT = 141

if __name__ == "__main__":
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader has all it wanted: no traceback. Later writes (the flush below) go nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = CUT_SHORT
    # Skip interpreter finalization: the Temporal client's Rust threads can abort it with SIGABRT after the
    # command succeeded ("PyGILState_Release ... finalizing", temporalio/sdk-python#300), and scripts act on
    # the exit status.
    sys.stderr.flush()
    os._exit(status)
