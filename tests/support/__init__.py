"""Code shared by the tests, and no tests: synthetic and real-media fixtures, the local SLURM cluster,
the run-output comparison, the network guard (netguard/, put on PYTHONPATH of workflow runs).

Every test module is ``tests/test_*.py``; everything else the tests import lives here and is imported
as ``from support import x`` / ``from support.x import y`` (pytest puts tests/ on sys.path).
"""
