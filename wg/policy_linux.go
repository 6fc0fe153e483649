package wg

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"meshd/internal/fwmark"
)

// Policy routing: the routes to the peers' allowed IPs go into
// fwmark.Table, and one `ip rule` per address family sends every packet
// without fwmark.Mark there first (`not fwmark 0x510000/0xff0000 lookup
// 51820`); the agent's own sockets carry the mark and use the main table
// only. So a routed network that contains the server, a relay or a peer's
// public address takes the machine's traffic there into the mesh but
// leaves the tunnel's own packets on the underlay, as Tailscale and
// NetBird do on Linux.

// policyRule is the rule of one family.
func policyRule(family int) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = family
	r.Priority = fwmark.RulePriority
	r.Table = fwmark.Table
	r.Mark = fwmark.Mark
	mask := fwmark.Mask
	r.Mask = &mask
	r.Invert = true
	return r
}

// hasPolicyRule reports whether the family's rule is installed already
// (another agent in this network namespace, or one that crashed).
func hasPolicyRule(family int) (bool, error) {
	rules, err := netlink.RuleListFiltered(family, &netlink.Rule{Table: fwmark.Table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return false, err
	}
	for _, r := range rules {
		if r.Priority == fwmark.RulePriority && r.Invert && r.Mark == fwmark.Mark {
			return true, nil
		}
	}
	return false, nil
}

// installPolicy adds the rules. IPv4's must succeed; IPv6's may fail when
// the machine has no IPv6 (its routes then fail too, and say so).
func installPolicy(log *zap.Logger) error {
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		ok, err := hasPolicyRule(family)
		if err == nil && !ok {
			err = netlink.RuleAdd(policyRule(family))
			if errors.Is(err, syscall.EEXIST) {
				err = nil
			}
		}
		if err != nil {
			if family == netlink.FAMILY_V6 {
				log.Debug("no IPv6 policy rule", zap.Error(err))
				continue
			}
			return fmt.Errorf("wg: ip rule not fwmark %#x lookup %d: %w", fwmark.Mark, fwmark.Table, err)
		}
	}
	// Without it only strict reverse-path filtering suffers: warn, go on.
	if err := installConnmark(); err != nil {
		log.Warn("cannot keep the mark of the agent's connections for their answers; with strict reverse-path filtering (rp_filter=1) a routed network that holds the server or a peer cuts this agent off", zap.Error(err))
	}
	return nil
}

// removePolicy removes the rules once no link has routes left in the
// table: another agent in the same namespace may still use them.
func removePolicy(log *zap.Logger) {
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteListFiltered(family, &netlink.Route{Table: fwmark.Table}, netlink.RT_FILTER_TABLE)
		if err != nil || len(routes) > 0 {
			continue
		}
		if family == netlink.FAMILY_V4 {
			if err := removeConnmark(); err != nil {
				log.Debug("remove connmark table", zap.Error(err))
			}
		}
		if err := netlink.RuleDel(policyRule(family)); err != nil && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.EAFNOSUPPORT) {
			log.Debug("remove policy rule", zap.Int("family", family), zap.Error(err))
		}
	}
}

// mainRouteExists reports whether the main table routes exactly p
// already (typically the machine's own LAN): the mesh leaves it alone, as
// it did when its routes were in the main table.
func mainRouteExists(p netip.Prefix) bool {
	family := netlink.FAMILY_V4
	if p.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	rs, err := netlink.RouteListFiltered(family, &netlink.Route{Dst: prefixNet(p), Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	return err == nil && len(rs) > 0
}
