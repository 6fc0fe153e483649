package admin

import (
	"fmt"
	"math"

	"github.com/urfave/cli/v2"
)

// checkNumberFlags refuses a number flag whose value does not fit the API
// field it goes to: every int flag of `meshd admin` is an int32 of the API
// and every uint flag a uint32, and a plain conversion would wrap
// (--usage-limit 4294967297 would become 1, --ttl 4294967296 zero).
func checkNumberFlags(c *cli.Context) error {
	for _, f := range c.Command.Flags {
		name := f.Names()[0]
		if !c.IsSet(name) {
			continue
		}
		switch f.(type) {
		case *cli.IntFlag:
			if v := c.Int(name); v < math.MinInt32 || v > math.MaxInt32 {
				return fmt.Errorf("--%s %d is out of range: at most %d", name, v, math.MaxInt32)
			}
		case *cli.UintFlag:
			if v := c.Uint(name); v > math.MaxUint32 {
				return fmt.Errorf("--%s %d is out of range: at most %d", name, v, uint64(math.MaxUint32))
			}
		}
	}
	return nil
}
