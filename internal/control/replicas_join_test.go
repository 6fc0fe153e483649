package control_test

import (
	"fmt"
	"sync"
	"testing"

	"meshd/internal/control/controltest"
	"meshd/internal/pgtest"
)

// Peers joining at the same time through two replicas all get in, each
// with its own address: a replica whose pick collided with the other's
// picks again from elsewhere rather than from the address the other
// replica picks next; on PostgreSQL, two registrations with one setup key
// do not deadlock.
func TestConcurrentJoinsAcrossReplicas(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		concurrentJoins(t, controltest.NewReplicas(t, 2, controltest.Quiet()))
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := pgtest.Shared(t).NewDatabase(t)
		concurrentJoins(t, controltest.NewPGReplicas(t, dsn, 2, controltest.Quiet()))
	})
}

func concurrentJoins(t *testing.T, hs []*controltest.Harness) {
	const clients, each = 16, 15
	agents := make([]*controltest.Agent, clients*each)
	for i := range agents {
		agents[i] = hs[i%2].NewAgent(controltest.AgentOptions{Hostname: fmt.Sprintf("c-%d", i)})
	}
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for i := c; i < len(agents); i += clients {
				if err := agents[i].Login(""); err != nil {
					t.Errorf("join %d through replica %d: %v", i, i%2+1, err)
				}
			}
		})
	}
	wg.Wait()
	ips := map[string]string{}
	for _, a := range agents {
		if a.Self == nil {
			continue
		}
		if other, dup := ips[a.Self.OverlayIp]; dup {
			t.Errorf("%s and %s both have %s", other, a.Name, a.Self.OverlayIp)
		}
		ips[a.Self.OverlayIp] = a.Name
	}
}
