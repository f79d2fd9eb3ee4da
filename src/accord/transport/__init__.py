"""Transports between collaborators and the aggregator: gRPC over mutual TLS, and in-process."""
