"""Generated protobuf and gRPC code for the peer service (never edited by hand; `make proto`)."""
