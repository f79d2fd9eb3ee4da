"""SecAgg+: secure aggregation after Bonawitz et al. 2017 and Bell et al. 2020, as a pure library.

The aggregator sees only the sum of the sites' weighted updates, never one site's update:
each site adds pairwise masks (from X25519 key agreement with its neighbours) and a self mask
to its fixed-point encoded update; the pairwise masks cancel in the sum, the self masks and the
pairwise masks of sites that dropped out are removed from Shamir shares that the surviving
neighbours reveal. No I/O, no threads, no clocks: the engine phases (helper modules elsewhere)
carry the bytes these objects produce.

Modules: ``params`` (SecAggParams, the fixed-point ring), ``messages`` (the byte formats and
SecAggRefused), ``graph`` (the neighbourhood), ``crypto`` (the library primitives), ``shamir``
(Shamir secret sharing over a prime field, by MPyC), ``encoding``
(fixed point), ``site`` (SiteSession), ``server`` (ServerSession) and ``signing`` (signed
adverts and the consistency check, Bonawitz et al.'s active variant, over injected hooks). Only ``site``, ``server``,
``crypto`` and ``shamir`` import ``cryptography`` and MPyC (the ``accord[secagg]`` extra).
"""
