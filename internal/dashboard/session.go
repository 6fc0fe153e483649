package dashboard

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Session limits.
const (
	DefaultIdleTimeout = 30 * time.Minute
	DefaultMaxAge      = 12 * time.Hour
	maxSessions        = 1000 // the oldest goes first
	maxLiveStreams     = 4    // server-sent event streams per session
)

// session is one signed-in browser.
type session struct {
	id      string
	token   string // the admin token (never leaves the server)
	csrf    string
	actor   string // the token's name, for the page header
	created time.Time
	last    time.Time
	live    int // open event streams
	// draft is a form typed while the previous session expired: the page
	// at draft.path shows it again, once.
	draftPath string
	draft     url.Values
}

// sessions is the in-memory session table. A restart signs everyone out,
// which is the safe side.
type sessions struct {
	mu   sync.Mutex
	byID map[string]*session
	now  func() time.Time
	idle time.Duration
	max  time.Duration
}

func randomID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (ss *sessions) create(token, actor string) *session {
	now := ss.now()
	s := &session{id: randomID(), token: token, csrf: randomID(), actor: actor, created: now, last: now}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.byID) >= maxSessions {
		var oldest *session
		for _, o := range ss.byID {
			if oldest == nil || o.last.Before(oldest.last) {
				oldest = o
			}
		}
		delete(ss.byID, oldest.id)
	}
	ss.byID[s.id] = s
	return s
}

// get returns the live session of id and marks it used; nil when there is
// none or it timed out (then it is removed).
func (ss *sessions) get(id string) *session {
	now := ss.now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.byID[id]
	if s == nil {
		return nil
	}
	if now.Sub(s.last) > ss.idle || now.Sub(s.created) > ss.max {
		delete(ss.byID, id)
		return nil
	}
	s.last = now
	return s
}

// alive says whether s is still signed in, without marking it used.
func (ss *sessions) alive(s *session) bool {
	now := ss.now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.byID[s.id] == s && now.Sub(s.last) <= ss.idle && now.Sub(s.created) <= ss.max
}

func (ss *sessions) remove(id string) {
	ss.mu.Lock()
	delete(ss.byID, id)
	ss.mu.Unlock()
}

// takeDraft returns and forgets the draft kept for path.
func (ss *sessions) takeDraft(s *session, path string) url.Values {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if s.draftPath != path {
		return nil
	}
	d := s.draft
	s.draftPath, s.draft = "", nil
	return d
}

func (ss *sessions) setDraft(s *session, path string, v url.Values) {
	ss.mu.Lock()
	s.draftPath, s.draft = path, v
	ss.mu.Unlock()
}

// addLive counts an event stream of s; false when s has too many.
func (ss *sessions) addLive(s *session, d int) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if d > 0 && s.live >= maxLiveStreams {
		return false
	}
	s.live += d
	return true
}

// cookieName: with TLS the __Host- prefix makes the browser refuse a
// cookie that is not Secure, has a Domain or another Path.
func (d *Dashboard) cookieName() string {
	if d.opts.PlainHTTP {
		return "meshd_session"
	}
	return "__Host-meshd_session"
}

func (d *Dashboard) setCookie(w http.ResponseWriter, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: d.cookieName(), Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: !d.opts.PlainHTTP, SameSite: http.SameSiteStrictMode})
}

// session returns the request's live session, or nil.
func (d *Dashboard) session(r *http.Request) *session {
	c, err := r.Cookie(d.cookieName())
	if err != nil || c.Value == "" {
		return nil
	}
	return d.sessions.get(c.Value)
}

// csrfOK checks the CSRF token of a state-changing request: the form field
// "csrf" or the header X-CSRF-Token must equal the session's.
func csrfOK(s *session, r *http.Request) bool {
	got := r.Header.Get("X-CSRF-Token")
	if got == "" {
		got = r.PostFormValue("csrf")
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) == 1
}

// sameOrigin refuses a request whose Origin header names another site
// (browsers send it on every POST); SameSite=Strict and the CSRF token
// already stop such requests, this is a third lock.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return o == ""
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}
