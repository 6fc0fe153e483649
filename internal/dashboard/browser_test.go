package dashboard_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	controlv1 "meshd/api/control/v1"

	"meshd/internal/control/controltest"
)

// browser starts headless Chromium for the test, or skips when there is
// none (MESHD_REQUIRE_BROWSER=1, as CI sets, makes that a failure). Every
// action runs under the returned context's deadline.
func browser(tb testing.TB, timeout time.Duration) context.Context {
	tb.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if path, err = exec.LookPath("chromium-browser"); err != nil {
			if os.Getenv("MESHD_REQUIRE_BROWSER") == "1" {
				tb.Fatal("no chromium on PATH and MESHD_REQUIRE_BROWSER=1: apt-get install chromium")
			}
			tb.Skip("no chromium on PATH (apt-get install chromium); skipping the browser test")
		}
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path),
		chromedp.Flag("ignore-certificate-errors", true), // the test server's certificate
		chromedp.WindowSize(1100, 760), chromedp.UserDataDir(tb.TempDir()))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	tb.Cleanup(cancel)
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	tb.Cleanup(acancel)
	bctx, bcancel := chromedp.NewContext(actx)
	tb.Cleanup(bcancel)
	if err := chromedp.Do(bctx); err != nil {
		tb.Fatalf("start chromium: %v", err)
	}
	return bctx
}

// selectOptions selects, in the multi-select sel, the options named.
func selectOptions(sel string, names ...string) chromedp.Action[chromedp.Void] {
	js := `(function(sel, names){ document.querySelectorAll(sel + " option").forEach(function(o){ o.selected = names.indexOf(o.text) >= 0; }); return true; })(` +
		quote(sel) + `, [` + quoteAll(names) + `])`
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Evaluate[bool](js)(ctx, t)
		return err
	})
}

// waitLocation waits until the page's URL contains part, so that what
// follows reads the page a click led to, not the one before it.
func waitLocation(part string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			loc, err := chromedp.Location()(ctx, t)
			if err != nil {
				return err
			}
			if strings.Contains(loc, part) {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("location %s never contained %q: %w", loc, part, ctx.Err())
			case <-tick.C:
			}
		}
	})
}

// evalInto evaluates js into dst.
func evalInto(js string, dst *string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		v, err := chromedp.Evaluate[string](js)(ctx, t)
		*dst = v
		return err
	})
}

// textOf reads the text of the element sel into dst.
func textOf(sel string, dst *string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		v, err := chromedp.Text(chromedp.CSS(sel))(ctx, t)
		*dst = v
		return err
	})
}

func quote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"` }
func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = quote(s)
	}
	return strings.Join(q, ",")
}

// shot saves a screenshot of the page for docs/dashboard.md when
// MESHD_UPDATE_SCREENSHOTS=1.
func shot(name string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		if os.Getenv("MESHD_UPDATE_SCREENSHOTS") != "1" {
			return nil
		}
		buf, err := chromedp.CaptureScreenshot()(ctx, t)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join("..", "..", "docs", "img", "dashboard-"+name+".png"), buf, 0o644)
	})
}

