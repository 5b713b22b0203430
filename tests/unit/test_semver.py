"""Masterminds/semver v3.5.0 behaviour, case by case.

The constraint tables below restate the cases of Masterminds' own test tables
(constraints_test.go / version_test.go at v3.5.0, deduplicated and grouped by
operator) plus Kargo's cases; every one of them must agree with the Go library.
"""

from __future__ import annotations

import pytest

from pushrelay.core.constraints import (
    MAX_CONSTRAINT_GROUPS,
    Constraint,
    InvalidConstraint,
    _parse_comparator,
    _rewrite_range,
)
from pushrelay.core.semver import InvalidVersion, Version, parse, parse_strict, parse_tag

# --------------------------------------------------------------------------
# Constraint tables: (constraint, version, satisfied)
# --------------------------------------------------------------------------

RELEASE_ONLY: list[tuple[str, str, bool]] = [
    # = / none / wildcards
    ("=2.0.0", "1.2.3", False),
    ("=2.0.0", "2.0.0", True),
    ("=2.0", "1.2.3", False),
    ("=2.0", "2.0.0", True),
    ("=2.0", "2.0.1", True),
    ("4.1", "4.1.0", True),
    ("=0", "1", False),
    ("*", "1", True),
    ("*", "4.5.6", True),
    ("*", "1.2.3-alpha.1", False),
    ("*-0", "1.2.3-alpha.1", True),
    ("2.*", "1", False),
    ("2.*", "3.4.5", False),
    ("2.*", "2.1.1", True),
    ("2.1.*", "2.1.1", True),
    ("2.1.*", "2.2.1", False),
    ("2", "1", False),
    ("2", "3.4.5", False),
    ("2", "2.1.1", True),
    ("2.1", "2.1.1", True),
    ("2.1", "2.2.1", False),
    ("*", "1.2.3", True),
    ("0.x.x", "1.2.3", False),
    ("0.0.x", "1.2.3", False),
    ("0.0.0", "1.2.3", False),
    ("= 2.0", "1.2.3", False),
    ("= 2.0", "2.0.0", True),
    ("4.1.x", "4.1.3", True),
    ("1.x", "1.4", True),
    ("1.1-3", "4.3.2", False),
    # !=
    ("!=4.1.0", "4.1.0", False),
    ("!=4.1.0", "4.1.1", True),
    ("!=4.1", "4.1.0", False),
    ("!=4.1", "4.1.1", False),
    ("!=4.1", "5.1.0-alpha.1", False),
    ("!=4.1.0", "5.1.0-alpha.1", False),
    ("!=4.1-alpha", "4.1.0", True),
    ("!=4.1", "5.1.0", True),
    ("!=4.1-alpha", "4.1.0-alpha", False),
    ("!=4.1-alpha", "4.1.1-alpha", False),
    ("!=4.x", "5.1.0", True),
    ("!=4.x", "4.1.0", False),
    ("!=4.1.x", "4.2.0", True),
    ("!=4.2.x", "4.2.3", False),
    # <
    ("<11", "0.1.0", True),
    ("<11", "11.1.0", False),
    ("<1.1", "0.1.0", True),
    ("<1.1", "1.1.0", False),
    ("<1.1", "1.1.1", False),
    ("<0", "0.0.0-alpha", False),
    ("<0-z", "0.0.0-alpha", True),
    ("<1.x", "1.1.1", False),
    ("<1.x", "0.1.1", True),
    ("<1.x", "2.0.0", False),
    ("<1.1.x", "1.2.1", False),
    ("<1.1.x", "1.1.500", False),
    ("<1.1.x", "1.0.500", True),
    ("<1.2.x", "1.1.1", True),
    ("<2.x", "1.1.1", True),
    ("<1.x", "2.1.1", False),
    # <=
    ("<=11", "1.2.3", True),
    ("<=11", "12.2.3", False),
    ("<=11", "11.2.3", True),
    ("<=1.1", "1.2.3", False),
    ("<=1.1", "0.1.0", True),
    ("<=1.1", "1.1.0", True),
    ("<=1.1", "1.1.1", True),
    ("<=1.1", "0.1.0-alpha", False),
    ("<=1.1-a", "0.1.0-alpha", True),
    ("<=1.x", "1.1.0", True),
    ("<=2.x", "3.0.0", False),
    ("<=1.1.x", "1.2.500", False),
    ("<=4.5", "3.4.0", True),
    ("<=4.5", "3.7.0", True),
    ("<=4.5", "4.6.3", False),
    ("<=2.x", "3.1.0", False),
    # >
    (">1.1", "4.1.0", True),
    (">1.1", "1.1.0", False),
    (">0", "0", False),
    (">0", "1", True),
    (">0", "0.0.1-alpha", False),
    (">0.0", "0.0.1-alpha", False),
    (">0-0", "0.0.1-alpha", False),
    (">0.0-0", "0.0.1-alpha", False),
    (">0", "0.0.0-alpha", False),
    (">0-0", "0.0.0-alpha", False),
    (">0.0.0-0", "0.0.0-alpha", True),
    (">1.2.3-alpha.1", "1.2.3-alpha.2", True),
    (">1.2.3-alpha.1", "1.3.3-alpha.2", True),
    (">11", "11.1.0", False),
    (">11.1", "11.1.0", False),
    (">11.1", "11.1.1", False),
    (">11.1", "11.2.1", True),
    (">1.1 <2", "1.1.1", False),
    (">1.1 <2", "1.2.1", True),
    (">1.1    <3", "4.3.2", False),
    # >=
    (">=11", "11.1.2", True),
    (">=11.1", "11.1.2", True),
    (">=11.1", "11.0.2", False),
    (">=1.1", "4.1.0", True),
    (">=1.1", "1.1.0", True),
    (">=1.1", "0.0.9", False),
    (">=0", "0.0.1-alpha", False),
    (">=0.0", "0.0.1-alpha", False),
    (">=0-0", "0.0.1-alpha", True),
    (">=0.0-0", "0.0.1-alpha", True),
    (">=0", "0.0.0-alpha", False),
    (">=0-0", "0.0.0-alpha", True),
    (">=0.0.0-0", "0.0.0-alpha", True),
    (">=0.0.0-0", "1.2.3", True),
    (">=0.0.0-0", "3.4.5-beta.1", True),
    (">=0", "0", True),
    (">=1.1", "4.1.0-beta", False),
    # ^
    ("^1.2.3", "1.8.9", True),
    ("^1.2.3", "2.8.9", False),
    ("^1.2.3", "1.2.1", False),
    ("^1.1.0", "2.1.0", False),
    ("^1.2.0", "2.2.1", False),
    ("^1.2.0", "1.2.1-alpha.1", False),
    ("^1.2.0-alpha.0", "1.2.1-alpha.1", True),
    ("^1.2.0-alpha.0", "1.2.1-alpha.0", True),
    ("^1.2.0-alpha.2", "1.2.0-alpha.1", False),
    ("^1.2", "1.8.9", True),
    ("^1.2", "2.8.9", False),
    ("^1", "1.8.9", True),
    ("^1", "2.8.9", False),
    ("^0.2.3", "0.2.5", True),
    ("^0.2.3", "0.5.6", False),
    ("^0.2", "0.2.5", True),
    ("^0.2", "0.5.6", False),
    ("^0.0.3", "0.0.3", True),
    ("^0.0.3", "0.0.4", False),
    ("^0.0", "0.0.3", True),
    ("^0.0", "0.1.4", False),
    ("^0.0", "1.0.4", False),
    ("^0", "0.2.3", True),
    ("^0", "1.1.4", False),
    ("^0.2.3-beta.2", "0.2.3-beta.4", True),
    ("^0.2.3-beta.2", "0.2.4-beta.2", True),
    ("^0.2.3-beta.2", "0.3.4-beta.2", False),
    ("^0.2.3-beta.2", "0.2.3-beta.2", True),
    ("^0.0.0", "1.2.3", False),
    ("^1.1", "1.1.1", True),
    ("^1.1", "4.3.2", False),
    ("^1.x", "1.1.1", True),
    ("^2.x", "1.1.1", False),
    ("^1.x", "2.1.1", False),
    ("^1.x", "1.1.1-beta1", False),
    ("^1.1.2-alpha", "1.2.1-beta1", True),
    ("^1.2.x-alpha", "1.1.1-beta1", False),
    ("^0.0.1", "0.0.1", True),
    ("^0.0.1", "0.3.1", False),
    ("^1.1", "1.1.1-alpha", False),
    ("^1.1.1-alpha", "1.1.1-beta", True),
    ("^1.1.1-beta", "1.1.1-alpha", False),
    ("^0.0.1", "0.1.3", False),
    # ~
    ("~1.2.3", "1.2.4", True),
    ("~1.2.3", "1.3.4", False),
    ("~1.2", "1.2.4", True),
    ("~1.2", "1.3.4", False),
    ("~1", "1.2.4", True),
    ("~1", "2.3.4", False),
    ("~0.2.3", "0.2.5", True),
    ("~0.2.3", "0.3.5", False),
    ("~1.2.3-beta.2", "1.2.3-beta.4", True),
    ("~1.2.3-beta.2", "1.2.4-beta.2", True),
    ("~1.2.3-beta.2", "1.3.4-beta.2", False),
    ("~0.0.0", "1.2.3", True),
    ("~*", "2.1.1", True),
    ("~1", "2.1.1", False),
    ("~1", "1.3.5", True),
    ("~1", "1.4", True),
    ("~1.x", "2.1.1", False),
    ("~1.x", "1.3.5", True),
    ("~1.x", "1.4", True),
    ("~1.1", "1.1.1", True),
    ("~1.1", "1.1.1-alpha", False),
    ("~1.1-alpha", "1.1.1-beta", True),
    ("~1.1.1-beta", "1.1.1-alpha", False),
    ("~1.1.1-beta", "1.1.1", True),
    ("~1.2.3", "1.2.5", True),
    ("~1.2.3", "1.2.2", False),
    ("~1.2.3", "1.3.2", False),
    ("~1.1", "1.2.3", False),
    ("~1.3", "2.4.5", False),
    ("~1", "1.3.5-beta", False),
    ("~1.x", "1.3.5-beta", False),
    ("~1.3.6-alpha", "1.3.5-beta", False),
    ("~1.3.5-alpha", "1.3.5-beta", True),
    ("~1.3.5-beta", "1.3.5-alpha", False),
    # range
    ("1.1 - 2", "1.1.1", True),
    ("1.5.0 - 4.5", "3.7.0", True),
    ("1.0.0 - 2.0.0 <=2.0.0", "1.5.0", True),
    # and/or
    (">1.1, <2", "1.1.1", False),
    (">1.1, <2", "1.2.1", True),
    (">1.1, <3", "4.3.2", False),
    (">=1.1, <2, !=1.2.3", "1.2.3", False),
    (">=1.1    <2    !=1.2.3", "1.2.3", False),
    (">=1.1, <2, !=1.2.3 || > 3", "4.1.2", True),
    (">=1.1, <2, !=1.2.3 || > 3", "3.1.2", False),
    (">=1.1, <2, !=1.2.3 || >= 3", "3.0.0", True),
    (">=1.1, <2, !=1.2.3 || > 3", "3.0.0", False),
    (">=1.1, <2, !=1.2.3 || > 3", "1.2.3", False),
    (">=1.1 <2 !=1.2.3", "1.2.3", False),
    (">=1.1 <2 !=1.2.3 || > 3", "4.1.2", True),
    (">=1.1 <2 !=1.2.3 || > 3", "3.1.2", False),
    (">=1.1 <2 !=1.2.3 || >= 3", "3.0.0", True),
    (">=1.1 <2 !=1.2.3 || > 3", "3.0.0", False),
    (">=1.1 <2 !=1.2.3 || > 3", "1.2.3", False),
    ("> 1.1, <     2", "1.1.1", False),
    (">   1.1, <2", "1.2.1", True),
    (">1.1, <  3", "4.3.2", False),
    (">= 1.1, <     2, !=1.2.3", "1.2.3", False),
    ("> 1.1 < 2", "1.1.1", False),
    (">1.1 < 2", "1.2.1", True),
    ("> 1.1    <3", "4.3.2", False),
    (">=1.1    < 2    != 1.2.3", "1.2.3", False),
    (">= 1.1, <2, !=1.2.3 || > 3", "4.1.2", True),
    (">= 1.1, <2, != 1.2.3 || > 3", "3.1.2", False),
    (">= 1.1, <2, != 1.2.3 || >= 3", "3.0.0", True),
    (">= 1.1, <2, !=1.2.3 || > 3", "3.0.0", False),
    (">= 1.1, <2, !=1.2.3 || > 3", "1.2.3", False),
    (">= 1.1 <2 != 1.2.3", "1.2.3", False),
    (">= 1.1 <2 != 1.2.3 || > 3", "4.1.2", True),
    (">= 1.1 <2 != 1.2.3 || > 3", "3.1.2", False),
    (">= 1.1 <2 != 1.2.3 || >= 3", "3.0.0", True),
    (">= 1.1 < 2 !=1.2.3 || > 3", "3.0.0", False),
    (">=1.1 < 2 !=1.2.3 || > 3", "1.2.3", False),
    (">= 1.0.0  <= 2.0.0-beta", "1.0.1-beta", True),
    (">= 1.0.0  <= 2.0.0-beta", "1.0.1", True),
    (">= 1.0.0  <= 2.0.0-beta", "3.0.0", False),
    (">= 1.0.0  <= 2.0.0-beta || > 3", "1.0.1-beta", True),
    (">= 1.0.0  <= 2.0.0-beta || > 3", "3.0.1-beta", False),
    (">= 1.0.0  <= 2.0.0-beta != 1.0.1 || > 3", "1.0.1-beta", True),
    (">= 1.0.0  <= 2.0.0-beta != 1.0.1-beta || > 3", "1.0.1-beta", False),
    (">= 1.0.0-0  <= 2.0.0", "1.0.1-beta", True),
    ("1.0.0 - 2.0.0, <=2.0.0", "1.5.0", True),
]

