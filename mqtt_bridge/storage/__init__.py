"""Durable storage on diskcache, its only importer: the event buffer and the dead letters, bytes only.
"""
