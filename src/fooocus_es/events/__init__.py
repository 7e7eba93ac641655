"""The event-sourced core: event types, the append-only log, and the in-process bus."""
