package wg

import (
	"fmt"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"

	"meshd/internal/fwmark"
)

// Strict reverse-path filtering (rp_filter=1, the default of some
// distributions) checks an incoming packet's source against the route
// back to it, looked up without a mark: for a server or peer inside a
// routed network that route is the mesh's, so the kernel would drop the
// answers to the agent's own marked traffic. As wg-quick does, the mark
// of the agent's connections is kept in conntrack and put back on their
// incoming packets before routing, and src_valid_mark makes the
// reverse-path check use it.

// connmarkTable is the nftables table that does it, one per namespace.
const connmarkTable = "meshd-fwmark"

func native32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

// installConnmark adds the table and turns on src_valid_mark.
func installConnmark() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("wg: nftables: %w", err)
	}
	t := &nftables.Table{Name: connmarkTable, Family: nftables.TableFamilyINet}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	accept := nftables.ChainPolicyAccept
	pre := c.AddChain(&nftables.Chain{Name: "restore", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle, Policy: &accept})
	post := c.AddChain(&nftables.Chain{Name: "save", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityMangle, Policy: &accept})
	// ct mark & MASK == MARK: meta mark set meta mark & ~MASK | MARK
	c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(fwmark.Mask), Xor: native32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: native32(fwmark.Mark)},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(^fwmark.Mask), Xor: native32(fwmark.Mark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}})
	// meta mark & MASK == MARK: ct mark set ct mark & ~MASK | MARK
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(fwmark.Mask), Xor: native32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: native32(fwmark.Mark)},
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(^fwmark.Mask), Xor: native32(fwmark.Mark)},
		&expr.Ct{Key: expr.CtKeyMARK, SourceRegister: true, Register: 1},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("wg: nftables table inet %s: %w", connmarkTable, err)
	}
	const key = "/proc/sys/net/ipv4/conf/all/src_valid_mark"
	if b, err := os.ReadFile(key); err == nil && strings.TrimSpace(string(b)) != "1" {
		if err := os.WriteFile(key, []byte("1\n"), 0o644); err != nil {
			return fmt.Errorf("wg: %s: %w", key, err)
		}
	}
	return nil
}

// removeConnmark removes the table (src_valid_mark stays: it changes
// nothing for unmarked packets).
func removeConnmark() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("wg: nftables: %w", err)
	}
	t := &nftables.Table{Name: connmarkTable, Family: nftables.TableFamilyINet}
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("wg: remove nftables table inet %s: %w", connmarkTable, err)
	}
	return nil
}
