"""Errors of the security material: certificates, TLS files and the ACL."""

from __future__ import annotations


class SecurityError(Exception):
    """Security material that cannot be used; the message says which file and why.

    Raised at start-up (the node does not start) and by a reload (the material
    in force stays in force).
    """
