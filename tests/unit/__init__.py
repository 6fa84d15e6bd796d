"""Unit tests: the proxy's parts in one process, on fakes (SynchronousTestCase, Clock,
StubTreq, StringTransport), collected by pytest and, their TestCase classes, by trial."""
