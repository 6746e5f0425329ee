"""Authorization: may this subject perform this action? (casbin behind one class).

The request is (subject, object, action), as in the book: the subject is the
common name of the client's verified certificate, the object is `*` (one log
per node), the actions are `produce` and `consume`. The model and the policy
are files; `Authorizer.reload()` re-reads them, and a file that does not load
is rejected as a whole: the policy in force stays in force.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import casbin
from casbin.persist.adapter import Adapter, load_policy_line

from pyproglog.auth.errors import SecurityError

_log = logging.getLogger("pyproglog.auth")

OBJECT = "*"
PRODUCE = "produce"
CONSUME = "consume"

# Shipped as config/example/{model.conf,policy.csv} and written by `proglog certs init`.
EXAMPLE_MODEL = """\
# Access control model (casbin): a request is (subject, object, action).
# The subject is the common name of the client's verified certificate, the
# object is "*", the action "produce" or "consume". Allowed when a policy line
# matches all three.
[request_definition]
r = sub, obj, act

[policy_definition]
p = sub, obj, act

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = r.sub == p.sub && r.obj == p.obj && r.act == p.act
"""

EXAMPLE_POLICY = """\
# root may produce, consume and administer the cluster (proglog servers remove);
# the nodes (their certificate's subject is "proglog server") may replicate;
# any other subject (such as nobody) may do nothing.
p, root, *, produce
p, root, *, consume
p, root, *, admin
p, proglog server, *, replicate
"""

# Decisions remembered per policy; subjects come only from certificates our CA
# signed, so this is bounded in practice, and the cap keeps it bounded anyway.
_CACHE_LIMIT = 4096


class ACLError(SecurityError):
    pass


class _LinesAdapter(Adapter):  # type: ignore[misc]
    """Policy lines already read: the file is read once, then validated and loaded."""

    def __init__(self, lines: list[str]) -> None:
        self._lines = lines

    def load_policy(self, model: casbin.Model) -> None:
        for line in self._lines:
            load_policy_line(line, model)


@dataclass(slots=True)
class _Policy:
    enforcer: casbin.Enforcer
    generation: int
    decisions: dict[tuple[str, str, str], bool] = field(default_factory=dict)


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ACLError(f"cannot read ACL {what} file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ACLError(f"ACL {what} file {path} is not UTF-8 text: {exc.reason}") from None


def _load(model_file: Path, policy_file: Path) -> casbin.Enforcer:
    model_text = _read(model_file, "model")
    lines = [ln.strip() for ln in _read(policy_file, "policy").splitlines()]
    try:
        model = casbin.Model()
        model.load_model_from_text(model_text)
        known = {ptype for sec in ("p", "g") for ptype in model.model.get(sec, {})}
    except Exception as exc:  # casbin reports a bad model with assorted exceptions
        raise ACLError(f"invalid ACL model {model_file}: {exc!r}") from None
    if "p" not in known:
        raise ACLError(f"invalid ACL model {model_file}: no [policy_definition] p")
    for n, line in enumerate(lines, 1):
        if not line or line.startswith("#"):
            continue
        # casbin silently skips a line of an unknown type: a typo would drop a rule.
        ptype = line.split(",", 1)[0].strip()
        if ptype not in known:
            raise ACLError(f"{policy_file}:{n}: unknown policy type {ptype!r} in {line!r}")
    try:
        enforcer = casbin.Enforcer(model, _LinesAdapter(lines))
        # The model must answer our request shape, (subject, object, action).
        enforcer.enforce("", OBJECT, PRODUCE)
    except Exception as exc:
        raise ACLError(f"invalid ACL (model {model_file}, policy {policy_file}): {exc}") from None
    return enforcer


class Authorizer:
    """Decides (subject, object, action) from a casbin model and policy file."""

    def __init__(self, model_file: Path, policy_file: Path) -> None:
        self.model_file = model_file
        self.policy_file = policy_file
        self._policy = _Policy(_load(model_file, policy_file), generation=0)
        self._reload_lock = threading.Lock()

    @property
    def generation(self) -> int:
        """Changes whenever a new policy takes effect (long calls re-check on a change)."""
        return self._policy.generation

    def allowed(self, subject: str, action: str, obj: str = OBJECT) -> bool:
        # One snapshot per decision: a concurrent reload swaps the whole policy.
        policy = self._policy
        key = (subject, obj, action)
        decision = policy.decisions.get(key)
        if decision is None:
            decision = bool(policy.enforcer.enforce(subject, obj, action))
            if len(policy.decisions) >= _CACHE_LIMIT:
                policy.decisions.clear()
            policy.decisions[key] = decision
        return decision

    def reload(self) -> None:
        """Re-read the model and policy; on ACLError the policy in force stays."""
        with self._reload_lock:
            enforcer = _load(self.model_file, self.policy_file)
            self._policy = _Policy(enforcer, self._policy.generation + 1)
        _log.info("ACL reloaded from %s", self.policy_file)
