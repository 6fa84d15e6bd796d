"""The blob cache's unit tests."""
