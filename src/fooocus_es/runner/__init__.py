"""The runner: one worker thread per device consuming generate/stop/skip/cancel commands."""
