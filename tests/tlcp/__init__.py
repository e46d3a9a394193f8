"""Tests of the TLCP engine and its asyncio adapter."""
