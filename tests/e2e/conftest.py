import os
import random
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from hamrahi import Scripts, Stack  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def stack():
    s = Stack()
    yield s
    s.close()


@pytest.fixture
def script(stack):
    """Scripts sandbox numbers for one test and restores them afterwards."""
    s = Scripts(stack)
    yield s
    s.restore()


@pytest.fixture
def session_id():
    return "e2e-" + uuid.uuid4().hex[:16]


@pytest.fixture
def citizen(stack):
    """A citizen of our own with a unique phone, so calls of other tests never
    mix with this test's."""
    cid = "cit-" + uuid.uuid4().hex[:10]
    phone = "+1555%07d" % random.randrange(10**6, 10**7)
    stack.sql("INSERT INTO citizens (id, verified_phone) VALUES (%s, %s) RETURNING id",
              cid, phone)
    return cid, phone


def build_sh(*args):
    """Run ./build.sh against the test stack (same HAMRAHI_RUN_DIR)."""
    import subprocess
    subprocess.run([os.path.join(ROOT, "build.sh"), *args], check=True, timeout=120)
