"""HTTP/1.x: a sans-IO codec over llhttp (``codec``) and the trio drivers using it.

See :mod:`linkerd_proxy.http.h1.codec` for the event model.
"""
