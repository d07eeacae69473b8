"""The data path's threads: the receiver (the durable ack path: raw log commit, then ack), the processor (raw log ->
events or dead letters, after the ack) and the flusher (batches to the API: upload, send, delete, retry,
dead-letter).
"""
