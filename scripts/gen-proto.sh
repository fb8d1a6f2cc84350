#!/usr/bin/env bash
# Regenerate liferaft/etcd/proto/*_pb2.py, *_pb2.pyi and rpc_pb2_grpc.py
# from the .proto files beside them (issue 16; docs/etcd.md, "The .proto
# files").  The generated modules are committed, so installing liferaft
# needs no protoc; tests/etcd/test_proto.py checks that they are exactly
# what this script makes.
#
# The output depends on the generator's version, so it is pinned: the dev
# extra installs grpcio-tools==$TOOLS (pyproject.toml).  Bump both together,
# and the kv extra's grpcio/protobuf floors with them (the generated code
# refuses an older runtime).
#
# Two rewrites after protoc, both so that the generated code cannot clash
# with anything else in the process:
#   * protoc runs from the repository root, so the modules import each
#     other as liferaft.etcd.proto.* (never a top-level `kv_pb2`);
#   * the descriptors go into liferaft's own pool (_pool.py) instead of
#     protobuf's default one: an etcd client library imported into the same
#     interpreter (aetcd, etcd3 ship their own etcdserverpb) registers the
#     same message names, and the default pool rejects a duplicate symbol.
# kv.proto has no service, so its empty kv_pb2_grpc.py is not kept.
#
# PYTHON picks the interpreter (default: .venv/bin/python).  OUT writes
# somewhere else instead of into the tree (the test uses it to compare).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
TOOLS=1.85.4
DIR=liferaft/etcd/proto
OUT="${OUT:-$ROOT/$DIR}"

have="$("$PY" -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))' 2>/dev/null || true)"
if [ "$have" != "$TOOLS" ]; then
  echo "gen-proto: needs grpcio-tools==$TOOLS (found: ${have:-none}): pip install 'grpcio-tools==$TOOLS'" >&2
  exit 1
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
cd "$ROOT"
"$PY" -m grpc_tools.protoc -I . --python_out="$TMP" --pyi_out="$TMP" --grpc_python_out="$TMP" \
  "$DIR/kv.proto" "$DIR/rpc.proto"

mkdir -p "$OUT"
for f in kv_pb2.py rpc_pb2.py; do
  sed -e 's/^_sym_db = _symbol_database.Default()$/&\nfrom liferaft.etcd.proto._pool import POOL as _POOL/' \
      -e 's/= _descriptor_pool.Default().AddSerializedFile(/= _POOL.AddSerializedFile(/' \
      "$TMP/$DIR/$f" > "$OUT/$f"
  grep -q '^DESCRIPTOR = _POOL.AddSerializedFile(' "$OUT/$f" \
    || { echo "gen-proto: the pool rewrite missed $f (did protoc's output change?)" >&2; exit 1; }
done
cp "$TMP/$DIR/kv_pb2.pyi" "$TMP/$DIR/rpc_pb2.pyi" "$TMP/$DIR/rpc_pb2_grpc.py" "$OUT/"
echo "gen-proto: wrote $OUT"
