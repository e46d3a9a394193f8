"""Access control on the client certificate: allow/deny by subject, SAN, issuer, fingerprint (RBAC)."""

from __future__ import annotations

import re

from gateway.config import AccessControl, PrincipalMatch
from gateway.identity import PeerIdentity


def principal_matches(rule: PrincipalMatch, identity: PeerIdentity) -> bool:
    """All given fields must match; regexes are searched, fingerprints compared exactly (SM3 or SHA-256)."""
    peer = identity.peer
    if rule.authenticated is not None and rule.authenticated != identity.authenticated:
        return False
    needs_cert = any(v is not None for v in (rule.subject, rule.san, rule.issuer, rule.fingerprint))
    if not needs_cert:
        return True
    if peer is None:
        return False
    if rule.subject is not None and not re.search(rule.subject, peer.subject):
        return False
    if rule.issuer is not None and not re.search(rule.issuer, peer.issuer):
        return False
    if rule.san is not None and not any(re.fullmatch(rule.san, san) for san in peer.sans):
        return False
    return rule.fingerprint is None or rule.fingerprint in peer.fingerprints()


def is_allowed(access: AccessControl | None, identity: PeerIdentity) -> bool:
    if access is None:
        return True
    if any(principal_matches(rule, identity) for rule in access.deny):
        return False
    return not access.allow or any(principal_matches(rule, identity) for rule in access.allow)
