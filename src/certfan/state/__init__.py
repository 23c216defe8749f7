"""State on local disk: the versioned store, deploy state, history, the run lock; atomic writes."""
