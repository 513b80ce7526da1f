"""The threads that carry a session: the loop thread (the one portal into asyncio),
the janus bridge that hands sends to it, the dispatcher (and the pool of threads that
serves every dispatcher of a loop thread), and the waiter registry."""
