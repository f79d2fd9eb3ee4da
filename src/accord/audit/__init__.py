"""The tamper-evident audit trail: hash-chained, signed records at the aggregator and each site
(docs/audit.md): chain.py (entries, the chain, its seals), trail.py (the aggregator's),
site_record.py (a site's), verify.py (``fx audit verify``)."""
