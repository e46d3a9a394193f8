"""Protocol codecs: the small interface between a connection's bytes and the protocol-agnostic router."""
