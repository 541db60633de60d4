"""One mask_url: the controller (tsubmit/optuna/) and the head (the optuna_store
role's store_urls.py) mask a storage URL's password with the same code."""

import sys
from pathlib import Path

import pytest

from tsubmit.optuna import storages

FILES = Path(__file__).resolve().parents[2] / "roles" / "optuna_store" / "files"
sys.path.insert(0, str(FILES))

import store_urls  # noqa: E402 - the node-side module, from the role's files

CASES = [
    ("postgresql://u:secret@db.example:5432/optuna", "postgresql://u:***@db.example:5432/optuna"),
    # a password holding @: userinfo runs to the last @ before the path
    ("postgresql://u:p@ss@host/db", "postgresql://u:***@host/db"),
    ("mysql+pymysql://user:p%40ss@host/db?charset=utf8", "mysql+pymysql://user:***@host/db?charset=utf8"),
    ("postgresql://u:a:b@host/db", "postgresql://u:***@host/db"),
    ("postgresql://only-user@host/db", "postgresql://only-user@host/db"),
    ("postgresql://host/db", "postgresql://host/db"),
    ("postgresql://host/db?user=a@b", "postgresql://host/db?user=a@b"),
    ("not a url", "not a url"),
    ("", ""),
]


@pytest.mark.parametrize(("url", "masked"), CASES)
def test_controller_and_head_mask_a_url_the_same_way(url, masked):
    assert store_urls.mask_url(url) == masked
    assert storages.mask_url(url) == masked


def test_the_controller_uses_the_heads_file():
    assert Path(storages._node_urls().__file__) == FILES / "store_urls.py"


def test_scrub_removes_the_password_raw_and_percent_decoded():
    url = "postgresql://u:p%40ss@host/db"
    text = f"cannot connect to {url}: password p%40ss (p@ss) refused"
    scrubbed = store_urls.scrub(text, url)
    assert "p%40ss" not in scrubbed and "p@ss" not in scrubbed
    assert scrubbed == "cannot connect to postgresql://u:***@host/db: password *** (***) refused"


def test_scrub_with_an_at_in_the_password_keeps_no_piece_of_it():
    url = "postgresql://u:p@ss@host/db"
    scrubbed = store_urls.scrub(f"{url} failed", url)
    assert scrubbed == "postgresql://u:***@host/db failed"
    assert "ss@" not in scrubbed


def test_scrub_without_a_url_changes_nothing():
    assert store_urls.scrub("plain text", None) == "plain text"
