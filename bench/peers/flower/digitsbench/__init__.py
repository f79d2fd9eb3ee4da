"""Accord's peer bench: the digits workload as a Flower ServerApp and ClientApp."""
