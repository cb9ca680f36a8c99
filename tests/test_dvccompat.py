"""pairtune.share reads DVC internals: it refuses an untested DVC in one line instead of misbehaving."""

from __future__ import annotations

import dvc
import pytest

from pairtune import dvccompat, share
from pairtune.errors import PairtuneError


def test_the_installed_dvc_is_the_tested_one():
    dvccompat.require_tested("anything")  # the lock installs it: a bump of the pin must rerun the sharing tests


@pytest.mark.parametrize("version", ["3.68.0", "3.66.2", "4.0.0"])
def test_an_untested_dvc_is_refused_in_one_line(version):
    with pytest.raises(PairtuneError) as err:
        dvccompat.require_tested("pairtune.share", version)
    assert "\n" not in str(err.value) and f"this is DVC {version}" in str(err.value)
    assert dvccompat.PIN in str(err.value)


def test_share_stops_before_touching_the_repository(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dvc, "__version__", "3.99.0")
    assert share.main(["--repo", str(tmp_path / "not-a-repo")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: pairtune.share (pushing every run's outputs) relies on")


def test_the_pin_is_pyproject_s():
    from conftest import ROOT

    spec = dvccompat.PIN.split("'")[1]
    assert f'"{spec}"' in (ROOT / "pyproject.toml").read_text()
