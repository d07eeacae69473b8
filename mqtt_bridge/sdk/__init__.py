"""The publisher helper for PLC-adjacent software: builds canonical detection messages and publishes them.
Imports model/, mqtt/ and transform.identity only (no decoders, no Pillow).
"""
