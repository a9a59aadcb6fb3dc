"""The lab: its dir, state, lock, up/down/reconcile orchestration and faults; picks the provider once."""
