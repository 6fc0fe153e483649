package controltest

// RestartOn stops control, runs between (which may copy the database:
// nothing writes it meanwhile) and starts control again, on the same URL,
// with the database at target (a SQLite file or a PostgreSQL URL). Agents
// reconnect by themselves.
func (h *Harness) RestartOn(target string, between func()) {
	h.tb.Helper()
	h.stop()
	between()
	h.storeTarget = target
	h.start()
}
