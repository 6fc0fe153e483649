package pgcluster

import "context"

// SetBatchLimit sets how many messages one round trip may carry and
// returns the previous limit.
func SetBatchLimit(n int) int {
	old := batchLimit
	batchLimit = n
	return old
}

// PublishSetting reads a setting on the connections that send NOTIFYs.
func PublishSetting(c *Cluster, name string) (string, error) {
	var v string
	err := c.pub.QueryRow(context.Background(), "SELECT current_setting($1)", name).Scan(&v)
	return v, err
}
