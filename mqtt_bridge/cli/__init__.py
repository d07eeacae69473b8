"""The `mqtt-bridge` command: `main` (flags, dispatch, exit codes), `common` (loading the config for a command,
errors to exit codes), and one module per command family: `run` (run, check-config, schema), `decode`, `dlq`,
`export`, `status`, `use_cases`, and `dev` (demo, broker, emulator, bench, publish; the only importer of devtools).
"""
