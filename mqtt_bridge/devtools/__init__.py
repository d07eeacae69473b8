"""Development tools, never imported by product code: the embedded broker (amqtt), the Vision Events emulator, the
demo, the simulated line and the benchmark.
"""