INCLUDE_PRERELEASE: list[tuple[str, str, bool]] = [
    # = / none / wildcards
    ("*", "1.2.3-alpha", True),
    ("= 2.0", "2.0.1-beta", True),
    ("*", "1.2.3", True),
    ("0.x.x", "1.2.3", False),
    ("0.0.x", "1.2.3", False),
    ("0.0.0", "1.2.3", False),
    ("= 2.0", "1.2.3", False),
    ("= 2.0", "2.0.0", True),
    ("4.1", "4.1.0", True),
    ("4.1.x", "4.1.3", True),
    ("1.x", "1.4", True),
    ("1.1-3", "4.3.2", False),
    # !=
    ("!=4.1", "4.1.0", False),
    ("!=4.1-alpha", "4.1.0-alpha", False),
    ("!=4.1-alpha", "4.1.1-alpha", False),
    ("!=4.1-alpha", "4.1.0", True),
    ("!=4.1", "5.1.0", True),
    ("!=4.x", "5.1.0", True),
    ("!=4.x", "4.1.0", False),
    ("!=4.1.x", "4.2.0", True),
    ("!=4.2.x", "4.2.3", False),
    # <
    ("<1.1", "0.1.0-alpha", True),
    ("<1.1", "0.1.0", True),
    ("<1.1", "1.1.0", False),
    ("<1.1", "1.1.1", False),
    ("<1.x", "1.1.1", False),
    ("<1.x", "0.1.1", True),
    ("<1.x", "2.0.0", False),
    ("<1.1.x", "1.2.1", False),
    ("<1.1.x", "1.1.500", False),
    ("<1.1.x", "1.0.500", True),
    ("<1.2.x", "1.1.1", True),
    ("<2.x", "1.1.1", True),
    ("<1.x", "2.1.1", False),
    # <=
    ("<=1.1", "0.1.0-alpha", True),
    ("<=1.1", "0.1.0", True),
    ("<=1.1-a", "0.1.0-alpha", True),
    ("<=1.1", "1.1.0", True),
    ("<=1.x", "1.1.0", True),
    ("<=2.x", "3.0.0", False),
    ("<=1.1", "1.1.1", True),
    ("<=1.1.x", "1.2.500", False),
    ("<=4.5", "3.4.0", True),
    ("<=4.5", "3.7.0", True),
    ("<=4.5", "4.6.3", False),
    ("<=2.x", "3.1.0", False),
    # >
    (">1.1", "4.1.0-beta", True),
    (">1.1", "4.1.0", True),
    (">1.1", "1.1.0", False),
    (">1.1 <2", "1.1.1", False),
    (">1.1 <2", "1.2.1", True),
    (">1.1    <3", "4.3.2", False),
    # >=
    (">=1.1", "4.1.0-beta", True),
    (">=1.1", "4.1.0", True),
    (">=1.1", "1.1.0", True),
    (">=1.1", "0.0.9", False),
    # ^
    ("^1.x", "1.1.1-beta1", True),
    ("^0.0.0", "1.2.3", False),
    ("^1.1", "1.1.1", True),
    ("^1.1", "4.3.2", False),
    ("^1.x", "1.1.1", True),
    ("^2.x", "1.1.1", False),
    ("^1.x", "2.1.1", False),
    ("^1.1.2-alpha", "1.2.1-beta1", True),
    ("^1.2.x-alpha", "1.1.1-beta1", False),
    ("^0.0.1", "0.0.1", True),
    ("^0.0.1", "0.3.1", False),
    ("^1.1", "1.1.1-alpha", True),
    ("^1.1.1-alpha", "1.1.1-beta", True),
    ("^1.1.1-beta", "1.1.1-alpha", False),
    ("^0.0.1", "0.1.3", False),
    # ~
    ("~1.1", "1.1.1-alpha", True),
    ("~0.0.0", "1.2.3", True),
    ("~*", "2.1.1", True),
    ("~1", "2.1.1", False),
    ("~1", "1.3.5", True),
    ("~1", "1.4", True),
    ("~1.x", "2.1.1", False),
    ("~1.x", "1.3.5", True),
    ("~1.x", "1.4", True),
    ("~1.1", "1.1.1", True),
    ("~1.1-alpha", "1.1.1-beta", True),
    ("~1.1.1-beta", "1.1.1-alpha", False),
    ("~1.1.1-beta", "1.1.1", True),
    ("~1.2.3", "1.2.5", True),
    ("~1.2.3", "1.2.2", False),
    ("~1.2.3", "1.3.2", False),
    ("~1.1", "1.2.3", False),
    ("~1.3", "2.4.5", False),
    ("~1", "1.3.5-beta", True),
    ("~1.x", "1.3.5-beta", True),
    ("~1.3.6-alpha", "1.3.5-beta", False),
    ("~1.3.5-alpha", "1.3.5-beta", True),
    ("~1.3.5-beta", "1.3.5-alpha", False),
    # range
    ("1.1 - 2", "1.1.1", True),
    ("1.5.0 - 4.5", "3.7.0", True),
    ("1.0.0 - 2.0.0 <=2.0.0", "1.5.0", True),
    # and/or
    (">1.1, <2", "1.1.1", False),
    (">1.1, <2", "1.2.1", True),
    (">1.1, <3", "4.3.2", False),
    (">=1.1, <2, !=1.2.3", "1.2.3", False),
    (">=1.1    <2    !=1.2.3", "1.2.3", False),
    (">=1.1, <2, !=1.2.3 || > 3", "4.1.2", True),
    (">=1.1, <2, !=1.2.3 || > 3", "3.1.2", False),
    (">=1.1, <2, !=1.2.3 || >= 3", "3.0.0", True),
    (">=1.1, <2, !=1.2.3 || > 3", "3.0.0", False),
    (">=1.1, <2, !=1.2.3 || > 3", "1.2.3", False),
    (">=1.1 <2 !=1.2.3", "1.2.3", False),
    (">=1.1 <2 !=1.2.3 || > 3", "4.1.2", True),
    (">=1.1 <2 !=1.2.3 || > 3", "3.1.2", False),
    (">=1.1 <2 !=1.2.3 || >= 3", "3.0.0", True),
    (">=1.1 <2 !=1.2.3 || > 3", "3.0.0", False),
    (">=1.1 <2 !=1.2.3 || > 3", "1.2.3", False),
    ("> 1.1, <     2", "1.1.1", False),
    (">   1.1, <2", "1.2.1", True),
    (">1.1, <  3", "4.3.2", False),
    (">= 1.1, <     2, !=1.2.3", "1.2.3", False),
    ("> 1.1 < 2", "1.1.1", False),
    (">1.1 < 2", "1.2.1", True),
    ("> 1.1    <3", "4.3.2", False),
    (">=1.1    < 2    != 1.2.3", "1.2.3", False),
    (">= 1.1, <2, !=1.2.3 || > 3", "4.1.2", True),
    (">= 1.1, <2, != 1.2.3 || > 3", "3.1.2", False),
    (">= 1.1, <2, != 1.2.3 || >= 3", "3.0.0", True),
    (">= 1.1, <2, !=1.2.3 || > 3", "3.0.0", False),
    (">= 1.1, <2, !=1.2.3 || > 3", "1.2.3", False),
    (">= 1.1 <2 != 1.2.3", "1.2.3", False),
    (">= 1.1 <2 != 1.2.3 || > 3", "4.1.2", True),
    (">= 1.1 <2 != 1.2.3 || > 3", "3.1.2", False),
    (">= 1.1 <2 != 1.2.3 || >= 3", "3.0.0", True),
    (">= 1.1 < 2 !=1.2.3 || > 3", "3.0.0", False),
    (">=1.1 < 2 !=1.2.3 || > 3", "1.2.3", False),
    (">= 1.0.0  <= 2.0.0-beta", "1.0.1-beta", True),
    (">= 1.0.0  <= 2.0.0-beta", "1.0.1", True),
    (">= 1.0.0  <= 2.0.0-beta", "3.0.0", False),
    (">= 1.0.0  <= 2.0.0-beta || > 3", "1.0.1-beta", True),
    (">= 1.0.0  <= 2.0.0-beta || > 3", "3.0.1-beta", False),
    (">= 1.0.0  <= 2.0.0-beta != 1.0.1 || > 3", "1.0.1-beta", True),
    (">= 1.0.0  <= 2.0.0-beta != 1.0.1-beta || > 3", "1.0.1-beta", False),
    (">= 1.0.0-0  <= 2.0.0", "1.0.1-beta", True),
    ("1.0.0 - 2.0.0, <=2.0.0", "1.5.0", True),
]

MESSAGES: list[tuple[str, str, bool, str]] = [
    ("2.x", "1.2.3", False, '"1.2.3" is less than "2.x"'),
    ("2", "1.2.3", False, '"1.2.3" is less than "2"'),
    ("= 2.0", "1.2.3", False, '"1.2.3" is less than "2.0"'),
    ("!=4.1", "4.1.0", False, '"4.1.0" is equal to "4.1"'),
    ("!=4.x", "4.1.0", False, '"4.1.0" is equal to "4.x"'),
    ("!=4.2.x", "4.2.3", False, '"4.2.3" is equal to "4.2.x"'),
    (">1.1", "1.1.0", False, '"1.1.0" is less than or equal to "1.1"'),
    ("<1.1", "1.1.0", False, '"1.1.0" is greater than or equal to "1.1"'),
    ("<1.1", "1.1.1", False, '"1.1.1" is greater than or equal to "1.1"'),
    ("<1.x", "2.1.1", False, '"2.1.1" is greater than or equal to "1.x"'),
    ("<1.1.x", "1.2.1", False, '"1.2.1" is greater than or equal to "1.1.x"'),
    (">=1.1", "0.0.9", False, '"0.0.9" is less than "1.1"'),
    ("<=2.x", "3.1.0", False, '"3.1.0" is greater than "2.x"'),
    ("<=1.1", "1.2.1", False, '"1.2.1" is greater than "1.1"'),
    ("<=1.1.x", "1.2.500", False, '"1.2.500" is greater than "1.1.x"'),
    (">1.1, <3", "4.3.2", False, '"4.3.2" is greater than or equal to "3"'),
    (">=1.1, <2, !=1.2.3", "1.2.3", False, '"1.2.3" is equal to "1.2.3"'),
    (">=1.1, <2, !=1.2.3 || > 3", "3.0.0", False, '"3.0.0" is greater than or equal to "2"'),
    (">=1.1, <2, !=1.2.3 || > 3", "1.2.3", False, '"1.2.3" is equal to "1.2.3"'),
    ("1.1 - 3", "4.3.2", False, '"4.3.2" is greater than "3"'),
    ("^1.1", "4.3.2", False, '"4.3.2" does not have same major version as "1.1"'),
    ("^1.12.7", "1.6.6", False, '"1.6.6" is less than "1.12.7"'),
    ("^2.x", "1.1.1", False, '"1.1.1" is less than "2.x"'),
    ("^1.x", "2.1.1", False, '"2.1.1" does not have same major version as "1.x"'),
    (
        "^0.2",
        "0.3.0",
        False,
        '"0.3.0" does not have same minor version as "0.2". Expected minor versions'
        " to match when constraint major version is 0",
    ),
    ("^0.2", "0.1.1", False, '"0.1.1" is less than "0.2"'),
    ("^0.0.3", "0.1.1", False, '"0.1.1" does not have same minor version as "0.0.3"'),
    (
        "^0.0.3",
        "0.0.4",
        False,
        '"0.0.4" does not equal "0.0.3". Expect version and constraint to equal when'
        " major and minor versions are 0",
    ),
    ("^0.0.3", "0.0.2", False, '"0.0.2" is less than "0.0.3"'),
    ("~1", "2.1.2", False, '"2.1.2" does not have same major version as "1"'),
    ("~1.x", "2.1.1", False, '"2.1.1" does not have same major version as "1.x"'),
    ("~1.2.3", "1.2.2", False, '"1.2.2" is less than "1.2.3"'),
    ("~1.2.3", "1.3.2", False, '"1.3.2" does not have same major and minor version as "1.2.3"'),
    ("~1.1", "1.2.3", False, '"1.2.3" does not have same major and minor version as "1.1"'),
    ("~1.3", "2.4.5", False, '"2.4.5" does not have same major version as "1.3"'),
    (
        "> 1.2.3",
        "1.2.3-beta.1",
        False,
        '"1.2.3-beta.1" is a prerelease version and the constraint is only looking'
        " for release versions",
    ),
    ("> 1.2.3", "1.2.3-beta.1", True, '"1.2.3-beta.1" is less than or equal to "1.2.3"'),
    ("< 1.2.3", "1.2.4-beta.1", True, '"1.2.4-beta.1" is greater than or equal to "1.2.3"'),
    (">= 1.2.3", "1.2.3-beta.1", True, '"1.2.3-beta.1" is less than "1.2.3"'),
    ("<= 1.2.3", "1.2.4-beta.1", True, '"1.2.4-beta.1" is greater than "1.2.3"'),
]

KARGO_CASES = [
    # Kargo's own webhook cases: a v-prefixed tag against caret constraints.
    ("^2.0.0", "v1.0.0", False),
    ("^1.0.0", "v1.0.0", True),
    ("^1.0.0", "v1.9.3", True),
    ("^1.0.0", "v1.0.1-rc.1", False),
    (">=1.0.0-0", "v1.0.1-rc.1", True),
    ("1.2.3+build.5", "1.2.3", True),  # metadata is ignored
    ("~1.2.x+build", "1.2.9", True),  # ...and dropped from a wildcard bound
    ("=01.2.3", "1.2.3", True),  # leading zeros coerced in a constraint
    ("v1.2", "1.2.7", True),
    (">=1.0.0 <2.0.0 || >=3", "2.5.0", False),
    (">=1.0.0 <2.0.0 || >=3", "3.0.0", True),
    ("*", "0.0.0", True),
    ("x.1", "5.0.0", True),  # a wildcard major makes the rest irrelevant
    ("~0.0.0", "0.0.0-alpha", False),
    ("!=*", "0.1.0", True),  # a quirk: != with a wildcard major only excludes 0.0.0
]


def _id(value: object) -> str:
    return repr(value)


def _ids(cases: list[tuple[str, str, bool]]) -> list[str]:
    return [f"{c!r} {'matches' if ok else 'rejects'} {v!r}" for c, v, ok in cases]


