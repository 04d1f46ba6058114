"""`starter.py`'s commands, one module per area: customers, operator actions, invoice import, the daily sweep,
the partner's payables, previews of what customers read, and the demo."""
