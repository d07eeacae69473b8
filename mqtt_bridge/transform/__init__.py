"""Message to events: ingest (the order of checks), the route's event typing rules and the dry run.
"""
