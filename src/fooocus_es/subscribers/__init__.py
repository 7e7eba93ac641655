"""Consumers of published events: waiters, SSE streams, webhooks (persistence is in the log's transaction)."""
