"""The publisher helper for PLC-adjacent software: builds canonical detection messages and publishes them.
Imports model/ and mqtt/ only.
"""
