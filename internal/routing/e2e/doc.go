// Package e2e holds the lab test of routes and DNS as a user meets them:
// the real meshd binary in network namespaces (internal/lab), an admin
// creating routes, nameserver groups and records with `meshd admin`, and
// agents that route to a network behind a routing peer and resolve each
// other's names. It has no code of its own; run it as root:
//
//	go test ./internal/routing/e2e/ -v
package e2e
