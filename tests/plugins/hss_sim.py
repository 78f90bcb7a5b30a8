"""HSS simulator fixtures (owned by the simulator work)."""
