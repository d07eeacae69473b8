"""The built-in benchmark (`mqtt-bridge bench`, `make bench`): the bridge against side-by-side baselines.

Modules: `sink` (a fast local Vision Events batch endpoint that records arrival times), `load` (the publisher
process), `baselines` (a paho receive-only counter and a naive in-memory batcher, written the way a hand-made
script would be, on purpose), `runner` (orchestration, measurement, report, chart).
"""
