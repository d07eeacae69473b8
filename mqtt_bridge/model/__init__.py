"""Value types shared by every subsystem: JSON values and timestamps, the inbound message (carrying its own ack)
and its attachment, the buffered record's byte layout, and the Vision Event rules the API documents. Imports
nothing of the package but `errors`; no I/O.
"""
