"""The operator's logs, beside the tamper-evident audit trail.

- :mod:`gateway.logs.setup` — structlog configuration (level; console for a terminal, JSON for
  machines) and the ``logging:`` config section.
- :mod:`gateway.logs.rate_limit` — a token-bucket wrapper so that lines a peer can trigger
  (handshake failures, malformed PROXY headers) stay bounded.
- :mod:`gateway.logs.access_log` — the per-request access log in Envoy's format vocabulary.
"""
