#!/usr/bin/env bash
# Regenerates the Go code of every contract under api/. Needs protoc
# (Debian: protobuf-compiler); the Go plugins are the versions pinned as
# tools in go.mod. Run from anywhere: `go generate ./api` or `bash api/gen.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
go build -o "$bin/protoc-gen-connect-go" connectrpc.com/connect/cmd/protoc-gen-connect-go
find api -name '*.pb.go' -delete
find api -name '*.connect.go' -delete
protos=$(find api -name '*.proto' | sort)
PATH="$bin:$PATH" protoc -I . \
  --go_out=. --go_opt=module=meshd \
  --connect-go_out=. --connect-go_opt=module=meshd \
  $protos
