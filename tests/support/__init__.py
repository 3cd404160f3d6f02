"""Helpers that tests (and benchmarks) start: a scripted OpenAI-compatible upstream, the gateway as a process."""
