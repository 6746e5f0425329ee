"""The casbin authorizer: decisions, and reloads that reject bad files as a whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyproglog.auth.acl import EXAMPLE_MODEL, EXAMPLE_POLICY, ACLError, Authorizer


@pytest.fixture
def acl_files(tmp_path: Path) -> tuple[Path, Path]:
    model, policy = tmp_path / "model.conf", tmp_path / "policy.csv"
    model.write_text(EXAMPLE_MODEL)
    policy.write_text(EXAMPLE_POLICY)
    return model, policy


def test_example_policy(acl_files: tuple[Path, Path]) -> None:
    acl = Authorizer(*acl_files)
    assert acl.allowed("root", "produce")
    assert acl.allowed("root", "consume")
    assert acl.allowed("root", "admin")  # proglog servers remove
    assert not acl.allowed("root", "replicate")  # only nodes replicate
    assert acl.allowed("proglog server", "replicate")
    assert not acl.allowed("proglog server", "produce")
    assert not acl.allowed("root", "produce", obj="other")
    assert not acl.allowed("nobody", "produce")
    assert not acl.allowed("nobody", "consume")
    assert not acl.allowed("", "consume")


def test_reload_swaps_the_policy(acl_files: tuple[Path, Path]) -> None:
    model, policy = acl_files
    acl = Authorizer(model, policy)
    assert acl.allowed("root", "produce")  # decided, and remembered
    generation = acl.generation
    policy.write_text("p, nobody, *, consume\n")
    acl.reload()
    assert acl.generation == generation + 1
    assert not acl.allowed("root", "produce")
    assert acl.allowed("nobody", "consume")


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"p, root, *, produce\np, root\n", "invalid policy size"),
        (b"p, root, *, produce, extra\n", "invalid policy size"),
        (b"P, root, *, produce\n", r"policy.csv:1: unknown policy type 'P'"),
        (b"# comment\n\njust words\n", r"policy.csv:3: unknown policy type 'just words'"),
        (b"\xff\xfe p", "is not UTF-8 text"),
        (None, "cannot read ACL policy file"),
    ],
)
def test_a_bad_policy_is_rejected_and_the_old_stays(
    acl_files: tuple[Path, Path], content: bytes | None, error: str
) -> None:
    model, policy = acl_files
    acl = Authorizer(model, policy)
    generation = acl.generation
    if content is None:
        policy.unlink()
    else:
        policy.write_bytes(content)
    with pytest.raises(ACLError, match=error):
        acl.reload()
    assert acl.generation == generation
    assert acl.allowed("root", "produce")
    assert not acl.allowed("nobody", "produce")


@pytest.mark.parametrize(
    ("model_text", "error"),
    [
        ("[request_definition]\nr = sub\n", "no \\[policy_definition\\] p"),
        ("not a model at all", "invalid ACL model"),
        (
            # Requests of another shape than (subject, object, action).
            EXAMPLE_MODEL.replace("r = sub, obj, act", "r = sub, act").replace(
                "r.obj == p.obj && ", ""
            ),
            "invalid ACL",
        ),
    ],
)
def test_a_bad_model_is_rejected(acl_files: tuple[Path, Path], model_text: str, error: str) -> None:
    model, policy = acl_files
    acl = Authorizer(model, policy)
    model.write_text(model_text)
    with pytest.raises(ACLError, match=error):
        acl.reload()
    with pytest.raises(ACLError, match=error):
        Authorizer(model, policy)
    assert acl.allowed("root", "consume")


def test_an_empty_policy_denies_everything(acl_files: tuple[Path, Path]) -> None:
    model, policy = acl_files
    policy.write_text("")
    acl = Authorizer(model, policy)
    assert not acl.allowed("root", "produce")
