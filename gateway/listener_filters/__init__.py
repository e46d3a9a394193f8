"""Listener filters: what runs on an accepted socket before a transport takes it (Envoy's listener filters)."""
