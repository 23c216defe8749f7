"""certfan: ACME DNS-01 issuance and safe SSH fan-out of certificates to nginx edge nodes."""

__version__ = "0.1.0"
