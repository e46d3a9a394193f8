"""Interoperability harnesses that drive third-party TLCP implementations (BabaSSL NTLS)."""
