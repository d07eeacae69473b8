"""Payload decoders: one module per format, a registry that owns the list of format names, and auto-detect.
Decoders turn a `Message` into `Decoded` and raise only `DecodeError`. No I/O.
"""
