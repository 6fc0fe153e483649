package pgcluster

// SetBatchLimit sets how many messages one round trip may carry and
// returns the previous limit.
func SetBatchLimit(n int) int {
	old := batchLimit
	batchLimit = n
	return old
}
