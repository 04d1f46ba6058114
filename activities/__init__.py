"""Activities: one module per outside system (ledger, mailer, Partner Center)."""
