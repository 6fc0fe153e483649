package signal

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"go.uber.org/zap"

	signalv1 "meshd/api/signal/v1"
	"meshd/internal/cluster"
	"meshd/internal/keys"
	"meshd/internal/seal"
)

// outlink packs the records for one channel into payloads and publishes
// them, in order, from one goroutine.
type outlink struct {
	r       *clusterRouter
	channel string
	kick    chan struct{}

	mu     sync.Mutex
	frames []frame // frames[len-1] is being filled
	gone   bool    // its goroutine has ended: make a new link
}

type frame struct {
	b        []byte
	envelops int // envelope records in b
}

// send queues rec for channel; false when too much waits for it already.
func (r *clusterRouter) send(channel string, rec []byte) bool {
	for range 3 { // a link ends only after a minute idle: one retry is plenty
		if ok, gone := r.link(channel).add(rec); !gone {
			return ok
		}
	}
	return false
}

// link returns the channel's link, starting it when there is none.
func (r *clusterRouter) link(channel string) *outlink {
	r.linksMu.Lock()
	defer r.linksMu.Unlock()
	l := r.links[channel]
	if l == nil {
		l = &outlink{r: r, channel: channel, kick: make(chan struct{}, 1)}
		r.links[channel] = l
		r.wg.Go(l.run)
	}
	return l
}

func (l *outlink) add(rec []byte) (ok, gone bool) {
	l.mu.Lock()
	if l.gone {
		l.mu.Unlock()
		return false, true
	}
	n := len(l.frames)
	if n == 0 || len(l.frames[n-1].b)+len(rec) > cluster.MaxPayload {
		if n >= maxOutFrames {
			l.mu.Unlock()
			return false, false
		}
		b := make([]byte, 1, min(cluster.MaxPayload, max(512, 1+len(rec))))
		b[0] = frameVersion
		l.frames = append(l.frames, frame{b: b})
		n++
	}
	f := &l.frames[n-1]
	f.b = append(f.b, rec...)
	if rec[0] == recEnvelope {
		f.envelops++
	}
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
	return true, false
}

// run publishes what is queued until the router closes or the link has
// been idle for linkIdle.
func (l *outlink) run() {
	r := l.r
	idle := time.NewTimer(linkIdle)
	defer idle.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-l.kick:
		case <-idle.C:
			if l.retire() {
				return
			}
			idle.Reset(linkIdle)
			continue
		}
		// Let the senders that are ready add to this payload first: under
		// load it fills; when idle this returns at once.
		runtime.Gosched()
		for {
			l.mu.Lock()
			if len(l.frames) == 0 {
				l.mu.Unlock()
				break
			}
			f := l.frames[0]
			l.frames[0] = frame{}
			l.frames = l.frames[1:]
			l.mu.Unlock()
			l.publish(f)
		}
		idle.Reset(linkIdle)
	}
}

// retire ends an idle link; false when something arrived meanwhile.
func (l *outlink) retire() bool {
	r := l.r
	r.linksMu.Lock()
	defer r.linksMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.frames) > 0 || l.channel == announceChannel {
		return false
	}
	l.gone = true
	if r.links[l.channel] == l {
		delete(r.links, l.channel)
	}
	return true
}

func (l *outlink) publish(f frame) {
	r := l.r
	ctx, cancel := context.WithTimeout(r.ctx, storeTimeout)
	err := r.c.Publish(ctx, l.channel, f.b)
	cancel()
	if err != nil && r.ctx.Err() == nil {
		r.stats.lost.Add(uint64(f.envelops))
		// Where keys are may have changed with whatever failed.
		r.forgetAll()
		r.warn("cannot publish to another signal instance; envelopes lost", fmt.Errorf("%s: %w", l.channel, err))
	}
}

