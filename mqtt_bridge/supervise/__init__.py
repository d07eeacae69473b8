"""The bridge in processes: the supervisor (`mqtt-bridge run`), its receiver and worker children, and what they tell
each other (design §3). Part of the composition root, beside `service`."""
