"""The aggregator: pure round engine, task assignment, and the thread-safe runtime around them."""
