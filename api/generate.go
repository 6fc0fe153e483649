// Package api holds meshd's contracts: the protobuf definitions of every
// service the roles speak, and the Go code generated from them. The generated
// code is committed; `go generate ./api` rewrites it, and CI fails when the
// committed code differs from what the .proto files generate.
package api

//go:generate bash gen.sh
