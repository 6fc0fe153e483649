package testutil

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Forwarder relays TCP connections from its own loopback port to a target:
// a second address of one server (another control replica, as clients see
// it), which a test can kill as kill -9 kills a process.
type Forwarder struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	dead  bool
	wg    sync.WaitGroup
}

// Forward starts a forwarder to target on listen ("127.0.0.1:0" when
// empty); tb's cleanup kills it.
func Forward(tb testing.TB, listen, target string) *Forwarder {
	tb.Helper()
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		tb.Fatal(err)
	}
	f := &Forwarder{ln: ln}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			if f.dead { // killed while this one was dialing
				f.mu.Unlock()
				c.Close()
				up.Close()
				continue
			}
			f.conns = append(f.conns, c, up)
			f.mu.Unlock()
			f.wg.Add(2)
			go func() { defer f.wg.Done(); io.Copy(up, c); up.Close() }()
			go func() { defer f.wg.Done(); io.Copy(c, up); c.Close() }()
		}
	}()
	tb.Cleanup(f.Kill)
	return f
}

// Addr is the forwarder's address.
func (f *Forwarder) Addr() string { return f.ln.Addr().String() }

// URL is "https://" and Addr.
func (f *Forwarder) URL() string { return "https://" + f.Addr() }

// Kill stops the forwarder: its port refuses, its connections break.
// Calling it again does nothing.
func (f *Forwarder) Kill() {
	f.ln.Close()
	f.mu.Lock()
	f.dead = true
	for _, c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}
