"""Read models built from the event log: the live in-memory view and the generate_record table."""
