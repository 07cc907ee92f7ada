"""Fakes of the servers this worker talks to, over real sockets, for tests, the demo and benchmarks."""
