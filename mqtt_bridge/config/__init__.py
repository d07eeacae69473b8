"""The configuration: pydantic sections and route models, and `load()`, the one entry that reads YAML, interpolates
`${ENV}`, reads secret files and validates everything. Nothing else reads the environment.
"""
