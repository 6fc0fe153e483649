package nftfilter

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"meshd/internal/filter"
)

// Table is the filter table of one interface. It talks to nftables through
// netlink (no nft binary needed), always in the network namespace of the
// thread that called New, whichever goroutine calls it later. Safe for
// concurrent use.
type Table struct {
	iface, name string
	log         *zap.Logger

	mu     sync.Mutex
	netns  int // fd of the network namespace
	closed bool
	// chains: the installed table has the from/to chains (rules that are
	// not AllowAll), whose drop counters Drops reads.
	chains bool
	// dropsIn, dropsOut: what the tables replaced so far dropped.
	dropsIn, dropsOut uint64
	// last: the plan installed last (Apply skips an equal one while the
	// table exists).
	last    plan
	hasLast bool
}

// New returns the table of iface (which need not exist yet: the rules
// match its name). Nothing changes on the machine until Apply.
func New(iface string, log *zap.Logger) (*Table, error) {
	if iface == "" || len(iface) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("nftfilter: bad interface name %q", iface)
	}
	if log == nil {
		log = zap.NewNop()
	}
	fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("nftfilter: open own network namespace: %w", err)
	}
	return &Table{iface: iface, name: TableName(iface), log: log.Named("nftfilter"), netns: fd}, nil
}

// Name returns the table's name (family inet).
func (t *Table) Name() string { return t.name }

// Apply replaces the table with one that enforces r (nil: accept
// everything), atomically: packets see the old rules or the new ones,
// never none. Flows conntrack knows stay open. Rules equal to the ones
// installed change nothing (while the table exists). An error leaves the
// old table in place; it says what to do when nftables is missing.
func (t *Table) Apply(r *filter.Rules) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errors.New("nftfilter: apply after close")
	}
	p := render(t.iface, r)
	c, err := nftables.New(nftables.WithNetNSFd(t.netns), nftables.WithSockOptions(buffers(p)))
	if err != nil {
		return fmt.Errorf("nftfilter: nftables: %w", err)
	}
	if t.hasLast && reflect.DeepEqual(p, t.last) {
		// Most maps change no rule (relay credentials, routes, DNS):
		// leave the table, unless something removed it (a firewall
		// reload flushing the ruleset), which the next map repairs.
		if _, err := c.ListTableOfFamily(p.table, nftables.TableFamilyINet); err == nil {
			return nil
		}
	}
	// The drop counters go with the old table: keep what they counted.
	in, out, cerr := t.countersLocked(c)
	if cerr != nil {
		t.log.Debug("read drop counters", zap.Error(cerr))
	}
	tbl := &nftables.Table{Name: p.table, Family: nftables.TableFamilyINet}
	// add + delete + add in one batch: the old table (if any) goes and
	// the new one appears in one transaction.
	c.AddTable(tbl)
	c.DelTable(tbl)
	c.AddTable(tbl)
	sets := make(map[string]*nftables.Set, len(p.sets))
	for i, sd := range p.sets {
		st := &nftables.Set{Table: tbl, Name: sd.name, KeyType: nftables.TypeIPAddr,
			ID: uint32(i + 1)} // set IDs name sets within one batch; ours, not the library's global counter
		if sd.v6 {
			st.KeyType = nftables.TypeIP6Addr
		}
		// A netlink attribute holds at most 64 KiB: elements go in chunks.
		elems := make([]nftables.SetElement, len(sd.elems))
		for j, a := range sd.elems {
			elems[j] = nftables.SetElement{Key: a.AsSlice()}
		}
		first := elems[:min(len(elems), setChunk)]
		if err := c.AddSet(st, first); err != nil {
			return fmt.Errorf("nftfilter: set %s: %w", sd.name, err)
		}
		for rest := elems[len(first):]; len(rest) > 0; rest = rest[min(len(rest), setChunk):] {
			if err := c.SetAddElements(st, rest[:min(len(rest), setChunk)]); err != nil {
				return fmt.Errorf("nftfilter: set %s: %w", sd.name, err)
			}
		}
		sets[sd.name] = st
	}
	chains := make(map[string]*nftables.Chain, len(p.chains))
	accept := nftables.ChainPolicyAccept
	// Regular chains first: the base chains jump to them.
	for _, cd := range p.chains {
		if cd.hook == "" {
			chains[cd.name] = c.AddChain(&nftables.Chain{Name: cd.name, Table: tbl})
		}
	}
	for _, cd := range p.chains {
		if cd.hook == "" {
			continue
		}
		ch := &nftables.Chain{Name: cd.name, Table: tbl, Type: nftables.ChainTypeFilter,
			Priority: nftables.ChainPriorityFilter, Policy: &accept}
		switch cd.hook {
		case "input":
			ch.Hooknum = nftables.ChainHookInput
		case "forward":
			ch.Hooknum = nftables.ChainHookForward
		case "output":
			ch.Hooknum = nftables.ChainHookOutput
		}
		chains[cd.name] = c.AddChain(ch)
	}
	n := 0
	for _, cd := range p.chains {
		for _, l := range cd.lines {
			c.AddRule(&nftables.Rule{Table: tbl, Chain: chains[cd.name], Exprs: l.exprs(sets)})
			n++
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftfilter: install table inet %s: %w (kernel WireGuard needs nftables, nf_tables in the kernel, to enforce the firewall rules; or run with --wg-mode userspace)", p.table, err)
	}
	t.dropsIn, t.dropsOut = t.dropsIn+in, t.dropsOut+out
	t.chains = !r.AllowAll()
	t.last, t.hasLast = p, true
	t.log.Debug("firewall table installed", zap.String("table", p.table), zap.Int("rules", n), zap.Bool("accept_all", r.AllowAll()))
	return nil
}

