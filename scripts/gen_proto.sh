#!/usr/bin/env bash
# Regenerates the Python protobuf/gRPC modules from src/accord/transport/proto/accord.proto.
# Needs grpcio-tools (a dev extra): .venv/bin/pip install -e '.[dev]'
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
out=src/accord/transport/proto
"$PY" -m grpc_tools.protoc \
  -I "$out" \
  --python_out="$out" \
  --pyi_out="$out" \
  --grpc_python_out="$out" \
  "$out/accord.proto"
# protoc writes an absolute import; the package needs a package-relative one.
sed -i -E 's/^import accord_pb2 as accord__pb2$/from accord.transport.proto import accord_pb2 as accord__pb2/' \
  "$out/accord_pb2_grpc.py"
grep -q '^from accord.transport.proto import accord_pb2 as accord__pb2$' "$out/accord_pb2_grpc.py" || {
  echo "gen_proto.sh: could not rewrite the import in $out/accord_pb2_grpc.py" >&2
  exit 1
}
echo "generated $out/accord_pb2.py, accord_pb2.pyi, accord_pb2_grpc.py"
