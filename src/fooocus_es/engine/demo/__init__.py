"""Tiny deterministic demo fixtures (torch imported inside the functions), written on first use."""
