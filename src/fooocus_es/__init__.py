"""fooocus-es: a FooocusAPI-compatible SDXL server on diffusers, built on an event-sourced task log."""

__version__ = "0.1.0"
