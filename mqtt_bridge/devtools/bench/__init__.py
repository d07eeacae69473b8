"""The built-in benchmark (`mqtt-bridge bench`, `make bench`): the bridge against side-by-side baselines.
"""
