"""HTTP for the proxy: version detection, the HTTP/1 and HTTP/2 codecs and drivers.

Sits above ``transport`` (byte streams) and below the inbound/outbound stacks and
the admin server. Protocol code here is sans-IO (``h1/codec.py``); the drivers that
own sockets live beside it.
"""
