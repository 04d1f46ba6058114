"""The fast tier (decision core, transitions, models, policy) stays fast: it loads no worker, no SQLAlchemy and
no Temporal SDK, so it runs in well under a second without a server."""

from __future__ import annotations

import subprocess
import sys

from tests.devserver_fixtures import REPO

FAST_TIER = [
    "tests.test_business_days",
    "tests.test_collections",
    "tests.test_partner_payable_core",
    "tests.test_policy_and_models",
    "tests.test_texts_agree_with_engine",
]
HEAVY = ["sqlalchemy", "temporalio", "worker", "activities", "httpx"]


def test_the_fast_tier_imports_no_worker_no_sqlalchemy_and_no_temporal() -> None:
    probe = (
        f"import sys\nfor name in {FAST_TIER!r}: __import__(name)\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    finished = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert finished.stdout.strip() == "", f"the fast tier loads {finished.stdout.strip()}"
