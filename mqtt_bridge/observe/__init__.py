"""Observability: counters, Prometheus metrics, the health server and status page, the message trace, delivery
receipts and log output. Trace and receipts hear the data path through the outcome hooks (`hooks`).
"""
