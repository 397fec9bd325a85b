"""Audit: what the record proves and what it lacks (the hash chain, gaps, findings) and how
the accounts stand (``status``). Reads the store; never writes the log."""
