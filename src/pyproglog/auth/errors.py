"""Errors of the security material: certificates, TLS files and the ACL."""

from __future__ import annotations


class SecurityError(Exception):
    """Security material that cannot be used; the message says which file and why.

    Raised at start-up (the node does not start) and by a reload (the material
    in force stays in force).
    """


class PermissionDenied(Exception):
    """The authenticated subject may not perform the action."""

    def __init__(self, subject: str, action: str, obj: str) -> None:
        super().__init__(f"{subject} not permitted to {action} to {obj}")
        self.subject, self.action, self.object = subject, action, obj


class Unauthenticated(Exception):
    """The ACL is on and the caller presented no verified client certificate."""


NO_CERTIFICATE = "no verified client certificate"
