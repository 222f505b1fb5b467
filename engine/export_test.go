package engine

// BrokenOrdering names a broken ordering for test output.
type BrokenOrdering struct {
	Name     string
	Ordering ordering
}

// BrokenOrderings lists the broken orderings that every proof must catch.
var BrokenOrderings = []BrokenOrdering{
	{"token-before-entity", orderingTokenBeforeEntity},
	{"split-transition", orderingSplitTransition},
	{"remove-before-consume", orderingRemoveBeforeConsume},
	{"expiry-without-claim", orderingNoClaim},
	{"ack-before-processing", orderingAckFirst},
	{"ack-on-retryable-error", orderingAckOnRetry},
	{"finish-others-first", orderingFinishOthersFirst},
	{"batch-token-before-entity", orderingBatchTokenBeforeEntity},
	{"batch-transition-before-commit", orderingBatchTransitionBeforeCommit},
}

// SetOrdering switches e to a (possibly broken) ordering of the steps.
func SetOrdering(e *Engine, o ordering) { e.ordering = o }

// ProbeToken is the token id that the engine reads to probe its token
// store.
var ProbeToken = probeToken
