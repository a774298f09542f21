"""The application layer: configuration, runtime and the wiring of every stack."""
