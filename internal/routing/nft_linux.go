package routing

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// New returns the manager of cfg.Iface's routing. Nothing changes on the
// machine until Apply.
func New(cfg Config) (*Manager, error) {
	if cfg.Iface == "" {
		return nil, errors.New("routing: no interface")
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	return newManager(cfg, &nftFirewall{table: TableName(cfg.Iface), iface: cfg.Iface, log: cfg.Log}, sharedForwarding(cfg.Log)), nil
}

// namespaces holds the forwarding state of each network namespace this
// process has managers in, keyed by the namespace's identity.
var namespaces = struct {
	sync.Mutex
	m map[string]*forwarding
}{m: map[string]*forwarding{}}

func sharedForwarding(log *zap.Logger) *forwarding {
	id, _ := os.Readlink("/proc/thread-self/ns/net")
	namespaces.Lock()
	defer namespaces.Unlock()
	f := namespaces.m[id]
	if f == nil {
		f = newForwarding(procSys{}, log)
		namespaces.m[id] = f
	}
	return f
}

// procSys is /proc/sys. Its net/ entries belong to the network namespace
// of the thread that opens them.
type procSys struct{}

func (procSys) Get(key string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", key))
	return strings.TrimSpace(string(b)), err
}

func (procSys) Set(key, value string) error {
	return os.WriteFile(filepath.Join("/proc/sys", key), []byte(value+"\n"), 0o644)
}

// nftFirewall keeps the table through netlink (no nft binary needed).
type nftFirewall struct {
	table, iface string
	log          *zap.Logger
	warned       bool
}

func (f *nftFirewall) conn() (*nftables.Conn, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("routing: nftables: %w", err)
	}
	return c, nil
}

func (f *nftFirewall) Apply(p Plan) error {
	c, err := f.conn()
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: p.Table, Family: nftables.TableFamilyINet}
	// add + delete + add in one transaction: the old table (if any) goes
	// and the new one appears atomically.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	accept := nftables.ChainPolicyAccept
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	nat := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept})
	for _, r := range p.Routes {
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: concat(
			ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, p.Iface), daddr(r.Network),
			[]expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictAccept}})})
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: concat(
		ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, p.Iface),
		[]expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}})})
	for _, r := range p.Routes {
		if !r.Masquerade {
			continue
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: nat, Exprs: concat(
			ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, p.Iface), ifname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, p.Iface),
			daddr(r.Network), []expr.Any{&expr.Counter{}, &expr.Masq{}})})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("routing: install nftables table inet %s: %w", p.Table, err)
	}
	f.warnOtherDrops(c)
	return nil
}

func (f *nftFirewall) Remove() error {
	c, err := f.conn()
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: f.table, Family: nftables.TableFamilyINet}
	c.AddTable(t) // so that the delete never fails for a missing table
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("routing: remove nftables table inet %s: %w", f.table, err)
	}
	return nil
}

// warnOtherDrops logs, once, forward chains of other tables whose policy
// drops: they drop routed packets whatever our table accepts.
func (f *nftFirewall) warnOtherDrops(c *nftables.Conn) {
	if f.warned {
		return
	}
	chains, err := c.ListChains()
	if err != nil {
		return
	}
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name == f.table || ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookForward ||
			ch.Policy == nil || *ch.Policy != nftables.ChainPolicyDrop {
			continue
		}
		f.warned = true
		f.log.Warn(fmt.Sprintf("another firewall drops forwarded packets by default (chain %s of table %s); "+
			"routed traffic passes only if it accepts iifname %q and oifname %q", ch.Name, ch.Table.Name, f.iface, f.iface))
	}
}

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// ifname matches the input or output interface name.
func ifname(key expr.MetaKey, op expr.CmpOp, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: b},
	}
}

// daddr matches the network protocol and the destination prefix.
func daddr(p netip.Prefix) []expr.Any {
	proto, off, n := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
	if p.Addr().Is6() {
		proto, off, n = unix.NFPROTO_IPV6, 24, 16
	}
	out := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
	if p.Bits() == 0 {
		return out
	}
	out = append(out, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n})
	if p.Bits() < p.Addr().BitLen() {
		mask := make([]byte, n)
		for i := 0; i < p.Bits(); i++ {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)})
	}
	return append(out, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()})
}
