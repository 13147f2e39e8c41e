"""Slow, obvious reference implementations that the fast code is tested against (never used
by the workflow): the literal M-FAC / WoodFisher recursion and a dense inverse
(``fisher_recursion``), and the brute-force exact rank (``exposure_brute_force``)."""
