package wg

// helperMain runs the test binary as a helper process when asked to; it
// reports whether it did.
func helperMain() bool { return false }
