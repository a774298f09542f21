"""The ``linkerd-proxy`` binary: environment in, sidecar running."""
