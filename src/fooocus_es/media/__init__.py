"""Images in and out: request image decoding and limits, safe URL fetching, content-addressed
inputs/, output encoding with generation metadata, and path checks for the static routes.

Nothing here imports torch; everything here blocks, so callers run it in worker threads.
"""