// listen handles what arrives on channel, subscribing again when the
// subscription could not be made or ended before the router.
func (r *clusterRouter) listen(channel string, sub <-chan []byte) {
	for r.ctx.Err() == nil {
		if sub == nil {
			var err error
			if sub, err = r.c.Subscribe(r.ctx, channel); err != nil {
				r.warn("cannot subscribe to the cluster bus; retrying", err)
				select {
				case <-r.ctx.Done():
					return
				case <-time.After(retryEvery):
				}
				continue
			}
		}
		for p := range sub {
			if p == nil {
				// Messages were lost: announcements among them, maybe.
				r.forgetAll()
				continue
			}
			if err := r.receive(p); err != nil {
				r.warn("malformed payload on the cluster bus (are all instances the same version?)", err)
			}
		}
		sub = nil
	}
}

var errMalformed = errors.New("signal: cluster payload: malformed")

// receive handles one payload from the bus. Other instances are trusted
// (they checked the senders), but a payload is parsed with every bound
// checked all the same.
func (r *clusterRouter) receive(p []byte) error {
	if len(p) == 0 || p[0] != frameVersion {
		return fmt.Errorf("%w: version %v", errMalformed, p[:min(1, len(p))])
	}
	p = p[1:]
	for len(p) > 0 {
		var err error
		switch p[0] {
		case recEnvelope:
			p, err = r.receiveEnvelope(p[1:])
		case recAttached, recDetached:
			p, err = r.receiveAnnouncement(p[0], p[1:])
		default:
			err = fmt.Errorf("%w: record type %d", errMalformed, p[0])
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// take splits n bytes off p.
func take(p []byte, n int) (head, rest []byte, err error) {
	if n < 0 || n > len(p) {
		return nil, nil, fmt.Errorf("%w: %d bytes wanted, %d left", errMalformed, n, len(p))
	}
	return p[:n:n], p[n:], nil
}

// takeShort splits a string of at most 255 bytes, after its length byte.
func takeShort(p []byte) (string, []byte, error) {
	if len(p) == 0 {
		return "", nil, fmt.Errorf("%w: truncated", errMalformed)
	}
	s, rest, err := take(p[1:], int(p[0]))
	return string(s), rest, err
}

func (r *clusterRouter) receiveEnvelope(p []byte) ([]byte, error) {
	account, p, err := takeShort(p)
	if err != nil {
		return nil, err
	}
	fixed, p, err := take(p, 2*keys.Len+8+seal.NonceLen)
	if err != nil {
		return nil, err
	}
	n, k := binary.Uvarint(p)
	if k <= 0 || n > cluster.MaxPayload {
		return nil, fmt.Errorf("%w: payload length", errMalformed)
	}
	sealed, p, err := take(p[k:], int(n))
	if err != nil {
		return nil, err
	}
	env := &signalv1.Envelope{
		From:   fixed[:keys.Len:keys.Len],
		To:     fixed[keys.Len : 2*keys.Len : 2*keys.Len],
		Id:     binary.BigEndian.Uint64(fixed[2*keys.Len:]),
		Nonce:  fixed[2*keys.Len+8:],
		Sealed: sealed,
	}
	to, _ := keys.FromBytes(env.To)
	r.stats.received.Add(1)
	if st := r.local.Route(r.ctx, account, to, env); st != signalv1.DeliveryStatus_DELIVERY_STATUS_QUEUED {
		r.stats.dropped.Add(1)
		r.log.Debug("envelope from another instance not delivered", zap.Stringer("to", to), zap.Stringer("status", st))
	}
	return p, nil
}

func (r *clusterRouter) receiveAnnouncement(typ byte, p []byte) ([]byte, error) {
	origin, p, err := takeShort(p)
	if err != nil {
		return nil, err
	}
	kb, p, err := take(p, keys.Len)
	if err != nil {
		return nil, err
	}
	account, p, err := takeShort(p)
	if err != nil {
		return nil, err
	}
	if origin == r.self {
		return p, nil
	}
	key, _ := keys.FromBytes(kb)
	r.forget(PresenceKey(key, account))
	if typ == recAttached {
		// A newer stream for the key registered there: this one is stale
		// (a peer that moved) or the key is used twice, as on one instance.
		r.local.replace(key, account)
	}
	return p, nil
}
