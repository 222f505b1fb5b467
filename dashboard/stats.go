package dashboard

import "github.com/batonhq/baton/engine"

// EngineStats returns a Config.Stats function that sums the counters of the
// given engines, named as the engine's OpenTelemetry counters are (without
// the "baton." prefix): "transitions", "duplicates.dropped", and so on.
func EngineStats(engines ...*engine.Engine) func() map[string]int64 {
	return func() map[string]int64 {
		var sum engine.Stats
		for _, e := range engines {
			sum = sum.Plus(e.Stats())
		}
		return sum.Counters()
	}
}
