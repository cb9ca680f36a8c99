"""The DVC versions whose internals pairtune relies on, and a one-line refusal of any other.

`pairtune.share` reads DVC's run-cache (`repo.stage_cache`, its `runs/` layout, `get_used_objs`,
`repo.cache.local`): no public API offers "the objects of every run record". Those internals change between
DVC releases without notice, so the code runs only on the minor release it was tested with (the two-clone
sharing tests in tests/test_sharing.py are the canary when the pin moves). Everything else uses DVC's
command line or `dvc.api`.
"""

from __future__ import annotations

from pairtune.errors import PairtuneError

TESTED = "3.67"  # the minor release the sharing tests ran on
PIN = "pip install 'dvc[s3]>=3.67.1,<3.68'"  # = pyproject.toml's requirement


def require_tested(what: str, version: str | None = None) -> None:
    """Refuse, in one line, to run `what` on a DVC other than the tested minor release."""
    if version is None:
        import dvc

        version = dvc.__version__
    if version.split(".")[:2] != TESTED.split("."):
        raise PairtuneError(f"{what} relies on DVC {TESTED}.x internals and this is DVC {version}: install the "
                            f"tested one ({PIN}, as requirements.lock and `make install` do)")
