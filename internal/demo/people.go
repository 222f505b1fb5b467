package demo

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/batonhq/baton/httpsignal"
)

var (
	personClient = &http.Client{Timeout: 15 * time.Second}
	hiddenInput  = regexp.MustCompile(`<input type="hidden" name="([a-z-]+)" value="([^"]*)">`)
)

// placeOrders has Concurrency people place Orders orders through the
// shop's web page, as a browser would: load the form, fill it in, submit,
// and submit again when the page does not answer.
func (d *demo) placeOrders(ctx context.Context) error {
	orders := make(chan int)
	errs := make(chan error, d.opts.Orders)
	var wg sync.WaitGroup
	for range d.opts.Concurrency {
		wg.Go(func() {
			for i := range orders {
				if err := d.placeOrder(ctx, i); err != nil {
					errs <- err
				}
			}
		})
	}
	step := max(d.opts.Orders/10, 1)
	var pace <-chan time.Time
	if d.opts.Rate > 0 {
		tick := time.NewTicker(time.Duration(float64(time.Second) / d.opts.Rate))
		defer tick.Stop()
		pace = tick.C
	}
place:
	for i := range d.opts.Orders {
		if pace != nil {
			select {
			case <-pace:
			case <-ctx.Done():
				break place
			}
		}
		select {
		case orders <- i:
		case <-ctx.Done():
			break place
		}
		if (i+1)%step == 0 {
			fmt.Fprintf(d.opts.Progress, "placing orders: %d/%d\n", i+1, d.opts.Orders)
		}
	}
	close(orders)
	wg.Wait()
	close(errs)
	for err := range errs {
		return err // the first is enough to explain
	}
	return ctx.Err()
}

func (d *demo) placeOrder(ctx context.Context, i int) error {
	rng := rand.New(rand.NewPCG(d.opts.Seed, uint64(i)))
	shop := d.systems[Shop].url
	form, err := d.loadForm(ctx, shop)
	if err != nil {
		return err
	}
	d.roots.Store(form.Get(httpsignal.FieldConversation), struct{}{})
	form.Set("customer", customers[rng.IntN(len(customers))])
	form.Set("product", products[rng.IntN(len(products))])
	form.Set("quantity", strconv.Itoa(1+rng.IntN(3)))

	clicks := 1
	if rng.Float64() < d.opts.DoubleClickRate {
		clicks = 2
		d.doubleClicks.Add(1)
	}
	errs := make(chan error, clicks)
	for range clicks {
		go func() { errs <- submit(ctx, shop+"/orders", form) }()
	}
	for range clicks {
		if err := <-errs; err != nil {
			return err
		}
	}
	d.placed.Add(1)
	return nil
}

// loadForm gets a fresh order form, waiting for the shop if it is down.
func (d *demo) loadForm(ctx context.Context, shop string) (url.Values, error) {
	for attempt := 0; ; attempt++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, shop+"/", nil)
		resp, err := personClient.Do(req)
		if err == nil {
			body, readErr := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && readErr == nil {
				form := url.Values{}
				for _, m := range hiddenInput.FindAllStringSubmatch(string(body), -1) {
					form.Set(m[1], m[2])
				}
				if form.Get(httpsignal.FieldToken) == "" {
					return nil, fmt.Errorf("the order form carries no root token")
				}
				return form, nil
			}
		}
		if err := pause(ctx, attempt); err != nil {
			return nil, fmt.Errorf("loading the order form: %w", err)
		}
	}
}

// submit posts the form until the shop gives a definite answer: the order
// page, or "already submitted" for a copy.
func submit(ctx context.Context, target string, form url.Values) error {
	for attempt := 0; ; attempt++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := personClient.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			switch {
			case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusConflict:
				return nil
			case resp.StatusCode < 500:
				return fmt.Errorf("the shop refused an order: %s: %s", resp.Status, body)
			}
		}
		if err := pause(ctx, attempt); err != nil {
			return fmt.Errorf("submitting an order: %w", err)
		}
	}
}

func pause(ctx context.Context, attempt int) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(min(50*time.Millisecond<<min(attempt, 5), time.Second)):
		return nil
	}
}
