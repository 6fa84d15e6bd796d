"""The mirror's unit tests."""
