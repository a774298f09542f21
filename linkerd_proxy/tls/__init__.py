"""TLS and identity: the pieces between the transport and the protocol stacks.

``client_hello`` (pure) reads the SNI and ALPN of a ClientHello so the inbound
side can decide whether to terminate TLS; ``server`` and ``client`` drive TLS
handshakes over trio streams; ``identity_files`` prepares and loads the key, CSR
and trust anchors the Certify loop uses; ``verify`` checks a certificate chain
against the trust anchors for an identity. Importing this package imports none
of them, so pure users pay for nothing they do not use.
"""
