"""The `mqtt-bridge` command: argument parsing and one module per command family.
"""
