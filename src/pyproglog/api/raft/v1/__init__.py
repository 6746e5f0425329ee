"""Generated protobuf and gRPC code for proglog.raft.v1 (never edited by hand; `make proto`)."""
