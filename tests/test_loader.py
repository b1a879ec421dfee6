"""App targets (mirrors python/ferrule/loader.py)."""

import sys

import pytest

from conftest import APPS
from ferrule.loader import AppLoadError, load_app

sys.path.insert(0, str(APPS))


def test_targets():
    import routes
    assert load_app("routes") is routes.application
    assert load_app("routes:app") is routes.app
    assert callable(load_app("routes:factory('x')"))


@pytest.mark.parametrize("target", ["routes:app.attr", "routes:1+1", ":app", "routes:factory(x)"])
def test_rejected_targets(target):
    with pytest.raises(AppLoadError):
        load_app(target)
