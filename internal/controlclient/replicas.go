package controlclient

import (
	"fmt"
	"slices"

	"meshd/api/control/v1/controlv1connect"
	"meshd/internal/rpcclient"
)

// URL is the control replica in use (or tried next).
func (c *Client) URL() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// URLs returns every control replica the client knows, in the order they
// are tried.
func (c *Client) URLs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.urls)
}

// setURLsLocked makes urls (without empties and repeats) the replicas to
// try, Options.URL and the one in use staying among them: the first is
// where the user pointed the agent, which may be a name in front of the
// replicas that no map lists.
func (c *Client) setURLsLocked(urls []string) {
	out := make([]string, 0, len(urls)+2)
	for _, u := range append(append([]string{c.opts.URL}, urls...), c.cur) {
		if u != "" && !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	c.urls = out
}

// advance moves from failed, when it is still the replica in use, to the
// next one and returns the replica in use.
func (c *Client) advance(failed string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == failed && len(c.urls) > 1 {
		i := slices.Index(c.urls, failed) // -1: gone from the list, start over
		c.cur = c.urls[(i+1)%len(c.urls)]
	}
	return c.cur
}

// rpcFor returns the client of the replica at url, made on first use. One
// pin serves every replica: they share one certificate.
func (c *Client) rpcFor(url string) (controlv1connect.ControlServiceClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rpc, ok := c.rpcs[url]; ok {
		return rpc, nil
	}
	hc := c.opts.HTTPClient
	if hc == nil {
		var err error
		if hc, err = rpcclient.New(url, c.opts.Pin); err != nil {
			return nil, fmt.Errorf("controlclient: %w", err)
		}
	}
	rpc := controlv1connect.NewControlServiceClient(hc, url)
	c.rpcs[url] = rpc
	return rpc, nil
}
