"""Trust anchors: the CA certificates a peer's chain must end at, loaded from a PEM bundle.

The same store answers a TLCP server's CertificateRequest ``certificate_authorities`` list
(the DER subject names of the anchors).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from certs.certificate import Certificate, load_pem_certificates


class TrustStore:
    """An ordered, duplicate-free set of trust anchor certificates."""

    def __init__(self, anchors: Iterable[Certificate] = ()) -> None:
        unique: dict[bytes, Certificate] = {}
        for anchor in anchors:
            unique.setdefault(anchor.der, anchor)
        self.anchors: list[Certificate] = list(unique.values())

    @classmethod
    def from_certificates(cls, certificates: Iterable[Certificate]) -> TrustStore:
        return cls(certificates)

    @classmethod
    def from_pem(cls, data: bytes) -> TrustStore:
        """Every certificate of a PEM bundle becomes an anchor."""
        return cls(load_pem_certificates(data))

    @classmethod
    def from_pem_file(cls, path: str | Path) -> TrustStore:
        return cls.from_pem(Path(path).read_bytes())

    def __len__(self) -> int:
        return len(self.anchors)

    def __contains__(self, certificate: object) -> bool:
        return isinstance(certificate, Certificate) and any(a.der == certificate.der for a in self.anchors)

    def issuers_of(self, certificate: Certificate) -> list[Certificate]:
        """Anchors whose subject (and key identifier, when both carry one) names ``certificate``'s issuer."""
        return [anchor for anchor in self.anchors if anchor.issued(certificate)]

    def ca_names_der(self) -> list[bytes]:
        """DER-encoded subject Names of the anchors, for a CertificateRequest's CA list."""
        names: list[bytes] = []
        for anchor in self.anchors:
            if anchor.subject_der not in names:
                names.append(anchor.subject_der)
        return names
