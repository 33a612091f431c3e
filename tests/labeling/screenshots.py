"""`python -m tests.labeling.screenshots [pytest args]`: rewrite docs/img/screens/*.png (each
role's main page from a seeded demo; tests/labeling/test_screenshots_browser.py) against the
real services, as scripts/test runs the tests (start them with scripts/services first)."""

from __future__ import annotations

import os
import sys

import pytest


def main(argv: list[str]) -> int:
    os.environ["SAVE_SCREENSHOTS"] = "1"
    target = "tests/labeling/test_screenshots_browser.py"
    return pytest.main(["-p", "no:cacheprovider", "-q", target, *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
