package demo_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/batonhq/baton/internal/demo"
	"github.com/batonhq/baton/internal/testenv"
)

const chromiumPath = "/usr/bin/chromium"

// TestShopPagesInBrowser submits the shop's form in a real browser as a
// person would: a double click, then the same form again (Back and
// submit), then a reload.
// Each ends on the page of the one order the form placed, styled as the
// shop, with its progress and a way back, never on raw JSON or a bare
// "already submitted".
func TestShopPagesInBrowser(t *testing.T) {
	t.Parallel()
	requireChromium(t)
	shopURL := make(chan string, 1)
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := demo.Run(ctx, demo.Options{Orders: 1, Addr: "127.0.0.1:0", Command: systemCommand, Linger: true,
			Ready: func(_, shop string) { shopURL <- shop }})
		done <- err
	}()
	t.Cleanup(func() { stop(); <-done })
	var shop string
	select {
	case shop = <-shopURL:
	case err := <-done:
		done <- err // for the clean-up
		t.Fatalf("the demo ended before it was ready: %v", err)
	}

	page := startBrowser(t, 90*time.Second)
	// poll evaluates expr until it is true; a page that is navigating away
	// answers with an error, which only means "not yet".
	poll := func(what, expr string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			ok, err := chromedp.Run(page, chromedp.Evaluate[bool](expr))
			if err == nil && ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %s (%s): %v", what, expr, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	location := func() string {
		t.Helper()
		href, err := chromedp.Run(page, chromedp.Evaluate[string](`location.href`))
		if err != nil {
			t.Fatal(err)
		}
		return href
	}
	const onForm = `!!document.querySelector("button[type=submit]")`
	const onOrder = `location.pathname.startsWith("/orders/") && !!document.querySelector('a[href="/"]')`

	// open loads url, again while the shop does not answer: it restarts
	// once when the run is over and the demo goes on serving.
	open := func(url string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := chromedp.Do(page, chromedp.Navigate(url))
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("open %s: %v", url, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// A double click: two submits 50 ms apart. The form's hidden token
	// fields are kept, as a browser keeps them for Back.
	open(shop + "/")
	poll("the order form", onForm)
	tokenFields, err := chromedp.Run(page, chromedp.Evaluate[string](
		`JSON.stringify([...document.querySelectorAll("input[type=hidden]")].map(i => [i.name, i.value]))`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(page, chromedp.Evaluate[bool](
		`const f = document.querySelector("form"); f.requestSubmit(); setTimeout(() => f.requestSubmit(), 50); true`)); err != nil {
		t.Fatal(err)
	}
	poll("the order's page after a double click", onOrder)
	first := location()
	checkOrderPage(t, page, "a double click")

	// Back and submit again: the same form, with the same token, posted
	// once more. (Whether Back shows the page from the browser's cache or
	// loads a fresh form is the browser's choice; this is the case that
	// resubmits the spent token.)
	open(shop + "/")
	poll("the order form", onForm)
	if _, err := chromedp.Run(page, chromedp.Evaluate[bool](`for (const [name, value] of JSON.parse(`+strconv.Quote(tokenFields)+`)) {
			document.querySelector("input[name=" + name + "]").value = value;
		}
		document.querySelector("button[type=submit]").click(); true`)); err != nil {
		t.Fatal(err)
	}
	poll("the order's page after submitting the form again", onOrder)
	if again := location(); strings.Split(again, "?")[0] != strings.Split(first, "?")[0] {
		t.Errorf("submitting the form again led to %s, want the order of %s", again, first)
	}
	checkOrderPage(t, page, "submitting the form again")
	poll("the note that the form was submitted before", `document.body.innerText.includes("submitted before")`)

	// A reload, and the page follows the order until it shipped.
	if _, err := chromedp.Run(page, chromedp.Evaluate[bool](`location.reload(); true`)); err != nil {
		t.Fatal(err)
	}
	poll("the order shipped", `document.body.innerText.includes("✓ shipped")`)
}

// requireChromium skips t loudly without Debian's chromium, or fails it
// under CI=true.
func requireChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if testenv.CI() {
			t.Fatalf("%s is missing under CI=true: .ci/setup-chromium must install it (%v)", chromiumPath, err)
		}
		t.Skipf("SKIPPED: %s not found; run .ci/setup-chromium to install Debian's chromium and run the demo's browser tests", chromiumPath)
	}
}

// startBrowser starts headless chromium for t and returns a page context
// that ends after timeout, or with t.
func startBrowser(t *testing.T, timeout time.Duration) context.Context {
	t.Helper()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.Flag("disable-background-networking", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1440, 900))
	t.Cleanup(cancelAlloc)
	browser, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelBrowser)
	// The first run starts the browser; it must not carry a timeout.
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	page, cancelPage := context.WithTimeout(browser, timeout)
	t.Cleanup(cancelPage)
	return page
}

// checkOrderPage requires the shop's order page: its title, progress and a
// way back, and no JSON.
func checkOrderPage(t *testing.T, page context.Context, after string) {
	t.Helper()
	text, err := chromedp.Run(page, chromedp.Text(chromedp.CSS("body")))
	if err != nil {
		t.Fatal(err)
	}
	style, err := chromedp.Run(page, chromedp.Evaluate[string](`getComputedStyle(document.body).fontFamily`))
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case !strings.Contains(text, "Order ") || !strings.Contains(text, "placed") || !strings.Contains(text, "Back to the shop"):
		t.Errorf("after %s the page lacks the order, its progress or the way back:\n%s", after, text)
	case strings.Contains(text, "{"):
		t.Errorf("after %s the page shows raw JSON:\n%s", after, text)
	case !strings.Contains(style, "system-ui"):
		t.Errorf("after %s the page is not styled as the shop (font %q)", after, style)
	}
}
