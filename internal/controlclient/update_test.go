package controlclient

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	controlv1 "meshd/api/control/v1"
)

func peer(key string, online bool) *controlv1.RemotePeer {
	return &controlv1.RemotePeer{PublicKey: key, Name: key, AllowedIps: []string{key + "/32"}, Online: online}
}

func fullMap(serial uint64, peers ...*controlv1.RemotePeer) *controlv1.NetworkMap {
	return &controlv1.NetworkMap{Serial: serial, Self: &controlv1.SelfConfig{Name: "me"}, Peers: peers,
		FirewallRules: []*controlv1.FirewallRule{{PeerIp: "a"}}, SignalUrl: "https://signal.test",
		Relays: []*controlv1.RelayServer{{Urls: []string{"stun:x"}}}}
}

func update(serial, base uint64, upsert []*controlv1.RemotePeer, removed ...string) *controlv1.SyncResponse {
	return &controlv1.SyncResponse{Update: &controlv1.MapUpdate{Serial: serial, BaseSerial: base, UpsertPeers: upsert, RemovedPeerKeys: removed}}
}

// recorder collects the maps Sync hands over and cancels after the one
// with serial last.
type recorder struct {
	mu     sync.Mutex
	maps   []*controlv1.NetworkMap
	cancel context.CancelFunc
	last   uint64
}

func (r *recorder) onMap(m *controlv1.NetworkMap) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.maps = append(r.maps, m)
	if m.Serial == r.last {
		r.cancel()
	}
}

func (r *recorder) serials() []uint64 {
	var out []uint64
	for _, m := range r.maps {
		out = append(out, m.Serial)
	}
	return out
}

func runSync(t *testing.T, c *Client, last uint64) *recorder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &recorder{cancel: cancel, last: last}
	if err := c.Sync(ctx, r.onMap, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sync = %v", err)
	}
	return r
}

// Updates are applied to the map held and handed over as whole maps; the
// maps handed over before stay as they were; older updates are dropped.
func TestSyncAppliesUpdates(t *testing.T) {
	f := &fakeControl{sync: func(ctx context.Context, call int, s *connect.ServerStream[controlv1.SyncResponse]) error {
		for _, r := range []*controlv1.SyncResponse{
			{Map: fullMap(5, peer("a", true), peer("b", true), peer("c", true))},
			update(6, 5, []*controlv1.RemotePeer{peer("b", false)}),
			update(4, 3, []*controlv1.RemotePeer{peer("a", false)}), // older: dropped
			update(8, 6, []*controlv1.RemotePeer{peer("c", false), peer("a", false)}, "b", "gone-already"),
		} {
			if err := s.Send(r); err != nil {
				return err
			}
		}
		<-ctx.Done()
		return nil
	}}
	c := newFake(t, f, Options{})
	r := runSync(t, c, 8)
	if !slices.Equal(r.serials(), []uint64{5, 6, 8}) {
		t.Fatalf("maps %v", r.serials())
	}
	want6 := fullMap(6, peer("a", true), peer("b", false), peer("c", true))
	want8 := fullMap(8, peer("a", false), peer("c", false))
	if !proto.Equal(r.maps[1], want6) || !proto.Equal(r.maps[2], want8) {
		t.Fatalf("maps after updates:\n%v\n%v", r.maps[1], r.maps[2])
	}
	if want5 := fullMap(5, peer("a", true), peer("b", true), peer("c", true)); !proto.Equal(r.maps[0], want5) {
		t.Fatalf("the first map changed under the agent: %v", r.maps[0])
	}
	if st := c.Stats(); st != (Stats{Maps: 1, Updates: 2}) || c.Serial() != 8 || f.calls.Load() != 1 {
		t.Fatalf("stats %+v, serial %d, streams %d", st, c.Serial(), f.calls.Load())
	}
	if !f.req.Load().AcceptUpdates {
		t.Fatal("the client did not ask for updates")
	}
	// An agent told not to ask for them does not.
	c = newFake(t, f, Options{FullMapsOnly: true})
	f.calls.Store(0)
	runSync(t, c, 5)
	if f.req.Load().AcceptUpdates {
		t.Fatal("FullMapsOnly asked for updates")
	}
}

// An update that does not fit the map held is never applied: the client
// opens a new stream, which starts with a full map.
func TestSyncResyncsOnUpdateItCannotApply(t *testing.T) {
	for name, bad := range map[string]*controlv1.SyncResponse{
		"other base":  update(7, 4, []*controlv1.RemotePeer{peer("b", false)}),
		"unknown key": update(7, 5, []*controlv1.RemotePeer{peer("z", true)}),
	} {
		t.Run(name, func(t *testing.T) {
			f := &fakeControl{}
			f.sync = func(ctx context.Context, call int, s *connect.ServerStream[controlv1.SyncResponse]) error {
				msgs := map[int][]*controlv1.SyncResponse{
					1: {{Map: fullMap(5, peer("a", true), peer("b", true))}, bad,
						update(8, 7, []*controlv1.RemotePeer{peer("a", false)})},
					2: {{Map: fullMap(9, peer("a", true), peer("b", false))}, update(10, 9, []*controlv1.RemotePeer{peer("a", false)})},
				}[call]
				for _, m := range msgs {
					if err := s.Send(m); err != nil {
						return err
					}
				}
				<-ctx.Done()
				return nil
			}
			c := newFake(t, f, Options{})
			r := runSync(t, c, 10)
			if !slices.Equal(r.serials(), []uint64{5, 9, 10}) {
				t.Fatalf("maps %v, want 5 then the new stream's 9 and 10", r.serials())
			}
			if want := fullMap(10, peer("a", false), peer("b", false)); !proto.Equal(r.maps[2], want) {
				t.Fatalf("map 10 = %v", r.maps[2])
			}
			if st := c.Stats(); st != (Stats{Maps: 2, Updates: 1, Resyncs: 1}) || f.calls.Load() != 2 {
				t.Fatalf("stats %+v after %d streams", st, f.calls.Load())
			}
		})
	}
}
