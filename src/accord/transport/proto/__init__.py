"""Generated protobuf/gRPC modules for accord.v1 (regenerate with scripts/gen_proto.sh)."""
