"""The threads that carry a session: the loop thread (the one portal into asyncio),
the janus bridge that hands sends to it, the dispatcher, and the waiter registry."""
