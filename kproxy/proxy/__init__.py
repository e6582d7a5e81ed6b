"""Forwarding to the API server: header hygiene, impersonation, streams, tunnels."""
