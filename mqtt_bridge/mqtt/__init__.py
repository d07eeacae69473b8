"""MQTT on paho-mqtt, the only paho importer: the client factory (protocol, session, TLS), the subscriber with
manual acks, and the small QoS 1 publisher.
"""
