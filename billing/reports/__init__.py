"""Reports finance reads off the ledger (the books are the truth): receivables aging and collections activity."""
