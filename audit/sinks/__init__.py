"""Audit sinks: the durable file sink and the follower sinks (stdout, syslog) that replay from it."""
