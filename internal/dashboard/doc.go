// Package dashboard is meshd's web dashboard: HTML pages, rendered on the
// server, over control's admin API. Control mounts it on a listener of its
// own (--dashboard-listen), with control's TLS. Only roles/control imports it.
//
// Why server-rendered HTML (html/template) with one small hand-written
// JavaScript file, all embedded with go:embed: `go build` alone builds it,
// there is no Node toolchain or committed bundle to keep in step, every form
// works without JavaScript (keyboard and screen readers get plain HTML
// forms), and the whole of it adds tens of kilobytes to the binary. The
// script only adds what HTML cannot do: the live peers table (server-sent
// events carrying a table body the server rendered), copying the join line,
// and confirming deletions.
//
// One authorization path: the dashboard holds no rights of its own. A
// session remembers the admin token it was opened with (in memory, never in
// the cookie) and every page calls the admin API with it, in process,
// through the same handler `meshd admin` reaches over the network (token
// check, validation, audit log). What the token cannot do with `meshd
// admin`, the dashboard cannot do. The browser holds only a random session
// id in a cookie (HttpOnly, Secure, SameSite=Strict); every POST carries the
// session's CSRF token, checked on the server.
//
// Sign-in takes an admin token; Options.Providers adds "Sign in with …"
// buttons, and StartSession is how such a login opens a session once it has
// a credential the admin API accepts.
package dashboard
