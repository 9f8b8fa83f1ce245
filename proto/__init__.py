"""mittd.proto: the gRPC API (mittd.v1) and its generated stubs."""