@pytest.mark.parametrize(
    ("constraint", "version", "expected"),
    RELEASE_ONLY + KARGO_CASES,
    ids=_ids(RELEASE_ONLY + KARGO_CASES),
)
def test_check_and_validate(constraint: str, version: str, expected: bool) -> None:
    c = Constraint.parse(constraint)
    v = parse(version)
    ok, reasons = c.validate(v)
    assert c.check(v) is expected
    assert ok is expected
    assert bool(reasons) is not expected


@pytest.mark.parametrize(
    ("constraint", "version", "expected"),
    INCLUDE_PRERELEASE,
    ids=_ids(INCLUDE_PRERELEASE),
)
def test_check_include_prerelease(constraint: str, version: str, expected: bool) -> None:
    c = Constraint.parse(constraint, include_prerelease=True)
    v = parse(version)
    ok, reasons = c.validate(v)
    assert c.check(v) is expected
    assert ok is expected
    assert bool(reasons) is not expected


@pytest.mark.parametrize(
    ("constraint", "version", "include_pre", "message"),
    MESSAGES,
    ids=[f"{c!r} {v!r}{' +pre' if p else ''}" for c, v, p, _ in MESSAGES],
)
def test_first_validate_reason(
    constraint: str, version: str, include_pre: bool, message: str
) -> None:
    c = Constraint.parse(constraint, include_prerelease=include_pre)
    ok, reasons = c.validate(parse_strict(version))
    assert not ok
    assert reasons[0] == message


