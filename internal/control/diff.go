package control

import (
	"reflect"
	"time"

	"meshd/internal/netmap"
	"meshd/store"
)

// A replica reloads an account when another one changed it. What it loads
// may already hold changes whose messages are still on their way (and one
// whose message was lost), so the change to distribute is worked out from
// what memory held and what the store holds, not only taken from the
// messages: each message then finds its change already distributed, and
// no neighbour of a peer deleted meanwhile keeps it in its map.

// diff is what maps may see changed between the entities of memory (old)
// and those just loaded into a. Callers hold mu.
func (a *account) diff(old *account) netmap.Change {
	var c netmap.Change
	oa, na := old.a, a.a
	oa.Serial, na.Serial = 0, 0
	if !same(oa, na) || !sameMaps(old.records, a.records) {
		return netmap.Change{All: true}
	}
	for id, p := range a.peers {
		switch q := old.peers[id]; {
		case q == nil:
			c.Peers = append(c.Peers, id)
		case !same(*p, *q):
			np, nq := *p, *q
			np.LastSeen, nq.LastSeen = time.Time{}, time.Time{}
			if same(np, nq) {
				c.Entries = append(c.Entries, id) // last seen only
			} else {
				c.Peers = append(c.Peers, id)
			}
		}
	}
	for id := range old.peers {
		if a.peers[id] == nil {
			c.Peers = append(c.Peers, id)
		}
	}
	eachChanged(old.policies, a.policies, func(ps ...*store.Policy) { c.Merge(a.policyChange(ps...)) })
	eachChanged(old.routes, a.routes, func(rs ...*store.Route) { c.Merge(routeChange(rs...)) })
	eachChanged(old.ns, a.ns, func(ns ...*store.NameserverGroup) { c.Merge(nsChange(ns...)) })
	return c
}

// eachChanged calls fn with the old and new versions of every entity that
// was added, removed or changed.
func eachChanged[T any](old, cur map[string]*T, fn func(...*T)) {
	for id, x := range cur {
		if y := old[id]; y == nil {
			fn(x)
		} else if !same(*x, *y) {
			fn(y, x)
		}
	}
	for id, y := range old {
		if cur[id] == nil {
			fn(y)
		}
	}
}

func sameMaps[T any](x, y map[string]*T) bool {
	if len(x) != len(y) {
		return false
	}
	for id, v := range x {
		if w := y[id]; w == nil || !same(*v, *w) {
			return false
		}
	}
	return true
}

var timeType = reflect.TypeOf(time.Time{})

// same compares two entities field by field, times by the instant they
// name (one loaded from the store has no monotonic reading or zone).
func same[T any](x, y T) bool { return sameValue(reflect.ValueOf(x), reflect.ValueOf(y)) }

func sameValue(x, y reflect.Value) bool {
	if x.Type() == timeType {
		return x.Interface().(time.Time).Equal(y.Interface().(time.Time))
	}
	switch x.Kind() {
	case reflect.Struct:
		for i := range x.NumField() {
			if !sameValue(x.Field(i), y.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Slice:
		if x.Len() != y.Len() {
			return false
		}
		for i := range x.Len() {
			if !sameValue(x.Index(i), y.Index(i)) {
				return false
			}
		}
		return true
	case reflect.String:
		return x.String() == y.String()
	case reflect.Bool:
		return x.Bool() == y.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return x.Int() == y.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return x.Uint() == y.Uint()
	}
	return reflect.DeepEqual(x.Interface(), y.Interface())
}