// Drops returns how many packets the rules dropped coming from the peers
// (in) and going to them (out) since New, across Apply (the counters of the
// final drop rules; conntrack's own drops and the echo replies dropped
// before the rules are not counted).
func (t *Table) Drops() (in, out uint64, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return t.dropsIn, t.dropsOut, nil
	}
	c, err := nftables.New(nftables.WithNetNSFd(t.netns))
	if err != nil {
		return t.dropsIn, t.dropsOut, fmt.Errorf("nftfilter: nftables: %w", err)
	}
	in, out, err = t.countersLocked(c)
	return t.dropsIn + in, t.dropsOut + out, err
}

// countersLocked reads the drop counters of the installed table (zero when
// it has no rules). t.mu must be held.
func (t *Table) countersLocked(c *nftables.Conn) (in, out uint64, err error) {
	if !t.chains {
		return 0, 0, nil
	}
	tbl := &nftables.Table{Name: t.name, Family: nftables.TableFamilyINet}
	for _, ch := range []struct {
		name string
		n    *uint64
	}{{chainFrom, &in}, {chainTo, &out}} {
		rules, err := c.GetRules(tbl, &nftables.Chain{Name: ch.name, Table: tbl})
		if err != nil {
			return in, out, fmt.Errorf("nftfilter: read chain %s: %w", ch.name, err)
		}
		for _, r := range rules {
			for _, e := range r.Exprs {
				if ctr, ok := e.(*expr.Counter); ok {
					*ch.n += ctr.Packets
				}
			}
		}
	}
	return in, out, nil
}

// Close deletes the table (if it exists). The table cannot be used after.
func (t *Table) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	defer unix.Close(t.netns)
	c, err := nftables.New(nftables.WithNetNSFd(t.netns))
	if err != nil {
		return fmt.Errorf("nftfilter: nftables: %w", err)
	}
	tbl := &nftables.Table{Name: t.name, Family: nftables.TableFamilyINet}
	c.AddTable(tbl) // so that the delete never fails for a missing table
	c.DelTable(tbl)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftfilter: remove table inet %s: %w", t.name, err)
	}
	return nil
}

// setChunk is how many elements one netlink message adds to a set (an
// IPv6 element takes about 32 bytes of a 64 KiB attribute).
const setChunk = 1024

