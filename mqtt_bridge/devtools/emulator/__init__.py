"""A local Vision Events API for the demo and the tests. It stands in for a server someone else wrote, so it
imports nothing of the product: its rules are its own, written from the API documentation.
"""
