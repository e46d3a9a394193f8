"""smgate audit: structured events, HMAC-SM3 chain, SM2-signed checkpoints, sinks, verification, export.

The gateway builds one :class:`AuditLog` from :class:`AuditConfig` (``audit:`` in its YAML), awaits
``start()``, calls ``emit(event_type, **fields)`` (or ``bind(...).emit``) on the data path, and awaits
``aclose()`` at shutdown. ``queue_depth()`` and ``metrics()`` feed ``/metrics``.
"""

from audit.config import AuditConfig, load_audit_config
from audit.events import EventType, certificate_fields, tls_fields
from audit.ids import new_connection_id, new_request_id
from audit.keys import AuditKeyError
from audit.log import AuditEmitter, AuditLog, AuditMetrics, BoundAudit, NullAuditLog

__all__ = [
    "AuditConfig",
    "AuditEmitter",
    "AuditKeyError",
    "AuditLog",
    "AuditMetrics",
    "BoundAudit",
    "EventType",
    "NullAuditLog",
    "certificate_fields",
    "load_audit_config",
    "new_connection_id",
    "new_request_id",
    "tls_fields",
]