// buffers sizes the netlink socket for p's batch, as nft itself does: the
// whole batch goes out in one sendmsg, which fails (EMSGSIZE) beyond the
// socket's send buffer, and the kernel answers each message with an ack.
// CAP_NET_ADMIN, which changing nftables needs anyway, lets us force the
// size past net.core.wmem_max; without it the default stays.
func buffers(p plan) nftables.SockOption {
	size := 1 << 20
	for _, c := range p.chains {
		size += 512 * len(c.lines)
	}
	for _, st := range p.sets {
		size += 64 * len(st.elems)
	}
	return func(nc *netlink.Conn) error {
		raw, err := nc.SyscallConn()
		if err != nil {
			return nil
		}
		_ = raw.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size)
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
		})
		return nil
	}
}

// exprs are the line's netlink expressions, in the order String prints
// its matches; sets are the table's sets by name.
func (l line) exprs(sets map[string]*nftables.Set) []expr.Any {
	var out []expr.Any
	if l.iif != "" {
		out = append(out, ifname(expr.MetaKeyIIFNAME, l.iif)...)
	}
	if l.oif != "" {
		out = append(out, ifname(expr.MetaKeyOIFNAME, l.oif)...)
	}
	if l.established {
		out = append(out,
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: native32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: native32(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: native32(0)})
	}
	if l.src.IsValid() {
		out = append(out, addr(l.src, true)...)
	}
	if l.dst.IsValid() {
		out = append(out, addr(l.dst, false)...)
	}
	if l.srcSet != "" {
		out = append(out, lookup(sets[l.srcSet], l.set6, true)...)
	}
	if l.dstSet != "" {
		out = append(out, lookup(sets[l.dstSet], l.set6, false)...)
	}
	if l.hasProto {
		out = append(out,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{l.proto}})
	}
	if l.hasType {
		out = append(out,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{l.icmpType}})
	}
	if l.hasPorts {
		out = append(out, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
		lo, hi := be16(l.ports.Lo), be16(l.ports.Hi)
		if l.ports.Lo == l.ports.Hi {
			out = append(out, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: lo})
		} else {
			out = append(out, &expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: lo, ToData: hi})
		}
	}
	if l.counter {
		out = append(out, &expr.Counter{})
	}
	switch {
	case l.verdict == "return":
		out = append(out, &expr.Verdict{Kind: expr.VerdictReturn})
	case l.verdict == "drop":
		out = append(out, &expr.Verdict{Kind: expr.VerdictDrop})
	case len(l.verdict) > 5 && l.verdict[:5] == "jump ":
		out = append(out, &expr.Verdict{Kind: expr.VerdictJump, Chain: l.verdict[5:]})
	default:
		panic("nftfilter: unknown verdict " + l.verdict) // render makes only the three above
	}
	return out
}

// ifname matches the input or output interface name.
func ifname(key expr.MetaKey, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b},
	}
}

// addrField matches the IP version and loads the source or destination
// address into register 1 (load false: the version only).
func addrField(v6, src, load bool) []expr.Any {
	proto, off, n := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
	if src {
		off = 12
	}
	if v6 {
		proto, off, n = unix.NFPROTO_IPV6, 24, 16
		if src {
			off = 8
		}
	}
	out := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
	if load {
		out = append(out, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n})
	}
	return out
}

// addr matches the IP version and the source or destination prefix.
func addr(p netip.Prefix, src bool) []expr.Any {
	out := addrField(p.Addr().Is6(), src, p.Bits() > 0)
	if p.Bits() == 0 {
		return out
	}
	n := uint32(p.Addr().BitLen() / 8)
	if p.Bits() < p.Addr().BitLen() {
		mask := make([]byte, n)
		for i := 0; i < p.Bits(); i++ {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)})
	}
	return append(out, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()})
}

// lookup matches the IP version and the source or destination address
// being in the set.
func lookup(st *nftables.Set, v6, src bool) []expr.Any {
	return append(addrField(v6, src, true), &expr.Lookup{SourceRegister: 1, SetName: st.Name, SetID: st.ID})
}

func be16(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }

// native32 is v in host byte order (conntrack state bits are).
func native32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }
