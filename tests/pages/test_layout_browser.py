"""The State design system's layout in a real Chromium (tests/pages/browser_layout.py), in a
child pytest as test_pages_browser.py explains; a file of its own so that `make test` can run
it in another shard than the flows."""
import pytest

from tests.pages.test_pages_browser import run_child_pytest


# issue 21: the State design system's layout on every kind of page (tests/pages/browser_layout.py)
@pytest.mark.timeout(900)
def test_the_dsfr_layout_in_a_real_browser():
    run_child_pytest("tests/pages/browser_layout.py")
