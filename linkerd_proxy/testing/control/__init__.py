"""The fake control plane's parts, behind :mod:`linkerd_proxy.testing.control_plane`.

- :mod:`.values`: endpoints and profile parts as a test writes them, and their messages.
- :mod:`.streams`: the fan-out of updates to open server streams (fail, go silent).
- :mod:`.destination`: ``Destination.Get`` and ``GetProfile``.
- :mod:`.policy`: ``OutboundPolicies.Watch`` and ``InboundServerPolicies.WatchPort``.
- :mod:`.identity`: a test CA answering ``Identity.Certify``.
- :mod:`.server`: one grpclib server serving all of them, stopped and started at will.
- :mod:`.admin`: the command surface and the JSON-over-HTTP admin API of the process mode.
- :mod:`.facade`: the trio-side methods tests call, over either way of running.

All but the facade runs on an asyncio loop (the control plane is a grpclib server); the state
is plain Python mutated by synchronous methods called on that loop. Tests drive it
through :mod:`linkerd_proxy.testing.control_plane`, never these modules directly.
"""
