"""Discovery: what the control plane says about destinations.

``updates`` is the vocabulary shared by resolvers and balancers; ``destination``,
``profiles`` and ``policy`` turn the control plane's streams into it.
"""
