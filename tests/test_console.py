"""The words remarks are made of."""

from __future__ import annotations

import pytest

from graphbuild import console


@pytest.mark.parametrize(
    ("count", "word", "many", "said"),
    [(0, "image", None, "0 images"), (1, "image", None, "1 image"), (2, "wave", None, "2 waves"),
     (1, "repository", None, "1 repository"), (3, "repository", None, "3 repositories"),
     (2, "index", "indexes", "2 indexes")],
)  # fmt: skip
def test_plural_agrees_a_count_with_its_noun(count, word, many, said):
    assert console.plural(count, word, many) == said
