// Package netnstest makes throwaway network namespaces for the root tier of
// tests (internal/routing, internal/filter/nftfilter, wg): each is named
// after a prefix, the process and a counter, is deleted in cleanup (also
// when the test fails), and runs code on an OS thread of its own inside the
// namespace. The namespace/NAT lab that runs the real binary is
// internal/lab; this is the small helper for package-level tests. Linux
// only.
package netnstest
