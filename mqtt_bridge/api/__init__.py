"""The Roboflow Vision Events API on requests, its only importer: the events client, use cases, and bundles.
"""
