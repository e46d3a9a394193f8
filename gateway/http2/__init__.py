"""HTTP/2 for the gateway: sans-I/O endpoints on ``h2`` with flow control and flood defences."""
