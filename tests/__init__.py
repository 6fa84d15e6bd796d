"""Test suite package: lets integration tests import the shared harness as ``tests.harness``."""
