"""The dlq audit trail names the user by the real uid, never by what the environment claims."""

from __future__ import annotations

import os
import pwd

from kafkapipe.dlq import audit


def test_user_comes_from_the_real_uid_not_the_environment(monkeypatch) -> None:
    for name in ("USER", "LOGNAME", "LNAME", "USERNAME"):
        monkeypatch.setenv(name, "mallory")
    assert audit.user() == pwd.getpwuid(os.getuid()).pw_name


def test_a_uid_without_a_passwd_entry_is_named_by_number(monkeypatch) -> None:
    def missing(uid: int) -> pwd.struct_passwd:
        raise KeyError(uid)

    monkeypatch.setattr(audit.pwd, "getpwuid", missing)
    monkeypatch.setenv("USER", "mallory")
    assert audit.user() == f"uid:{os.getuid()}"
