"""Topic routing: the one template grammar (`{name}`, `{name*}`, `{payload.x}`, `{topic}`) and the router that
matches a topic to its route.
"""