// An admin's round in a real browser: a wrong token shows an error; sign
// in; see the joined peers, and a new one appear without a reload; create
// a group and a policy (a bad port is shown next to its field first);
// create and revoke a setup key; find the revocation in the audit log;
// sign out.
func TestBrowserAdminRound(t *testing.T) {
	e := newEnv(t, 2)
	ctx := browser(t, 45*time.Second)
	u := e.srv.URL
	a0 := e.h.Agents[0].Name
	var text string
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	run("wrong token",
		chromedp.Navigate(u+"/signin"),
		chromedp.SendKeys(chromedp.CSS("#token"), "mt_not-a-token"),
		chromedp.Click(chromedp.CSS("#signin")),
		chromedp.WaitVisible(chromedp.CSS("#token-error")),
		textOf("#token-error", &text))
	if !strings.Contains(text, "not accepted") {
		t.Errorf("wrong token error: %q", text)
	}
	run("sign in",
		chromedp.SendKeys(chromedp.CSS("#token"), e.h.Boot.AdminToken),
		chromedp.Click(chromedp.CSS("#signin")),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-peer="`+a0+`"]`)))

	newcomer := e.h.AddAgent(controltest.AgentOptions{Hostname: "newcomer"})
	run("a joining peer appears live",
		chromedp.WaitVisible(chromedp.CSS(`tr[data-peer="newcomer"]`)))
	// The paths agent-0 reports show in its row, live too.
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	if err := e.h.Agents[0].Client.ReportPaths(rctx, []*controlv1.PathReport{
		{PublicKey: e.h.Agents[1].Key.Public().String(), State: "connected", Path: "direct", LocalKind: "host", RemoteKind: "srflx", LatencyMs: 0.8},
		{PublicKey: newcomer.Key.Public().String(), State: "connected", Path: "relayed", LocalKind: "relay", RemoteKind: "srflx",
			Relay: "198.51.100.1:49160", LatencyMs: 23.4, Reason: "symmetric NAT on both sides"},
	}); err != nil {
		t.Fatal(err)
	}
	run("reported paths appear live",
		chromedp.WaitVisible(chromedp.CSS(`tr[data-peer="`+a0+`"] .paths`)),
		textOf(`tr[data-peer="`+a0+`"] .paths`, &text),
		shot("peers"))
	if !strings.Contains(text, "direct (host → srflx), 0.8 ms") || !strings.Contains(text, "relayed via 198.51.100.1:49160, 23.4 ms") {
		t.Errorf("paths of %s: %q", a0, text)
	}

	// At phone width nothing but the tables' own boxes scrolls sideways,
	// and the keyboard reaches the skip link first.
	var overflow, focused string
	run("phone width and keyboard",
		chromedp.EmulateViewport(390, 844),
		evalInto(`document.documentElement.scrollWidth > window.innerWidth ? "overflows: " + document.documentElement.scrollWidth : ""`, &overflow),
		shot("peers-phone"),
		chromedp.EmulateViewport(1100, 760),
		chromedp.KeyEvent("\t"),
		evalInto(`document.activeElement.className + ":" + document.activeElement.textContent`, &focused))
	if overflow != "" {
		t.Errorf("the peers page at 390 px %s", overflow)
	}
	if focused != "skip:Skip to content" {
		t.Errorf("first Tab focuses %q, want the skip link", focused)
	}

	run("create a group",
		chromedp.Navigate(u+"/groups"),
		chromedp.SendKeys(chromedp.CSS("#group-name"), "web"),
		selectOptions("#group-peers", a0),
		chromedp.Submit(chromedp.CSS("#group-name")),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-group="web"]`)),
		textOf(`tr[data-group="web"]`, &text))
	if !strings.Contains(text, a0) {
		t.Errorf("group row %q lacks %s", text, a0)
	}

	run("a bad port is shown next to its field",
		chromedp.Navigate(u+"/policies"),
		chromedp.SendKeys(chromedp.CSS("#pol-name"), "ssh"),
		selectOptions("#pol-sources", "web"),
		selectOptions("#pol-destinations", "All"),
		chromedp.SetValue(chromedp.CSS("#pol-protocol"), "tcp"),
		chromedp.SendKeys(chromedp.CSS("#pol-ports"), "99999"),
		chromedp.Click(chromedp.CSS("#policy-submit")),
		chromedp.WaitVisible(chromedp.CSS("#ports-error")),
		textOf("#ports-error", &text))
	if !strings.Contains(text, "99999") {
		t.Errorf("port error: %q", text)
	}
	run("create a policy",
		chromedp.SetValue(chromedp.CSS("#pol-ports"), "22"),
		chromedp.Click(chromedp.CSS("#policy-submit")),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-policy="ssh"]`)),
		textOf(`tr[data-policy="ssh"]`, &text))
	if !strings.Contains(text, "web → All") || !strings.Contains(text, "tcp 22") {
		t.Errorf("policy row: %q", text)
	}
	run("can agent-1 reach agent-0 on tcp/22?",
		chromedp.SetValue(chromedp.CSS("#source"), e.h.Agents[1].Name),
		chromedp.SetValue(chromedp.CSS("#destination"), a0),
		chromedp.SetValue(chromedp.CSS("#check_protocol"), "tcp"),
		chromedp.SendKeys(chromedp.CSS("#port"), "22"),
		chromedp.Click(chromedp.CSS("#check-submit")),
		chromedp.WaitVisible(chromedp.CSS("#check-result")),
		textOf("#check-result", &text),
		shot("policies"))
	if !strings.HasPrefix(text, "Yes") || !strings.Contains(text, "Default") {
		t.Errorf("check result: %q", text)
	}

	run("create a setup key",
		chromedp.Navigate(u+"/setup-keys"),
		chromedp.SendKeys(chromedp.CSS("#key-name"), "laptop"),
		chromedp.Submit(chromedp.CSS("#key-name")),
		chromedp.WaitVisible(chromedp.CSS("#join-line")),
		textOf("#join-line", &text),
		shot("setup-keys"))
	if !strings.HasPrefix(text, "meshd agent --join ") {
		t.Errorf("join line %q", text)
	}
	run("revoke it",
		chromedp.Click(chromedp.CSS(`tr[data-key="laptop"] button[value="revoke"]`)),
		waitLocation("done="), // the page after the change, not the one clicked on
		chromedp.WaitVisible(chromedp.CSS(`tr[data-key="laptop"] .state`)),
		textOf(`tr[data-key="laptop"] .state`, &text))
	if text != "revoked" {
		t.Errorf("state after revoking: %q", text)
	}

	run("the audit log shows it",
		chromedp.Navigate(u+"/audit"),
		chromedp.SendKeys(chromedp.CSS("#action"), "revoked"),
		chromedp.Submit(chromedp.CSS("#action")),
		waitLocation("action=revoked"),
		chromedp.WaitVisible(chromedp.CSS("#audit")),
		textOf("#audit tbody", &text),
		shot("audit"))
	if !strings.Contains(text, "setup_key.revoked") || !strings.Contains(text, "laptop") || strings.Contains(text, "policy.created") {
		t.Errorf("filtered audit log: %q", text)
	}

	run("sign out",
		chromedp.Click(chromedp.CSS("#signout")),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.Navigate(u+"/peers"),
		chromedp.WaitVisible(chromedp.CSS("#token")))
}
