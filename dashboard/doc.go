// Package dashboard serves baton's live dashboard: an HTTP handler with a
// page and a small JSON API that show conversations drawn as graphs, live
// tokens by destination and age, stuck and parked signals, and counters.
//
// The page is three hand-written files embedded in the binary (no build
// step, no CDN, no external URL; a Content-Security-Policy forbids loading
// anything from elsewhere), so it works on a machine without internet. It
// polls the API once a second and redraws without reloading.
//
// API (all GET, JSON, bounded in size):
//
//	/api/conversations?limit=N  recorded conversations, most recently updated first
//	                             (default 50, at most 500; 400 for a limit that is not a positive integer)
//	/api/conversations/{id}     one conversation's signals (at most MaxNodes);
//	                             400 for a malformed id, 404 for one not recorded
//	/api/tokens                 per destination: live tokens and their ages; the oldest
//	                             live tokens ("stuck" past Config.StuckAfter, or the destination's own
//	                             threshold in Config.StuckAfterByDestination); parked signals
//	/api/stats                  the caller's counters, totals of the recorded conversations,
//	                             and what the recorder's limits evicted and dropped
//	/api/report                 the verification report, if Config.Report is set (404 otherwise)
//	/api/parked?destination=&type=&reason=
//	                             the signals parked in the broker (Config.Parked), with
//	                             their reasons, attempts and payloads
//
// The one exception to "only GET": with Config.Parked, Config.Operate and
// Config.Tokens the page offers replay and discard of parked signals,
// POST /api/parked/replay {"id"} and POST /api/parked/discard {"id",
// "why"}. Each request is admitted by Operate from its own credentials
// (never the page's), only as JSON and only from the dashboard's own
// origin (cross-site requests are refused), and a discard is recorded in
// Config.Audit with the operator's name and reason (package parked).
//
// What it guarantees, and what not: apart from those actions the dashboard only observes. The
// conversations come from a conversation.Recorder fed by engine events,
// which are observations that may be lost, so a graph can lag or miss a
// signal; nothing in the protocol depends on it. Live tokens are read from
// the token store itself, paging through ListByDestination, and are exact
// up to Config.MaxTokensPerDestination per destination (beyond it the count
// is marked as capped). One reading of the store is shared by all viewers
// for Config.TokenRefresh; one request at a time takes a new one, and the
// others meanwhile get the last. A store error is shown next to its
// destination and logged; it never fails the whole response.
//
// The dashboard shows token ids, which are capabilities, and checks no
// credentials itself for what it shows: serve it on a loopback address, or
// behind tokenservice.RequireObserve, as `baton serve` does.
//
// Mount it at the root or under a prefix with a trailing slash:
//
//	h, err := dashboard.New(dashboard.Config{Recorder: rec, Tokens: tokens, Stats: dashboard.EngineStats(shop, billing)})
//	mux.Handle("/dashboard/", http.StripPrefix("/dashboard", h))
package dashboard
