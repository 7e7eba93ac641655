"""Outbound connections on a client's behalf (image URLs, webhooks): the shared SSRF guard."""
