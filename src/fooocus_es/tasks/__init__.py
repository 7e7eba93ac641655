"""The task domain without I/O: one status type with its transition rule, and the typed commands."""
