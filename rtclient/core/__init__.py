"""The protocol cores: plain objects with no threads and no I/O.

Server events go in, effects come out (events to send, waiters to settle, work to
start, counters); the sync shells in :mod:`rtclient.client` and :mod:`rtclient.live`
apply the effects. Everything here is tested without a thread or a socket.
"""
