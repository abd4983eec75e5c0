"""pyiscsi control plane: PDUs, negotiation, CHAP, login, discovery, database, iscsid."""

__version__ = "0.1.0"
