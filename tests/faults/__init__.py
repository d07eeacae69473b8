"""The fault-injection suite (issue 6, reliability.md §5): kills, starves and poisons the bridge, and checks that
nothing the broker acknowledged is lost or duplicated at the API. Run it alone with `make faults`."""
