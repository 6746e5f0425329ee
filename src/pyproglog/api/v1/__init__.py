"""Generated protobuf and gRPC code for log.v1 (never edited by hand; `make proto`)."""