@pytest.mark.parametrize("include_pre", [False, True])
def test_validate_collects_every_failure_of_a_group(include_pre: bool) -> None:
    c = Constraint.parse("!= 1.2.5, ^2, <= 1.1.x", include_prerelease=include_pre)
    assert c.validate(parse_strict("1.2.3")) == (
        False,
        ['"1.2.3" is less than "2"', '"1.2.3" is greater than "1.1.x"'],
    )


def test_validate_reports_prerelease_once() -> None:
    ok, reasons = Constraint.parse(">1, <3 || ^2").validate(parse("2.0.0-rc.1"))
    assert not ok
    assert reasons == [
        '"2.0.0-rc.1" is a prerelease version and the constraint is only looking'
        " for release versions"
    ]


def test_prerelease_in_one_comparator_opens_its_whole_group_only() -> None:
    c = Constraint.parse(">=1.0.0-0 <2 || >=3")
    assert c.check(parse("1.5.0-beta"))
    assert not c.check(parse("3.1.0-beta"))


# --------------------------------------------------------------------------
# Single comparators (Masterminds' parseConstraint), including "" == "*"
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "op", "bound"),
    [
        (">= 1.2", ">=", "1.2.0"),
        ("1.0", "", "1.0.0"),
        ("<= 1.2", "<=", "1.2.0"),
        ("=< 1.2", "=<", "1.2.0"),
        ("=> 1.2", "=>", "1.2.0"),
        ("v1.2", "", "1.2.0"),
        ("=1.5", "=", "1.5.0"),
        ("> 1.3", ">", "1.3.0"),
        ("< 1.4.1", "<", "1.4.1"),
        ("< 40.50.10", "<", "40.50.10"),
        ("~> 2.x-beta.1", "~>", "2.0.0-beta.1"),
        ("^*", "^", "0.0.0"),
    ],
    ids=_id,
)
def test_comparator_bound(text: str, op: str, bound: str) -> None:
    comparator = _parse_comparator(text, text)
    assert comparator.op == op
    assert str(comparator.version) == bound


@pytest.mark.parametrize(
    ("version", "expected"),
    [("1", True), ("4.5.6", True), ("1.2.3-alpha.1", False)],
    ids=_id,
)
def test_empty_comparator_is_a_wildcard(version: str, expected: bool) -> None:
    comparator = _parse_comparator("", "")
    assert (comparator.test(parse(version), False) is None) is expected


# --------------------------------------------------------------------------
# Parsing constraints
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ors", "first_group_size"),
    [
        (">= 1.1", 1, 1),
        (">40.50.60, < 50.70", 1, 2),
        ("2.0", 1, 1),
        ("v2.3.5-20161202202307-sha.e8fc5e5", 1, 1),
        ("v1.2.3-0abc", 1, 1),
        (">= 1.2.3 < 2.0", 1, 2),
        (">= 1.2.3 < 2.0 || => 3.0 < 4", 2, 2),
        (">= 1.2.3, < 2.0", 1, 2),
        (">= 1.2.3, < 2.0 || => 3.0, < 4", 2, 2),
        ("3 - 4 || => 3.0, < 4", 2, 2),
        ("12.3.34 ~1.2.3", 1, 2),
        ("1.0.0 - 2.0.0, <=2.0.0", 1, 3),
        ("1.2.3+meta", 1, 1),
        (" \t>=1\n", 1, 1),
    ],
    ids=_id,
)
def test_parse_structure(text: str, ors: int, first_group_size: int) -> None:
    c = Constraint.parse(text)
    assert len(c.groups) == ors
    assert len(c.groups[0]) == first_group_size


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "foo",
        ">= bar",
        "BAR >= 1.2.3",
        "v1.2.3-beta.01",  # numeric prerelease with a leading zero
        "12.3.4.1234",  # four parts
        "12.23.4.1234",
        "12.3.34.1234",
        "12.3.34~ 1.2.3",  # operator glued to the previous version
        "1.2.3 ||",
        "|| 1.2.3",
        "1|2",
        "1x",
        "1.2.x3",
        "V1.2.3",
        ">=1.0.0 ;<2",
        "1.0.0\u00a0- 2.0.0",  # a no-break space is not Go's \s
        "1.0.0\v",  # nor is a vertical tab
        "99999999999999999999.0.0",  # beyond uint64
        ">=1 " + "1" * 300,  # a version longer than 256 bytes
        "\ud800",
    ],
    ids=repr,
)
def test_invalid_constraints(text: str) -> None:
    with pytest.raises(InvalidConstraint) as info:
        Constraint.parse(text)
    assert isinstance(info.value, ValueError)
    assert info.value.constraint == text


def test_invalid_constraint_message_names_the_input() -> None:
    with pytest.raises(InvalidConstraint) as info:
        Constraint.parse("^2.0.0 || foo")
    assert str(info.value) == (
        'invalid semver constraint "^2.0.0 || foo": improper constraint: " foo"'
    )


