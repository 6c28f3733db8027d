"""Rewriting a landing file without an erased person's records."""

import pytest

from cdp_assets.privacy.files import kept_lines

pytestmark = pytest.mark.unit


def test_a_rewritten_file_loses_each_erased_record_with_its_continuation_lines():
    lines = [b"h\n", b"a\n", b'b "x\n', b'y"\n', b"c\n"]
    assert kept_lines(lines, erased=[3], known=[2, 3, 5]) == [b"h\n", b"a\n", b"c\n"]
    assert kept_lines(lines, erased=[5], known=[2, 3, 5]) == lines[:4]
