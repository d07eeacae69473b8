"""Discovery: what a broker carries, heard read-only, turned into a starter config (issue 13 item 5).

`traits` classifies one message (format, image), `patterns` infers topic templates, `survey` collects what was
heard per pattern, `starter` writes the config. The listener itself is `mqtt.listener`; the command `cli.discover`.
"""
