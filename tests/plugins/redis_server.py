"""Redis fixtures (owned by the budget/embedded-redis work)."""
