package dashboard_test

import (
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// In a real browser, "Sign in with single sign-on" goes to the provider
// and back and lands on the peers page: the page's CSP lets the browser
// leave for the provider, and the session cookie (SameSite=Strict) is sent
// after a round trip through other sites.
func TestBrowserSSOSignIn(t *testing.T) {
	e := newSSOEnv(t)
	e.p.BrowserLogin("ann")
	ctx := browser(t, 45*time.Second)
	a0 := e.h.Agents[0].Name
	err := chromedp.Do(ctx,
		chromedp.Navigate(e.srv.URL+"/signin"),
		chromedp.Click(chromedp.CSS(`button[formaction="/sso/start"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-peer="`+a0+`"]`)))
	if err != nil {
		t.Fatalf("sign in with single sign-on: %v", err)
	}
	var who string
	if err := chromedp.Do(ctx, textOf(".who", &who)); err != nil || who != "ann@example.com" {
		t.Fatalf("signed in as %q (%v), want ann@example.com", who, err)
	}
}
