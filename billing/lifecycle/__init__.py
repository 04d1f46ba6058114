"""One customer's billing lifecycle as pure code: its state, the steps it takes, when the next one is due, how
each fact and outcome changes the state, the notice it sends, what an operator may do, and its status.

`workflows/customer_billing.py` runs these against the outside world; the forecast and the tests run the
very same functions without Temporal.
"""
