"""The test session's own homes (tests/session_home.py): what it tells as written
into the user's state, and what it does not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from session_home import SessionHome


@pytest.fixture
def user(tmp_path, monkeypatch) -> Path:
    """A user's GITOPS_HOME and PREFECT_HOME with some state in them; the
    variables SessionHome.enter() changes are put back after the test."""
    user = tmp_path / "user"
    (user / "gitops" / "git" / "mirror").mkdir(parents=True)
    (user / "gitops" / "valid-objects").write_bytes(b"x" * 16)
    (user / "prefect").mkdir()
    monkeypatch.setenv("GITOPS_HOME", str(user / "gitops"))
    monkeypatch.setenv("PREFECT_HOME", str(user / "prefect"))
    for variable in ("KUBECACHEDIR", "PREFECT_API_URL", "PREFECT_PROFILE"):
        monkeypatch.setenv(variable, "set by the user")
    return user


def test_a_session_works_in_a_folder_of_its_own_sharing_only_the_binaries(user):
    home = SessionHome.enter()
    try:
        assert Path(os.environ["GITOPS_HOME"]).parent == home.folder
        assert Path(os.environ["PREFECT_HOME"]).parent == home.folder
        assert Path(os.environ["KUBECACHEDIR"]).parent == home.folder
        assert "PREFECT_API_URL" not in os.environ and "PREFECT_PROFILE" not in os.environ
        (Path(os.environ["GITOPS_HOME"]) / "valid-objects").write_bytes(b"y" * 16)
        (Path(os.environ["GITOPS_HOME"]) / "bin" / "localcluster-0123").write_text("built")
        assert (user / "gitops" / "bin" / "localcluster-0123").read_text() == "built"
    finally:
        assert home.leave(passed=True) == []
    assert not home.folder.exists()


def test_a_session_that_wrote_into_the_users_homes_is_told_each_path(user):
    home = SessionHome.enter()
    (user / "gitops" / "git" / "mirror" / "HEAD").write_text("ref")
    (user / "gitops" / "valid-objects").write_bytes(b"x" * 32)
    (user / "prefect" / "profiles.toml").write_text("")
    written = home.leave(passed=True)
    mirror = user / "gitops" / "git" / "mirror"
    assert written == sorted(str(p) for p in (mirror, mirror / "HEAD", user / "gitops" / "valid-objects",
                                              user / "prefect" / "profiles.toml"))
    assert home.folder.exists()  # kept for a look


def test_the_users_running_clusters_may_change_their_own_files_but_no_new_cluster_appears(user):
    (user / "gitops" / "clusters" / "mine").mkdir(parents=True)
    (user / "gitops" / "clusters" / "mine" / "etcd.log").write_text("a")
    home = SessionHome.enter()
    (user / "gitops" / "clusters" / "mine" / "etcd.log").write_text("ab")
    (user / "gitops" / "clusters" / "pytest123").mkdir()
    assert home.leave(passed=True) == [str(user / "gitops" / "clusters" / "pytest123")]
