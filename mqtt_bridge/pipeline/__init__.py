"""The data path's threads: the receiver (the durable ack path: commit, then ack) and the flusher (batches to the
API: upload, send, delete, retry, dead-letter).
"""