def test_length_limits() -> None:
    with pytest.raises(InvalidConstraint, match=r"too long \(max 512 bytes\)"):
        Constraint.parse(">= 1.0.0 || " * 100)
    with pytest.raises(InvalidConstraint, match=r"too many constraint groups \(max 32\)"):
        Constraint.parse(" || ".join([">= 1.0.0"] * (MAX_CONSTRAINT_GROUPS + 1)))
    assert len(Constraint.parse("||".join(["1"] * MAX_CONSTRAINT_GROUPS)).groups) == 32


@pytest.mark.parametrize(
    ("text", "rewritten"),
    [
        ("2 - 3", ">= 2, <= 3 "),
        ("2 - 3, 2 - 3", ">= 2, <= 3 ,>= 2, <= 3 "),
        ("2 - 3, 4.0.0 - 5.1", ">= 2, <= 3 ,>= 4.0.0, <= 5.1 "),
        ("2 - 3 4.0.0 - 5.1", ">= 2, <= 3 >= 4.0.0, <= 5.1 "),
        ("1.0.0 - 2.0.0 <=2.0.0", ">= 1.0.0, <= 2.0.0 <=2.0.0"),
        ("1.1-3", "1.1-3"),  # no spaces: a prerelease, not a range
    ],
    ids=_id,
)
def test_rewrite_range(text: str, rewritten: str) -> None:
    assert _rewrite_range(text) == rewritten


@pytest.mark.parametrize(
    ("text", "rendered"),
    [
        ("*", "*"),
        (">=1.2.3", ">=1.2.3"),
        (">= 1.2.3", ">=1.2.3"),
        ("2.x,   >=1.2.3 || >4.5.6, < 5.7", "2.x >=1.2.3 || >4.5.6 <5.7"),
        (
            "2.x,   >=1.2.3 || >4.5.6, < 5.7 || >40.50.60, < 50.70",
            "2.x >=1.2.3 || >4.5.6 <5.7 || >40.50.60 <50.70",
        ),
        ("1.2", "1.2"),
        ("1.2.3", "1.2.3"),
        ("<=1.2.3", "<=1.2.3"),
        ("1 <=1.2.3", "1 <=1.2.3"),
        ("1, <=1.2.3", "1 <=1.2.3"),
        (">1, <=1.2.3", ">1 <=1.2.3"),
        ("> 1 , <=1.2.3", ">1 <=1.2.3"),
        ("> 1 <=1.2.3", ">1 <=1.2.3"),
        ("1 - 2", ">=1 <=2"),
    ],
    ids=_id,
)
def test_str_round_trips(text: str, rendered: str) -> None:
    c = Constraint.parse(text)
    assert str(c) == rendered
    assert str(Constraint.parse(str(c))) == rendered


# --------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------

# (input, valid for parse / NewVersion, valid for parse_strict / StrictNewVersion)
VERSIONS = [
    ("1.2.3", True, True),
    ("1.2.3-alpha.01", False, False),
    ("1.2.3+test.01", True, True),
    ("1.2.3-alpha.-1", True, True),
    ("v1.2.3", True, False),
    ("1.0", True, False),
    ("v1.0", True, False),
    ("1", True, False),
    ("v1", True, False),
    ("1.2", True, False),
    ("1.2.beta", False, False),
    ("v1.2.beta", False, False),
    ("foo", False, False),
    ("1.2-5", True, False),
    ("v1.2-5", True, False),
    ("1.2-beta.5", True, False),
    ("v1.2-beta.5", True, False),
    ("\n1.2", False, False),
    ("\nv1.2", False, False),
    ("1.2.3\n", False, False),
    ("1.2.0-x.Y.0+metadata", True, True),
    ("v1.2.0-x.Y.0+metadata", True, False),
    ("1.2.0-x.Y.0+metadata-width-hypen", True, True),
    ("v1.2.0-x.Y.0+metadata-width-hypen", True, False),
    ("1.2.3-rc1-with-hypen", True, True),
    ("v1.2.3-rc1-with-hypen", True, False),
    ("1.2.3-0abc123", True, True),  # alphanumeric identifiers may start with 0
    ("1.2.3-beta.01", False, False),  # numeric ones may not
    ("1.2.3.4", False, False),
    ("v1.2.3.4", False, False),
    ("12.3.4.1234", False, False),
    ("1.2.2147483648", True, True),
    ("1.2147483648.3", True, True),
    ("2147483648.3.0", True, True),
    ("18446744073709551615.0.0", True, True),  # uint64 max
    ("18446744073709551616.0.0", False, False),  # one more
    ("20221209-update-renovatejson-v4", True, False),  # major 20221209 + prerelease
    ("1.1.2+.123", False, False),
    ("1.0.0-alpha_beta", False, False),
    ("1.0.0-alpha..", False, False),
    ("1.0.0-alpha..1", False, False),
    ("01.1.1", True, False),  # NewVersion coerces leading zeros
    ("1.01.1", True, False),
    ("1.1.01", True, False),
    ("9.8.7+meta+meta", False, False),
    ("1.2.31----RC-SNAPSHOT.12.09.1--.12+788", False, False),
    ("1.2.3-0123", False, False),
    ("1.2.3-0123.0123", False, False),
    ("+invalid", False, False),
    ("-invalid", False, False),
    ("-invalid.01", False, False),
    ("alpha+beta", False, False),
    ("1.2.3-alpha_beta+foo", False, False),
    ("", False, False),
    ("V1.2.3", False, False),
    ("vv1.2.3", False, False),
    (" 1.2.3", False, False),
    ("1.2.3-" + "a" * 250, True, True),  # 256 bytes
    ("1.2.3-" + "a" * 251, False, False),  # 257 bytes
    ("1.2.3-é", False, False),
    ("١.٢.٣", False, False),  # non-ASCII digits
]


