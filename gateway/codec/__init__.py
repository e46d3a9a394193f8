"""Protocol codecs: the small interface between a connection's bytes and the protocol-agnostic router.

``base`` is the interface. HTTP/1.1: ``http1`` (httptools/llhttp, the default ``codec: http1``) and
``http1_h11`` (the h11 reference, ``codec: gateway.codec.http1_h11:H11CodecFactory``), sharing
``http1_fields``; ``http1_writers`` writes messages by h11's rules for the llhttp codec.
"""