@pytest.mark.parametrize(("text", "loose", "strict"), VERSIONS, ids=[repr(v[0]) for v in VERSIONS])
def test_version_validity(text: str, loose: bool, strict: bool) -> None:
    for fn, valid in ((parse, loose), (parse_strict, strict)):
        if valid:
            assert fn(text).original == text
        else:
            with pytest.raises(InvalidVersion) as info:
                fn(text)
            assert info.value.version == text
            assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("1.2.3", "1.2.3"),
        ("v1.2.3", "1.2.3"),
        ("1.0", "1.0.0"),
        ("v1", "1.0.0"),
        ("1.2-5", "1.2.0-5"),
        ("v1.2-beta.5", "1.2.0-beta.5"),
        ("v1.2.0-x.Y.0+metadata-width-hypen", "1.2.0-x.Y.0+metadata-width-hypen"),
        ("01.02.003", "1.2.3"),
    ],
    ids=_id,
)
def test_canonical_string(text: str, canonical: str) -> None:
    assert str(parse(text)) == canonical


def test_parts() -> None:
    v = parse("1.2.3-beta.1+build.123")
    assert (v.major, v.minor, v.patch, v.prerelease, v.metadata) == (
        1,
        2,
        3,
        "beta.1",
        "build.123",
    )


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1.2.3", "1.5.1", -1),
        ("2.2.3", "1.5.1", 1),
        ("2.2.3", "2.2.2", 1),
        ("3.2-beta", "3.2-beta", 0),
        ("1.3", "1.1.4", 1),
        ("4.2", "4.2-beta", 1),
        ("4.2-beta", "4.2", -1),
        ("4.2-alpha", "4.2-beta", -1),
        ("4.2-alpha", "4.2-alpha", 0),
        ("4.2-beta.2", "4.2-beta.1", 1),
        ("4.2-beta2", "4.2-beta1", 1),
        ("4.2-beta", "4.2-beta.2", -1),
        ("4.2-beta", "4.2-beta.foo", -1),
        ("4.2-beta.2", "4.2-beta", 1),
        ("4.2-beta.foo", "4.2-beta", 1),
        ("1.2+bar", "1.2+baz", 0),
        ("1.0.0-beta.4", "1.0.0-beta.-2", -1),  # "-2" is text, and text sorts last
        ("1.0.0-beta.-2", "1.0.0-beta.-3", -1),
        ("1.0.0-beta.-3", "1.0.0-beta.5", 1),
        ("3.2.0-beta.1", "3.2.0-beta.5", -1),
        ("7.43.0-SNAPSHOT.99", "7.43.0-SNAPSHOT.103", -1),  # numerically
        ("7.43.0-SNAPSHOT.FOO", "7.43.0-SNAPSHOT.103", 1),
        ("7.43.0-SNAPSHOT.BAR", "7.43.0-SNAPSHOT.99", 1),
        ("1.0.0-a.18446744073709551616", "1.0.0-a.9", 1),  # beyond uint64: text
        ("1.0.0-a.18446744073709551616", "1.0.0-a.b", -1),
        ("1.0.0-alpha", "1.0.0-alpha.1", -1),  # the semver 2.0 §11 chain
        ("1.0.0-alpha.1", "1.0.0-alpha.beta", -1),
        ("1.0.0-alpha.beta", "1.0.0-beta", -1),
        ("1.0.0-beta", "1.0.0-beta.2", -1),
        ("1.0.0-beta.2", "1.0.0-beta.11", -1),
        ("1.0.0-beta.11", "1.0.0-rc.1", -1),
        ("1.0.0-rc.1", "1.0.0", -1),
    ],
    ids=_id,
)
def test_compare(a: str, b: str, expected: int) -> None:
    va, vb = parse(a), parse(b)
    assert va.compare(vb) == expected
    assert vb.compare(va) == -expected
    assert (va < vb, va == vb, va > vb) == (expected < 0, expected == 0, expected > 0)
    assert (va <= vb, va >= vb) == (expected <= 0, expected >= 0)


def test_metadata_is_ignored_by_equality_and_hash() -> None:
    a, b = parse("3.2-beta+foo"), parse("3.2-beta+bar")
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != parse("3.2-beta.1")
    assert a != "3.2-beta"


def test_direct_construction() -> None:
    assert str(Version(0, 1, 2)) == "0.1.2"
    assert str(Version(1, 2, 3, "alpha.1", "foo.bar")) == "1.2.3-alpha.1+foo.bar"


def test_error_messages() -> None:
    with pytest.raises(InvalidVersion, match=r'^invalid semantic version "foo": '):
        parse("foo")
    with pytest.raises(InvalidVersion) as info:
        parse_strict("1.2.3-beta.01")
    assert info.value.detail == "version segment starts with 0"
    with pytest.raises(InvalidVersion) as info:
        parse_strict("")
    assert info.value.detail == "version string empty"


# --------------------------------------------------------------------------
# Kargo's tag parsing: NewVersion(tag) and, when strict,
# StrictNewVersion(strings.TrimPrefix(tag, "v"))
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "strict_ok", "loose_ok"),
    [
        ("1.2.3", True, True),
        ("v1.2.3", True, True),  # one leading v is allowed even when strict
        ("v1.2.3-rc.1+build.7", True, True),
        ("1.2", False, True),
        ("v1", False, True),
        ("abc1234", False, False),  # a short Git SHA
        ("1234567", False, True),  # ...or one made only of digits
        ("01.2.3", False, True),
        ("vv1.2.3", False, False),
        ("latest", False, False),
    ],
    ids=_id,
)
def test_parse_tag(tag: str, strict_ok: bool, loose_ok: bool) -> None:
    for strict, ok in ((True, strict_ok), (False, loose_ok)):
        if ok:
            assert parse_tag(tag, strict=strict).original == tag
        else:
            with pytest.raises(InvalidVersion):
                parse_tag(tag, strict=strict)
